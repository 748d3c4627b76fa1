"""The seccomp filter every run is given, as a classic-BPF program.

Built once (pure bytes) in the spawner; the child installs it with one
prctl just before exec. Denied calls return an errno so that the program
sees an error, not a crash. x86_64 only for now; other architectures
report the layer unavailable.
"""

from __future__ import annotations

import errno
import platform
import struct

# BPF opcodes (linux/filter.h).
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_RET_K = 0x06

SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000

# struct seccomp_data: int nr; __u32 arch; __u64 ip; __u64 args[6];
_OFF_NR = 0
_OFF_ARCH = 4


def _arg_lo(i: int) -> int:
    return 16 + 8 * i  # low 32 bits of args[i] on little-endian


# x86_64 syscall numbers, each with the reason it is denied.
DENY_X86_64: dict[int, str] = {
    101: "ptrace: reading or steering other processes",
    310: "process_vm_readv: reading other processes' memory",
    311: "process_vm_writev: writing other processes' memory",
    165: "mount", 166: "umount2", 155: "pivot_root", 161: "chroot",
    428: "open_tree", 429: "move_mount", 430: "fsopen", 431: "fsconfig",
    432: "fsmount", 433: "fspick", 442: "mount_setattr",
    321: "bpf: kernel attack surface",
    298: "perf_event_open: kernel attack surface and side channels",
    250: "keyctl: kernel keyrings are not namespaced",
    248: "add_key", 249: "request_key",
    323: "userfaultfd: a classic exploitation primitive",
    425: "io_uring_setup: IORING_OP_SOCKET creates sockets without socket()",
    426: "io_uring_enter", 427: "io_uring_register",
    246: "kexec_load", 320: "kexec_file_load",
    175: "init_module", 313: "finit_module", 176: "delete_module",
    272: "unshare: no new namespaces from inside a run",
    308: "setns: no joining other namespaces",
    304: "open_by_handle_at: the 'shocker' container escape",
    303: "name_to_handle_at",
    167: "swapon", 168: "swapoff", 169: "reboot", 163: "acct",
    164: "settimeofday", 227: "clock_settime", 159: "adjtimex", 305: "clock_adjtime",
    170: "sethostname", 171: "setdomainname",
    172: "iopl", 173: "ioperm", 179: "quotactl", 103: "syslog",
    300: "fanotify_init", 134: "uselib", 153: "vhangup",
    438: "pidfd_getfd: stealing another process's descriptors",
    440: "process_madvise",
    212: "lookup_dcookie",
}
SYS_SOCKET = 41
SYS_SOCKETPAIR = 53
SYS_CLONE = 56
SYS_CLONE3 = 435
SYS_PERSONALITY = 135
SYS_IOCTL = 16
AF_UNIX = 1
TIOCSTI = 0x5412
TIOCLINUX = 0x541C
# CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET. (CLONE_NEWTIME
# shares its bit with clone()'s exit-signal byte and is valid only for
# unshare/clone3, both denied outright.)
CLONE_NS_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 \
    | 0x10000000 | 0x20000000 | 0x40000000


_JA = 0x05              # BPF_JMP | BPF_JA: jump k forward, always


def supported() -> bool:
    return platform.machine() == "x86_64"


class _Asm:
    """Classic BPF with named forward jumps, resolved to offsets at the end."""

    def __init__(self) -> None:
        self.code: list[tuple[int, int, str | None, str | None]] = []
        self.labels: dict[str, int] = {}

    def op(self, code: int, k: int = 0, jt: str | None = None, jf: str | None = None) -> None:
        self.code.append((code, k, jt, jf))   # a jump label of None: the next instruction

    def label(self, name: str) -> None:
        self.labels[name] = len(self.code)

    def assemble(self) -> bytes:
        out = []
        for i, (code, k, jt, jf) in enumerate(self.code):
            def rel(name: str | None) -> int:
                if name is None:
                    return 0
                off = self.labels[name] - (i + 1)
                if not 0 <= off <= (0xFFFF if code == _JA else 255):
                    raise AssertionError(f"seccomp jump to {name} out of range")
                return off
            if code == _JA:
                out.append(struct.pack("HBBI", code, 0, 0, rel(jt)))
            else:
                out.append(struct.pack("HBBI", code, rel(jt), rel(jf), k))
        return b"".join(out)


def _search(asm: _Asm, cases: list[tuple[int, str]]) -> None:
    """Jump to the label of the syscall number in the accumulator (cases
    sorted by number), or to "allow" for any other: a binary search, so a
    lookup is ~7 comparisons, not one per denied call. The kernel runs the
    filter once per syscall number when it is installed, to cache the ones
    it always allows, so a linear list made every stage's install dearer
    (docs/benchmarks.md, "Costs behind design choices")."""
    if len(cases) <= 3:
        for nr, target in cases:
            asm.op(_JEQ_K, nr, jt=target)
        asm.op(_JA, jt="allow")
        return
    mid = len(cases) // 2
    upper = f"ge_{cases[mid][0]}"
    asm.op(_JGE_K, cases[mid][0], jt=upper)
    _search(asm, cases[:mid])
    asm.label(upper)
    _search(asm, cases[mid:])


def build_filter() -> bytes:
    """The whole BPF program, as bytes of struct sock_filter."""
    asm = _Asm()
    # Wrong architecture (i386 via int 0x80 has other numbers): deny everything.
    asm.op(_LD_W_ABS, _OFF_ARCH)
    asm.op(_JEQ_K, AUDIT_ARCH_X86_64, jf="eperm")
    asm.op(_LD_W_ABS, _OFF_NR)
    # x32 ABI syscalls (nr | 0x40000000) alias the native ones: deny them all.
    asm.op(_JGE_K, X32_SYSCALL_BIT, jt="eperm")
    cases = {nr: "eperm" for nr in DENY_X86_64}
    # clone3 passes its flags in memory BPF cannot read: ENOSYS, so that libc
    # falls back to clone(), whose flags are checked below.
    cases[SYS_CLONE3] = "enosys"
    cases.update({SYS_SOCKET: "unix_only", SYS_SOCKETPAIR: "unix_only", SYS_CLONE: "clone",
                  SYS_PERSONALITY: "personality", SYS_IOCTL: "ioctl"})
    _search(asm, sorted(cases.items()))

    # socket()/socketpair(): only AF_UNIX. Network isolation does not rest on
    # this alone (io_uring is denied above; Landlock and netns add more).
    asm.label("unix_only")
    asm.op(_LD_W_ABS, _arg_lo(0))
    asm.op(_JEQ_K, AF_UNIX, jt="allow", jf="eacces")
    # clone(): no namespace-creating flags.
    asm.label("clone")
    asm.op(_LD_W_ABS, _arg_lo(0))
    asm.op(_JSET_K, CLONE_NS_FLAGS, jt="eperm", jf="allow")
    # personality(): only the query (0xffffffff) and PER_LINUX (0); other
    # personas turn off ASLR or change the syscall ABI.
    asm.label("personality")
    asm.op(_LD_W_ABS, _arg_lo(0))
    asm.op(_JEQ_K, 0xFFFFFFFF, jt="allow")
    asm.op(_JEQ_K, 0, jt="allow", jf="eperm")
    # ioctl(TIOCSTI/TIOCLINUX): pushing keystrokes into a terminal.
    asm.label("ioctl")
    asm.op(_LD_W_ABS, _arg_lo(1))
    asm.op(_JEQ_K, TIOCSTI, jt="eperm")
    asm.op(_JEQ_K, TIOCLINUX, jt="eperm", jf="allow")

    for name, action in (("allow", SECCOMP_RET_ALLOW),
                         ("eperm", SECCOMP_RET_ERRNO | errno.EPERM),
                         ("eacces", SECCOMP_RET_ERRNO | errno.EACCES),
                         ("enosys", SECCOMP_RET_ERRNO | errno.ENOSYS)):
        asm.label(name)
        asm.op(_RET_K, action)
    prog = asm.assemble()
    if len(prog) // 8 > 4096:
        raise AssertionError("seccomp program too long")
    return prog
