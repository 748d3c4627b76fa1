"""Language folders → Runtime records, and name/alias/version resolution.

A language is `languages/<id>/language.toml` (+ install.sh + test program).
Files are loaded strictly: an unknown key or a wrong type is a ConfigError
naming the file and the field.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

import attrs
import cattrs
from cattrs.errors import IterableValidationError, IterableValidationNote

from pesto.errors import ConfigError, RuntimeNotFound

MEMORY_MODES = ("address-space", "data", "runtime-flag", "watch")
PLACEHOLDER = re.compile(r"\{(\w+)\}")
# No {lang_dir}: a run cannot be assumed to reach the checkout (a clone in a
# 0700 home); a language's wrappers are installed under /opt/pesto/runtimes.
KNOWN_PLACEHOLDERS = {"file", "dir", "memory_mb", "stem"}


@attrs.frozen
class LanguageLimits:
    processes: int = 64
    # How memoryLimit is enforced when no cgroup is available:
    #   address-space -> RLIMIT_AS; data -> RLIMIT_DATA;
    #   runtime-flag  -> the runtime's own heap flag in argv/env ({memory_mb})
    #                    backed by RLIMIT_DATA;
    #   watch         -> the engine samples the run's resident memory and stops
    #                    it past the limit, RLIMIT_DATA as the backstop.
    memory: str = "address-space"
    # Bytes added to RLIMIT_DATA (modes data, runtime-flag) for what the
    # runtime maps writable at start and never fills (measured per runtime:
    # docs/memory.md). The limit then holds within this margin at worst.
    memory_reserve: int = 0
    open_files: int = 256
    compile_timeout: int | None = None   # language default, ms
    run_timeout: int | None = None       # language default, ms
    compile_memory: int | None = None    # bytes; compilers may need more than the program
    compile_processes: int | None = None


@attrs.frozen
class LanguageSpec:
    language: str
    version: str
    run: list[str]
    extension: str
    aliases: list[str] = attrs.field(factory=list)
    compile: list[str] = attrs.field(factory=list)
    file: str | None = None
    environment: dict[str, str] = attrs.field(factory=dict)
    # Extra paths the program may read and execute (the runtime's own tree);
    # the system library paths are always allowed.
    read_paths: list[str] = attrs.field(factory=list)
    test: str | None = None
    limits: LanguageLimits = attrs.field(factory=LanguageLimits)
    # The runtime works with threads of its own (a JIT, a GC, schedulers) or
    # its compiler runs processes side by side: its stages are placed on
    # every CPU the server may use, not only their slot's (pin_cpus). Where
    # a job runs, not how much it may use: no limit changes.
    spread_cpus: bool = False


@attrs.frozen
class Runtime:
    id: str
    spec: LanguageSpec
    lang_dir: Path
    installed: bool

    @property
    def language(self) -> str:
        return self.spec.language

    @property
    def version(self) -> str:
        return self.spec.version

    @property
    def compiled(self) -> bool:
        return bool(self.spec.compile)

    @property
    def file_name(self) -> str:
        return self.spec.file or f"main.{self.spec.extension}"

    @property
    def test_file(self) -> Path:
        return self.lang_dir / (self.spec.test or f"test.{self.spec.extension}")

    @property
    def names(self) -> set[str]:
        return {self.id.lower(), self.spec.language.lower(), *(a.lower() for a in self.spec.aliases)}


def _strict_converter() -> cattrs.Converter:
    """A converter that accepts only the TOML type asked for: no "5" for 5,
    no "ab" for ["a", "b"], unknown keys rejected."""
    conv = cattrs.Converter(forbid_extra_keys=True)

    # Strings, ints and bools must arrive as such: cattrs would otherwise
    # happily turn 5 into "5" or "abc" into an error deep in the engine.
    def strict(kind: type, name: str):
        def hook(value: Any, _type: Any) -> Any:
            if type(value) is not kind:  # noqa: E721 - bool is not an int here
                raise TypeError(f"expected {name}, got {type(value).__name__}")
            return value
        return hook

    conv.register_structure_hook(str, strict(str, "a string"))
    conv.register_structure_hook(int, strict(int, "an integer"))
    conv.register_structure_hook(bool, strict(bool, "a boolean"))

    def number(value: Any, _type: Any) -> float:
        if type(value) not in (int, float):  # noqa: E721 - no bool, no "0.1"
            raise TypeError(f"expected a number, got {type(value).__name__}")
        return float(value)
    conv.register_structure_hook(float, number)

    # cattrs turns any iterable into a list ("ab" -> ["a", "b"]): only a TOML
    # array is a list here. Registered before the classes, which capture it.
    def strict_list(value: Any, type_: Any) -> Any:
        if type(value) is not list:  # noqa: E721
            raise TypeError(f"expected a list, got {type(value).__name__}")
        elem = type_.__args__[0]
        handler = conv.get_structure_hook(elem)
        out, errors = [], []
        for index, item in enumerate(value):
            try:
                out.append(handler(item, elem))
            except Exception as exc:
                exc.__notes__ = [*getattr(exc, "__notes__", []), IterableValidationNote(
                    f"Structuring {type_} @ index {index}", index, elem)]
                errors.append(exc)
        if errors:
            raise IterableValidationError(f"While structuring {type_!r}", errors, type_)
        return out

    conv.register_structure_hook_func(
        lambda t: getattr(t, "__origin__", None) is list, strict_list)
    return conv


_conv = _strict_converter()


def _version_key(v: str) -> tuple:
    return tuple(int(p) if p.isdigit() else -1 for p in re.split(r"[.\-+]", v))


def _check(spec: LanguageSpec, where: str) -> None:
    if not spec.run:
        raise ConfigError(f"{where}: 'run' must not be empty")
    if spec.limits.memory not in MEMORY_MODES:
        raise ConfigError(f"{where}: limits.memory must be one of {', '.join(MEMORY_MODES)}")
    for argv in (spec.run, spec.compile):
        for arg in argv:
            for name in PLACEHOLDER.findall(arg):
                if name not in KNOWN_PLACEHOLDERS:
                    raise ConfigError(f"{where}: unknown placeholder {{{name}}} in {arg!r}")


def _installed(spec: LanguageSpec) -> bool:
    for argv in (spec.run, spec.compile):
        if not argv:
            continue
        exe = argv[0]
        if "{" in exe:           # e.g. "{dir}/main": the compile stage makes it
            continue
        if not (os.path.isabs(exe) and os.access(exe, os.X_OK)):
            return False
    return True


def load_language(lang_dir: Path) -> Runtime:
    """Load one language folder. Raises ConfigError naming file and field."""
    path = lang_dir / "language.toml"
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    try:
        spec = _conv.structure(raw, LanguageSpec)
    except Exception as exc:
        msgs = cattrs.transform_error(exc, path=str(path)) if isinstance(
            exc, cattrs.BaseValidationError) else [f"{path}: {exc}"]
        raise ConfigError("; ".join(msgs)) from None
    _check(spec, str(path))
    return Runtime(id=lang_dir.name, spec=spec, lang_dir=lang_dir.resolve(),
                   installed=_installed(spec))


@attrs.frozen
class Registry:
    """Every language folder found; `installed` ones are the ones served."""
    all: tuple[Runtime, ...]
    installed: tuple[Runtime, ...] = attrs.field(init=False)
    # lower-case name/alias -> installed runtimes answering to it (built once:
    # resolve() runs on every request)
    _by_name: dict[str, tuple[Runtime, ...]] = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        installed = tuple(r for r in self.all if r.installed)
        by_name: dict[str, list[Runtime]] = {}
        for r in installed:
            for name in r.names:
                by_name.setdefault(name, []).append(r)
        object.__setattr__(self, "installed", installed)
        # Newest version first: `resolve` takes the first that matches.
        object.__setattr__(self, "_by_name", {
            k: tuple(sorted(v, key=lambda r: _version_key(r.version), reverse=True))
            for k, v in by_name.items()})

    def resolve(self, name: str, version: str | None = "latest") -> Runtime:
        """The installed runtime for a name/alias and an exact, prefix or 'latest' version.

        Raises RuntimeNotFound (400).
        """
        key = name.strip().lower()
        found = self._by_name.get(key, ())
        if not found:
            raise RuntimeNotFound(
                "Runtime not found",
                hint=f"no installed language called {name!r}; GET /api/runtimes lists them")
        version = (version or "latest").strip()
        if version.lower() not in ("latest", "", "*"):
            candidates = found
            exact = [r for r in candidates if r.version == version]
            found = tuple(exact) or tuple(r for r in candidates if r.version.startswith(version + ".")
                                          or r.version.startswith(version + "-"))
            if not found:
                raise RuntimeNotFound(
                    "Runtime not found", hint=f"{name!r} has no installed version {version!r}; "
                    "installed: " + ", ".join(r.version for r in candidates))
        return found[0]


def load_registry(languages_dir: Path) -> Registry:
    """Load every `*/language.toml` under languages_dir (sorted, strict)."""
    if not languages_dir.is_dir():
        raise ConfigError(f"languages directory {languages_dir} does not exist")
    runtimes = [load_language(d) for d in sorted(languages_dir.iterdir())
                if (d / "language.toml").is_file()]
    seen: dict[tuple[str, str], str] = {}
    for r in runtimes:
        key = (r.language.lower(), r.version)
        if key in seen:
            raise ConfigError(f"{r.lang_dir}: {r.language} {r.version} is also defined by {seen[key]}")
        seen[key] = str(r.lang_dir)
    return Registry(all=tuple(runtimes))
