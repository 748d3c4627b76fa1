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
    # clone3 passes its flags in memory BPF cannot read: answer ENOSYS so that
    # libc falls back to clone(), whose flags we can check.
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


def _ins(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


def _ret_errno(e: int) -> bytes:
    return _ins(_RET_K, SECCOMP_RET_ERRNO | e)


def supported() -> bool:
    return platform.machine() == "x86_64"


def build_filter() -> bytes:
    """The whole BPF program, as bytes of struct sock_filter."""
    prog: list[bytes] = []
    # Wrong architecture (i386 via int 0x80 has other numbers): deny everything.
    prog.append(_ins(_LD_W_ABS, _OFF_ARCH))
    prog.append(_ins(_JEQ_K, AUDIT_ARCH_X86_64, jt=1, jf=0))
    prog.append(_ret_errno(errno.EPERM))
    prog.append(_ins(_LD_W_ABS, _OFF_NR))
    # x32 ABI syscalls (nr | 0x40000000) alias the native ones: deny them all.
    prog.append(_ins(_JGE_K, X32_SYSCALL_BIT, jt=0, jf=1))
    prog.append(_ret_errno(errno.EPERM))
    for nr in DENY_X86_64:
        prog.append(_ins(_JEQ_K, nr, jt=0, jf=1))
        prog.append(_ret_errno(errno.EPERM))
    prog.append(_ins(_JEQ_K, SYS_CLONE3, jt=0, jf=1))
    prog.append(_ret_errno(errno.ENOSYS))

    # Argument checks: each block loads an argument, so reload nr after it.
    def arg_block(nr: int, arg: int, body: list[bytes]) -> None:
        # if nr != NR: skip the block
        prog.append(_ins(_JEQ_K, nr, jt=0, jf=len(body) + 1))
        prog.append(_ins(_LD_W_ABS, _arg_lo(arg)))
        prog.extend(body)

    # socket()/socketpair(): only AF_UNIX. Network isolation does not rest on
    # this alone (io_uring is denied above; Landlock and netns add more).
    for nr in (SYS_SOCKET, SYS_SOCKETPAIR):
        arg_block(nr, 0, [
            _ins(_JEQ_K, AF_UNIX, jt=0, jf=1),
            _ins(_RET_K, SECCOMP_RET_ALLOW),
            _ret_errno(errno.EACCES),
        ])
        prog.append(_ins(_LD_W_ABS, _OFF_NR))
    # clone(): no namespace-creating flags.
    arg_block(SYS_CLONE, 0, [
        _ins(_JSET_K, CLONE_NS_FLAGS, jt=0, jf=1),
        _ret_errno(errno.EPERM),
        _ins(_RET_K, SECCOMP_RET_ALLOW),
    ])
    prog.append(_ins(_LD_W_ABS, _OFF_NR))
    # personality(): only the query (0xffffffff) and PER_LINUX (0); other
    # personas turn off ASLR or change the syscall ABI.
    arg_block(SYS_PERSONALITY, 0, [
        _ins(_JEQ_K, 0xFFFFFFFF, jt=2, jf=0),
        _ins(_JEQ_K, 0, jt=1, jf=0),
        _ret_errno(errno.EPERM),
        _ins(_RET_K, SECCOMP_RET_ALLOW),
    ])
    prog.append(_ins(_LD_W_ABS, _OFF_NR))
    # ioctl(TIOCSTI/TIOCLINUX): pushing keystrokes into a terminal.
    arg_block(SYS_IOCTL, 1, [
        _ins(_JEQ_K, TIOCSTI, jt=1, jf=0),
        _ins(_JEQ_K, TIOCLINUX, jt=0, jf=1),
        _ret_errno(errno.EPERM),
        _ins(_RET_K, SECCOMP_RET_ALLOW),
    ])
    prog.append(_ins(_RET_K, SECCOMP_RET_ALLOW))
    if len(prog) > 4096:
        raise AssertionError("seccomp program too long")
    return b"".join(prog)
