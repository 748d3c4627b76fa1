"""Can a run's uid reach what every run needs, and not what no run may see?

Checked once at start (the spawner's probe, `pesto serve`, `pesto run`) and
by `pesto doctor`, so that a host laid out wrongly refuses to start with
what to do, instead of failing every run at its Landlock step (the exec
helper opens each rule's path as the run's uid, after the uid drop: a clone
in root's 0700 home made every run fail that way).

The check runs in a forked child as an unprivileged uid with no groups,
the way a run sees the file system: permission bits ("other"), every parent
traversed. It does not need Landlock: Landlock only takes rights away.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterable, Sequence

import attrs

# The probe's identity: like a run's, owns nothing and is in no group.
NOBODY = 65534
# Each run gets its own empty tmpfs at these (with namespaces): a path
# under them is invisible to it.
PRIVATE_TMP = ("/tmp", "/var/tmp", "/dev/shm")


@attrs.frozen
class Need:
    """A path runs need; `who` says whose need, as messages put it.

    kind: "dir" (read and list), "exec" (execute), "path" (only opened: a
    Landlock rule), "traverse" (the work root: entered, not listed).
    """
    path: str
    kind: str
    who: str


def needs(work_root: str, system_rules: Iterable[str],
          runtimes: Iterable[tuple[str, Sequence[str], Sequence[Sequence[str]]]]) -> list[Need]:
    """What runs need: the work root, the system rules, and per language
    (id, read paths, argvs) its read paths and the programs it starts.
    Paths with placeholders (made per job) and relative ones are skipped."""
    out = [Need(work_root, "traverse", "the work root of every run")]
    out += [Need(p, "path", "a Landlock rule of every run") for p in system_rules]
    for lang, read_paths, argvs in runtimes:
        for p in read_paths:
            if "{" not in p and os.path.isabs(p):
                out.append(Need(p, "dir", f"needed by {lang}"))
        for argv in argvs:
            if argv and "{" not in argv[0] and os.path.isabs(argv[0]):
                out.append(Need(argv[0], "exec", f"needed by {lang}"))
    return out


def _existing(n: Need) -> Need:
    """A work root not made yet (the probe makes it) is checked at its
    nearest existing parent: that must be traversable too."""
    path = n.path
    if n.kind == "traverse":
        while not os.path.lexists(path) and path not in ("/", ""):
            path = os.path.dirname(path)
    return attrs.evolve(n, path=path)


def _hidden_by_private_tmp(path: str) -> str | None:
    real = os.path.realpath(path)
    for top in PRIVATE_TMP:
        if real == top or real.startswith(top + "/"):
            return top
    return None


def _as_nobody(payload: list[tuple[str, str]]) -> dict[str, str]:
    """{"path\0kind": "" if reachable as asked, else why}, from a child as NOBODY.

    kind "deny" asks the opposite: "" if the uid can neither list nor enter it.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:   # the child: drop to the uid, try each path, report, exit
        code = 0
        try:
            os.close(r)
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            found = {}
            for path, kind in payload:
                found[path + "\0" + kind] = _try(path, kind)
            data = json.dumps(found).encode()
            while data:
                data = data[os.write(w, data):]
        except BaseException:  # noqa: BLE001
            code = 1
        os._exit(code)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        raise RuntimeError("the path check could not switch to an unprivileged uid")
    return json.loads(b"".join(chunks))


def _try(path: str, kind: str) -> str:
    """As the unprivileged uid: "" if the path is reachable as `kind` asks."""
    if kind == "deny":
        if os.access(path, os.R_OK) or os.access(path, os.X_OK):
            return "a run's uid can list or enter it"
        return ""
    try:
        # What the exec helper does for a Landlock rule: needs every parent
        # to be traversable, nothing of the path itself.
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError as exc:
        return f"a run's uid cannot reach it ({os.strerror(exc.errno or errno.EIO)})"
    os.close(fd)
    want = {"dir": os.R_OK | os.X_OK, "exec": os.X_OK, "traverse": os.X_OK, "path": 0}[kind]
    if kind == "dir" and not os.path.isdir(path):
        want = os.R_OK
    if want and not os.access(path, want):
        return {"exec": "a run's uid cannot execute it", "traverse": "a run's uid cannot enter it",
                }.get(kind, "a run's uid cannot read it")
    return ""


def check(need: Sequence[Need], deny: Sequence[tuple[str, str]], *,
          private_tmp: bool) -> list[str]:
    """Every problem found, one line each (empty: all is well).

    need: paths a run must reach. deny: (path, what) a run must not reach.
    Paths that do not exist are skipped (a language not installed, a data
    dir not yet made). private_tmp: runs get their own /tmp (namespaces on).
    """
    problems: list[str] = []
    tried: list[tuple[str, str]] = []
    need = [_existing(n) for n in need]
    for n in need:
        if not os.path.lexists(n.path):
            continue
        top = _hidden_by_private_tmp(n.path) if private_tmp else None
        if top:
            problems.append(f"{n.path} ({n.who}) is under {top}, which every run "
                            f"sees as its own empty tmpfs: move it out of {top}")
            continue
        tried.append((n.path, n.kind))
    tried += [(p, "deny") for p, _ in deny if os.path.exists(p)]
    if not tried:
        return problems
    found = _as_nobody(tried)
    for n in need:
        why = found.get(n.path + "\0" + n.kind)
        if why:
            problems.append(f"{n.path} ({n.who}): {why}. {_advice(n.path)}")
    for path, what in deny:
        why = found.get(path + "\0deny")
        if why:
            problems.append(f"{path} ({what}): {why}: make it private (chmod 700 {path})")
    return problems


def _advice(path: str) -> str:
    """Name the first parent a run cannot traverse, and the two ways out."""
    parts = os.path.abspath(path).split("/")
    for i in range(2, len(parts) + 1):
        parent = "/".join(parts[:i]) or "/"
        try:
            mode = os.stat(parent).st_mode
        except OSError:
            break
        if os.path.isdir(parent) and not mode & 0o001:
            return (f"{parent} has mode {mode & 0o7777:o} (others cannot enter it): "
                    f"move it to a world-readable place, or chmod o+x {parent}")
    return "make it readable by all users (chmod a+rX)"


def layout(*, sandbox_dir: str, data_dir: str, runtimes: Iterable) -> tuple[list[Need], list[tuple[str, str]]]:
    """(needs, denials) for a server: its work root, the system rules and
    each installed runtime's paths; its data dir must stay out of reach."""
    from pesto.sandbox.landlock import SYSTEM_READ_RULES
    need = needs(os.path.join(sandbox_dir, "work"), SYSTEM_READ_RULES,
                 [(r.id, r.spec.read_paths, [r.spec.run, r.spec.compile]) for r in runtimes])
    return need, [(data_dir, "the data dir: database and tokens")]


def check_settings(settings, *, private_tmp: bool) -> tuple[list[str], int]:
    """(problems, installed language count) for a server's settings: what
    `pesto doctor` shows and `pesto serve` checks before it listens."""
    from pesto.runtimes import load_registry
    registry = load_registry(settings.languages_dir)
    need, deny = layout(sandbox_dir=str(settings.sandbox_dir), data_dir=str(settings.data_dir),
                        runtimes=registry.installed)
    return check(need, deny, private_tmp=private_tmp), len(registry.installed)
