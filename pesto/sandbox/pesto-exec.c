/*
 * pesto-exec: one stage's process chain, from spawn to the program's exec.
 *
 * The slot supervisor (root, Python) starts this with posix_spawn while the
 * slot is idle. It does, in this order, everything that does not depend on
 * the program (phase 1), then blocks on its control pipe until the stage's
 * spec arrives (phase 2: chdir, rlimits, the language's Landlock read rules,
 * execve). It is C so that a run costs one vfork+exec and two clones that
 * copy no memory, instead of three forks of a Python process (copy-on-write
 * faults of a 20 MiB heap, twice per run, were most of the sandbox's CPU).
 * It is built static, against musl where installed (see helper.py).
 *
 * The policy (which paths, which syscalls) stays in Python: the Landlock
 * rules come on the command line and the seccomp program as a file. This
 * file is the mechanism only, in syscall order (main, then init and
 * program where there is a PID namespace), each step commented with why it
 * is where it is.
 *
 * Any failure writes "step:errno:message" to the report pipe and exits 127;
 * the report pipe is close-on-exec, so EOF without a report means the exec
 * succeeded. The supervisor never mistakes a half-built sandbox for a run.
 *
 * Usage (all numbers decimal; named options, in any order, each at most once
 * but --rule; an absent descriptor is left out):
 *   pesto-exec --uid=N --gid=N --workdir=PATH [--tmp-size=BYTES] [--namespaces=0|1]
 *              --stdin=FD --stdout=FD --stderr=FD --ctl=FD --report=FD [--status=FD]
 *              [--seccomp=FD] [--userns=FD] [--netns=FD] [--mntns=FD]
 *              [--landlock-abi=N --handled-fs=N --handled-net=N --scoped=N]
 *              [--rule=RIGHTS:PATH]...
 * Spec on CTL, read to EOF (EOF at once: the standby is discarded, exit 0),
 * NUL-terminated fields:
 *   argc argv... envc env... nrlimits (resource value)... npaths path...
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* Where the descriptors end up (the supervisor passes its own numbers). */
enum { FD_CTL = 3, FD_REPORT, FD_STATUS, FD_SECCOMP, FD_USERNS, FD_NETNS, FD_MNTNS, NFDS };

/*
 * The command line's options. A descriptor's option index is the number it
 * is moved to (0..NFDS-1), so the table below is the one place that ties a
 * name to a number; the supervisor names every value it passes.
 */
enum { OPT_UID = NFDS, OPT_GID, OPT_WORKDIR, OPT_TMP_SIZE, OPT_NAMESPACES, OPT_LANDLOCK_ABI,
       OPT_HANDLED_FS, OPT_HANDLED_NET, OPT_SCOPED, OPT_RULE, NOPTS };
static const struct option options[] = {
    [0] = { "stdin", required_argument, NULL, 0 },
    [1] = { "stdout", required_argument, NULL, 1 },
    [2] = { "stderr", required_argument, NULL, 2 },
    [FD_CTL] = { "ctl", required_argument, NULL, FD_CTL },
    [FD_REPORT] = { "report", required_argument, NULL, FD_REPORT },
    [FD_STATUS] = { "status", required_argument, NULL, FD_STATUS },
    [FD_SECCOMP] = { "seccomp", required_argument, NULL, FD_SECCOMP },
    [FD_USERNS] = { "userns", required_argument, NULL, FD_USERNS },
    [FD_NETNS] = { "netns", required_argument, NULL, FD_NETNS },
    [FD_MNTNS] = { "mntns", required_argument, NULL, FD_MNTNS },
    [OPT_UID] = { "uid", required_argument, NULL, OPT_UID },
    [OPT_GID] = { "gid", required_argument, NULL, OPT_GID },
    [OPT_WORKDIR] = { "workdir", required_argument, NULL, OPT_WORKDIR },
    [OPT_TMP_SIZE] = { "tmp-size", required_argument, NULL, OPT_TMP_SIZE },
    [OPT_NAMESPACES] = { "namespaces", required_argument, NULL, OPT_NAMESPACES },
    [OPT_LANDLOCK_ABI] = { "landlock-abi", required_argument, NULL, OPT_LANDLOCK_ABI },
    [OPT_HANDLED_FS] = { "handled-fs", required_argument, NULL, OPT_HANDLED_FS },
    [OPT_HANDLED_NET] = { "handled-net", required_argument, NULL, OPT_HANDLED_NET },
    [OPT_SCOPED] = { "scoped", required_argument, NULL, OPT_SCOPED },
    [OPT_RULE] = { "rule", required_argument, NULL, OPT_RULE },
    [NOPTS] = { NULL, 0, NULL, 0 },
};

#define SPEC_MAX (16 << 20)
#define RUN_NICE 10
#define MAX_ITEMS 65536

/*
 * The few kernel interfaces used here that a libc may not declare, spelled
 * out from the uapi headers so that the file builds against glibc or musl
 * without kernel headers (musl makes a smaller binary that starts without
 * glibc's CPUID probing, which is slow under a hypervisor).
 */
#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif
#ifndef SYS_landlock_create_ruleset
#define SYS_landlock_create_ruleset 444
#define SYS_landlock_add_rule 445
#define SYS_landlock_restrict_self 446
#endif
#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif
#define SECCOMP_MODE_FILTER_ 2
struct sock_filter_ { uint16_t code; uint8_t jt, jf; uint32_t k; };
struct sock_fprog_ { unsigned short len; struct sock_filter_ *filter; };
struct mount_attr_ { uint64_t attr_set, attr_clr, propagation, userns_fd; };
#define MOUNT_ATTR_RDONLY_ 0x1

/* Landlock's uapi structs, as of ABI 6 (Debian 12's headers stop at ABI 3). */
struct ll_ruleset_attr { uint64_t handled_fs, handled_net, scoped; };
struct ll_path_beneath { uint64_t allowed; int32_t parent_fd; } __attribute__((packed));
#define LL_RULE_PATH_BENEATH 1
#define LL_EXECUTE (1ULL << 0)
#define LL_WRITE_FILE (1ULL << 1)
#define LL_READ_FILE (1ULL << 2)
#define LL_READ_DIR (1ULL << 3)
#define LL_TRUNCATE (1ULL << 14)
#define LL_IOCTL_DEV (1ULL << 15)
/* The rights Landlock accepts on a rule for a file (not a directory). */
#define LL_FILE_RIGHTS (LL_EXECUTE | LL_WRITE_FILE | LL_READ_FILE | LL_TRUNCATE | LL_IOCTL_DEV)

static const char *step = "start";
static int report_fd = -1;

/* Report the failed step and end: nothing half-built ever runs a program. */
static void __attribute__((noreturn)) fail(int err, const char *fmt, ...)
{
    char msg[1024];
    int n = snprintf(msg, sizeof msg, "%s:%d:", step, err);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg + n, sizeof msg - n, fmt, ap);
    va_end(ap);
    if (report_fd >= 0 && write(report_fd, msg, strlen(msg)) < 0) { /* nobody to tell */ }
    _exit(127);
}

#define CHECK(expr, what) do { if ((expr) < 0) fail(errno, "%s: %s", what, strerror(errno)); } while (0)

static long num(const char *s)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *s == '\0' || *end != '\0')
        fail(EINVAL, "bad number %.40s", s);
    return (long)v;
}

static void write_file(const char *path, const char *data)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    CHECK(fd, path);
    CHECK(write(fd, data, strlen(data)), path);
    close(fd);
}

static void set_mount_attr(const char *path, unsigned flags, uint64_t set, uint64_t clr)
{
    struct mount_attr_ attr = { .attr_set = set, .attr_clr = clr };
    CHECK(syscall(SYS_mount_setattr, AT_FDCWD, path, flags, &attr, sizeof attr), path);
}

/* Close every descriptor from `low` up except those in keep[] (sorted, >= low). */
static void close_from_except(int low, const int *keep, int nkeep)
{
    for (int i = 0; i < nkeep; i++) {
        if (keep[i] < low)
            continue;
        if (keep[i] > low)
            syscall(SYS_close_range, low, keep[i] - 1, 0);
        low = keep[i] + 1;
    }
    syscall(SYS_close_range, low, ~0U, 0);
}

/* Read the whole spec (until the supervisor closes its end). */
static char *read_all(int fd, size_t *len)
{
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap);
    if (!buf)
        fail(ENOMEM, "spec buffer");
    for (;;) {
        if (n == cap) {
            if (cap >= SPEC_MAX)
                fail(E2BIG, "spec too large");
            cap *= 2;
            if (!(buf = realloc(buf, cap)))
                fail(ENOMEM, "spec buffer");
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        CHECK(r, "read spec");
        if (r == 0)
            break;
        n += r;
    }
    *len = n;
    return buf;
}

/* The spec's fields, one NUL-terminated string after another. */
struct cursor { char *p, *end; };

static char *field(struct cursor *c)
{
    char *s = c->p;
    char *nul = memchr(s, '\0', c->end - s);
    if (!nul)
        fail(EINVAL, "truncated spec");
    c->p = nul + 1;
    return s;
}

static char **fields(struct cursor *c)
{
    long n = num(field(c));
    if (n < 0 || n > MAX_ITEMS)
        fail(EINVAL, "bad count in spec");
    char **v = calloc(n + 1, sizeof *v);
    if (!v)
        fail(ENOMEM, "spec");
    for (long i = 0; i < n; i++)
        v[i] = field(c);
    return v;
}

static void landlock_add(int ruleset, const char *path, uint64_t rights, uint64_t handled)
{
    int fd = open(path, O_PATH | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            return;   /* a path this host lacks: nothing to allow */
        fail(errno, "open %s: %s", path, strerror(errno));
    }
    struct stat st;
    CHECK(fstat(fd, &st), path);
    if (!S_ISDIR(st.st_mode))
        rights &= LL_FILE_RIGHTS & handled;
    struct ll_path_beneath rule = { .allowed = rights, .parent_fd = fd };
    CHECK(syscall(SYS_landlock_add_rule, ruleset, LL_RULE_PATH_BENEATH, &rule, 0), path);
    close(fd);
}

/* What the program's part needs from main (see program()). */
struct stage {
    const char *workdir;
    int ll_abi;
    struct ll_ruleset_attr ll_attr;
    int nrules;
    char **rules;          /* "RIGHTS:PATH" each */
    int have_seccomp;
};

static int program(void *arg);

/*
 * Stacks for init and the program while they share this process's memory
 * (clone with CLONE_VM | CLONE_VFORK, below). Untouched pages cost nothing.
 */
static char init_stack[64 << 10] __attribute__((aligned(16)));
static char program_stack[256 << 10] __attribute__((aligned(16)));

/*
 * init, PID 1 of the stage's PID namespace: reaps everything in it, and
 * when the program ends writes "status utime stime maxrss" to the status
 * pipe and exits, which makes the kernel kill whatever is left in the
 * namespace.
 */
static int init(void *arg)
{
    /* Dies with the outer process, and the namespace with it. */
    prctl(PR_SET_DUMPABLE, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    /* A /proc of this namespace where the kernel allows it (podman masks
     * parts of its /proc, and then the kernel refuses: keep the old one). */
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    /* The program shares this memory until its exec (CLONE_VFORK: init
     * waits for that, and has nothing to do before it): no copy of the
     * address space, which forking paid (docs/benchmarks.md). */
    pid_t prog = clone(program, program_stack + sizeof program_stack,
                       CLONE_VM | CLONE_VFORK | SIGCHLD, arg);
    CHECK(prog, "start program");
    int keep[] = { FD_STATUS };
    close_from_except(0, keep, 1);
    double utime = 0, stime = 0;
    long maxrss = 0;
    int st = 0;
    for (;;) {
        struct rusage ru;
        pid_t p = wait4(-1, &st, 0, &ru);
        if (p < 0) {
            if (errno == EINTR)
                continue;
            _exit(1);   /* cannot happen while the program is our child */
        }
        utime += ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6;
        stime += ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
        if (ru.ru_maxrss > maxrss)
            maxrss = ru.ru_maxrss;
        if (p == prog)
            break;
    }
    char msg[128];
    int n = snprintf(msg, sizeof msg, "%d %.6f %.6f %ld", st, utime, stime, maxrss);
    if (write(FD_STATUS, msg, n) < 0) { /* the supervisor is gone */ }
    _exit(0);   /* the kernel kills whatever is left in the namespace */
}

/*
 * PID namespace: this process (outside it) starts init (PID 1), which
 * starts the program (PID 2); never returns. Both share this process's
 * memory (CLONE_VM) with their own stacks, and CLONE_VFORK suspends each
 * parent until its child has exec'd or exited: the program has the memory
 * to itself while it runs this file's code, and init has it after the
 * program's exec; this process only resumes once init has exited, then
 * mirrors init's end. Neither init nor this process runs user code or is
 * dumpable: the program (same uid, no capability) cannot ptrace them.
 */
static void __attribute__((noreturn)) start_init(struct stage *stage)
{
    step = "start_init";
    pid_t pid = clone(init, init_stack + sizeof init_stack, CLONE_VM | CLONE_VFORK | SIGCHLD,
                      stage);
    CHECK(pid, "start init");
    prctl(PR_SET_DUMPABLE, 0);
    syscall(SYS_close_range, 0, ~0U, 0);
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    _exit(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + SIGKILL);
}

/*
 * Namespaces, entered as the run's uid (so the user namespace is the run's
 * own, which needs no CAP_SYS_ADMIN and works in a default podman
 * container) and before Landlock and seccomp, which forbid unshare:
 * user, IPC, UTS, mount, PID, and network unless the slot's was joined.
 * Inside, the program keeps its uid (identity maps). The mount namespace is
 * private (nothing propagates out), read-only everywhere except the work dir
 * and fresh size-capped tmpfs on /tmp, /var/tmp and /dev/shm.
 */
static void enter_namespaces(uid_t uid, gid_t gid, const char *workdir, long tmp_size, int own_net)
{
    step = "namespaces";
    /* setresuid made us non-dumpable, which makes our /proc files root's: we
     * could not write our own maps. */
    CHECK(prctl(PR_SET_DUMPABLE, 1), "dumpable");
    int flags = CLONE_NEWUSER | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNS | CLONE_NEWPID;
    if (own_net)
        flags |= CLONE_NEWNET;
    CHECK(unshare(flags), "unshare");
    char map[64];
    snprintf(map, sizeof map, "%u %u 1\n", uid, uid);
    write_file("/proc/self/uid_map", map);
    /* An unprivileged process may write its gid map only after this. */
    write_file("/proc/self/setgroups", "deny");
    snprintf(map, sizeof map, "%u %u 1\n", gid, gid);
    write_file("/proc/self/gid_map", map);

    CHECK(mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL), "make / private");
    /* A mount of its own, so that it can stay writable under the read-only tree. */
    CHECK(mount(workdir, workdir, NULL, MS_BIND | MS_REC, NULL), "bind work dir");
    static const char *tmps[] = { "/tmp", "/var/tmp", "/dev/shm" };
    int have_tmp[3] = { 0 };
    char opts[96];
    snprintf(opts, sizeof opts, "size=%ld,nr_inodes=4096,mode=1777", tmp_size);
    for (int i = 0; i < 3; i++) {
        struct stat st;
        if (stat(tmps[i], &st) == 0 && S_ISDIR(st.st_mode)) {
            CHECK(mount("pesto-tmp", tmps[i], "tmpfs", MS_NOSUID | MS_NODEV, opts), tmps[i]);
            have_tmp[i] = 1;
        }
    }
    set_mount_attr("/", AT_RECURSIVE, MOUNT_ATTR_RDONLY_, 0);
    /* The read-only pass covered the new mounts too: open those again. */
    set_mount_attr(workdir, 0, 0, MOUNT_ATTR_RDONLY_);
    for (int i = 0; i < 3; i++)
        if (have_tmp[i])
            set_mount_attr(tmps[i], 0, 0, MOUNT_ATTR_RDONLY_);
}

/* An option's number, or `absent` where it was not given. */
static long opt_num(const char *const *opt, int i, long absent)
{
    return opt[i] ? num(opt[i]) : absent;
}

static const char *required(const char *const *opt, int i)
{
    if (!opt[i])
        fail(EINVAL, "missing --%s", options[i].name);
    return opt[i];
}

int main(int argc, char **argv)
{
    /* The options as given. Numbers are read only once the report
     * descriptor is known, so that a bad command line is reported too. */
    const char *opt[NOPTS] = { 0 };
    char **rules = calloc(argc, sizeof *rules);   /* "RIGHTS:PATH" each */
    int nrules = 0, bad = !rules;
    opterr = 0;   /* no message to the supervisor's stderr: reported below */
    for (int o; (o = getopt_long(argc, argv, "", options, NULL)) != -1;) {
        if (o == OPT_RULE && rules)
            rules[nrules++] = optarg;
        else if (o >= 0 && o < NOPTS && o != OPT_RULE && !opt[o])
            opt[o] = optarg;
        else
            bad = 1;   /* unknown, repeated, or without its value */
    }
    step = "options";
    report_fd = opt_num(opt, FD_REPORT, -1);
    if (bad || optind != argc)
        fail(EINVAL, "bad command line");
    uid_t uid = num(required(opt, OPT_UID));
    gid_t gid = num(required(opt, OPT_GID));
    const char *workdir = required(opt, OPT_WORKDIR);
    long tmp_size = opt_num(opt, OPT_TMP_SIZE, 0);
    int with_ns = opt_num(opt, OPT_NAMESPACES, 0);
    int given[NFDS];   /* stdin stdout stderr ctl report status seccomp userns netns mntns */
    for (int i = 0; i < NFDS; i++)
        given[i] = opt_num(opt, i, -1);
    int ll_abi = opt_num(opt, OPT_LANDLOCK_ABI, 0);
    struct ll_ruleset_attr ll_attr = { (uint64_t)opt_num(opt, OPT_HANDLED_FS, 0),
                                       (uint64_t)opt_num(opt, OPT_HANDLED_NET, 0),
                                       (uint64_t)opt_num(opt, OPT_SCOPED, 0) };
    pid_t supervisor = getppid();

    /* Dispositions the supervisor ignores (Python ignores SIGPIPE and
     * SIGXFSZ) survive exec: the program would inherit them (`yes | head`
     * never ending). Default everything, block nothing. */
    step = "signals";
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            signal(sig, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);

    /* A session of its own: no controlling terminal, and the run's process
     * group is not the supervisor's. */
    step = "setsid";
    CHECK(setsid(), "setsid");

    /* Descriptors to fixed numbers (0-9), through copies above them so that
     * no move overwrites a descriptor still to be moved; then nothing else
     * of the supervisor's stays open. */
    step = "fds";
    int copies[NFDS];
    for (int i = 0; i < NFDS; i++) {
        copies[i] = given[i] < 0 ? -1 : fcntl(given[i], F_DUPFD_CLOEXEC, 64);
        if (given[i] >= 0 && copies[i] < 0)
            fail(errno, "dup %d: %s", given[i], strerror(errno));
    }
    for (int i = 0; i < NFDS; i++) {
        if (copies[i] >= 0)
            CHECK(dup3(copies[i], i, i < 3 ? 0 : O_CLOEXEC), "dup3");
        else
            close(i);
    }
    report_fd = FD_REPORT;
    syscall(SYS_close_range, NFDS, ~0U, 0);
    if (copies[0] < 0 || copies[1] < 0 || copies[2] < 0 || copies[3] < 0 || copies[4] < 0)
        fail(EBADF, "stdio, control and report pipes are required");

    /* The OOM killer must pick the run, never its supervisor (raising one's
     * own score needs no privilege). */
    step = "oom_score_adj";
    write_file("/proc/self/oom_score_adj", "1000");

    /* The slot's namespaces (see namespaces.slot_namespaces): its user
     * namespace first, as root, since its owner has every capability in it
     * (even without CAP_SYS_ADMIN outside, e.g. in a container), which
     * entering the other two needs; then its network namespace (no
     * interface up) and its mount namespace (the work root is the slot's
     * private tmpfs there). */
    step = "slot_namespaces";
    if (copies[FD_USERNS] >= 0)
        CHECK(setns(FD_USERNS, CLONE_NEWUSER), "setns user");
    if (copies[FD_NETNS] >= 0)
        CHECK(setns(FD_NETNS, CLONE_NEWNET), "setns net");
    if (copies[FD_MNTNS] >= 0)
        CHECK(setns(FD_MNTNS, CLONE_NEWNS), "setns mnt");
    close(FD_USERNS);
    close(FD_NETNS);
    close(FD_MNTNS);

    /* Identity: groups first (needs root), then gid, then uid last, since
     * after setresuid none of the others could be done. */
    step = "identity";
    CHECK(setgroups(0, NULL), "setgroups");
    CHECK(setresgid(gid, gid, gid), "setresgid");
    CHECK(setresuid(uid, uid, uid), "setresuid");

    /* Must not outlive the supervisor (set after the uid change, which
     * clears it); if it already died, the signal would never come. */
    step = "pdeathsig";
    CHECK(prctl(PR_SET_PDEATHSIG, SIGKILL), "pdeathsig");
    if (getppid() != supervisor)
        fail(ESRCH, "supervisor gone");

    struct stage stage = { workdir, ll_abi, ll_attr, nrules, rules, copies[FD_SECCOMP] >= 0 };
    if (with_ns) {
        enter_namespaces(uid, gid, workdir, tmp_size, copies[FD_NETNS] < 0);
        start_init(&stage);
    }
    return program(&stage);
}

/*
 * The program's part: the Landlock rules, no_new_privs and seccomp, then
 * (phase 2) the spec, and exec. Runs in this process without namespaces,
 * else as PID 2 of the stage's PID namespace (see init). Never returns.
 */
static int program(void *arg)
{
    struct stage *stage = arg;
    const char *workdir = stage->workdir;
    close(FD_STATUS);   /* only init writes it */

    /* The ruleset is built here, after the mounts, so that its /proc rule
     * names this namespace's /proc. Opening with O_PATH needs no read
     * permission. The language's read paths come with the spec. */
    step = "landlock_rules";
    int ruleset = -1;
    if (stage->ll_abi > 0) {
        size_t size = stage->ll_abi >= 6 ? 24 : stage->ll_abi >= 4 ? 16 : 8;
        ruleset = syscall(SYS_landlock_create_ruleset, &stage->ll_attr, size, 0);
        CHECK(ruleset, "landlock_create_ruleset");
        for (int i = 0; i < stage->nrules; i++) {
            char *path;
            errno = 0;
            uint64_t rights = strtoull(stage->rules[i], &path, 10);
            if (errno || path == stage->rules[i] || *path != ':')
                fail(EINVAL, "bad rule %.40s", stage->rules[i]);
            landlock_add(ruleset, path + 1, rights, stage->ll_attr.handled_fs);
        }
    }

    /* no_new_privs: setuid binaries cannot elevate, and an unprivileged
     * process needs it to install Landlock and seccomp. */
    step = "no_new_privs";
    CHECK(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs");

    /* seccomp already now: nothing phase 2 does (read, chdir, setrlimit,
     * landlock, execve) is on its deny list. */
    step = "seccomp";
    if (stage->have_seccomp) {
        struct stat st;
        CHECK(fstat(FD_SECCOMP, &st), "fstat seccomp");
        if (st.st_size <= 0 || st.st_size % sizeof(struct sock_filter_) || st.st_size > 4096 * 8)
            fail(EINVAL, "bad seccomp program size %ld", (long)st.st_size);
        struct sock_filter_ *code = malloc(st.st_size);
        if (!code || pread(FD_SECCOMP, code, st.st_size, 0) != st.st_size)
            fail(errno, "read seccomp program");
        struct sock_fprog_ prog = { .len = st.st_size / sizeof *code, .filter = code };
        CHECK(prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER_, &prog, 0, 0), "install seccomp");
        free(code);
    }
    close(FD_SECCOMP);

    /* ---- phase 2: the stage's spec ---- */
    step = "spec";
    size_t len;
    char *spec = read_all(FD_CTL, &len);
    if (len == 0)
        _exit(0);   /* the supervisor discarded this standby */
    close(FD_CTL);
    struct cursor c = { spec, spec + len };
    char **args = fields(&c);
    char **env = fields(&c);
    char **limits = fields(&c);
    char **paths = fields(&c);
    if (!args[0])
        fail(EINVAL, "empty argv");

    step = "chdir";
    CHECK(chdir(workdir), "chdir");

    /* Lowering limits needs no privilege; NPROC counts per uid. */
    step = "rlimits";
    for (int i = 0; limits[i] && limits[i + 1]; i += 2) {
        rlim_t v = (rlim_t)num(limits[i + 1]);
        struct rlimit rl = { v, v };
        CHECK(setrlimit((int)num(limits[i]), &rl), limits[i]);
    }

    /* The program runs below the server, the supervisors and the next
     * job's standby in the CPU scheduler's eyes (only the program: this
     * standby's own set-up above ran at the supervisor's priority). When
     * the machine is busy with programs, what starts and finishes jobs, and
     * watches their clocks, still gets a CPU as soon as it wakes. Raising
     * one's nice value needs no privilege; lowering it back needs
     * CAP_SYS_NICE (or an RLIMIT_NICE above 0), which the run never has. */
    step = "nice";
    CHECK(setpriority(PRIO_PROCESS, 0, RUN_NICE), "setpriority");

    step = "landlock";
    if (ruleset >= 0) {
        for (int i = 0; paths[i]; i++)
            landlock_add(ruleset, paths[i], LL_EXECUTE | LL_READ_FILE | LL_READ_DIR,
                         stage->ll_attr.handled_fs);
        CHECK(syscall(SYS_landlock_restrict_self, ruleset, 0), "landlock_restrict_self");
        close(ruleset);
    }

    step = "exec";
    execve(args[0], args, env);
    fail(errno, "%s: %s", args[0], strerror(errno));
    return 127;
}
