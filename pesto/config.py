"""One frozen Settings object: defaults < pesto.toml < PESTO_* environment < flags.

`load_settings` is handed the environment, so tests pass their own.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Mapping

import attrs
import cattrs

from pesto.errors import ConfigError

_REPO_LANGUAGES = Path(__file__).resolve().parent.parent / "languages"

LAYERS = ("users", "rlimits", "seccomp", "landlock", "namespaces", "cgroups", "disk")


@attrs.frozen
class Settings:
    # Where things live.
    data_dir: Path = Path("/var/lib/pesto")
    # Root of the sandbox's own state: uid lock files and run work dirs.
    # Must be traversable by run uids (0711), so never inside data_dir (0700).
    sandbox_dir: Path = Path("/var/lib/pesto-sandbox")
    languages_dir: Path = _REPO_LANGUAGES
    # The store: None or sqlite:///dir = SQLite in data_dir (or dir); postgresql://... =
    # PostgreSQL shared by many nodes (pesto/stores.py). repr=False: it may hold a password.
    store_url: str | None = attrs.field(default=None, repr=False)
    # Cluster (PostgreSQL store only): this node's name in `pesto doctor` (default host:pid),
    # and the seconds without a heartbeat after which its running jobs are failed.
    node_name: str = ""
    node_lease: float = 10.0

    # HTTP.
    host: str = "0.0.0.0"
    port: int = 8080
    max_body_bytes: int = 1024 * 1024
    admin_token: str | None = attrs.field(default=None, repr=False)
    # The token (by name) that Piston-API requests without a token header are
    # counted against; None refuses them (docs/api.md, "Piston").
    piston_anonymous_token: str | None = None
    # When set, GET /metrics needs `Authorization: Bearer <metrics_token>`.
    metrics_token: str | None = attrs.field(default=None, repr=False)

    # Scheduling.
    workers: int = attrs.field(factory=lambda: os.cpu_count() or 1)
    queue_size: int = 500
    retention_days: float = 7.0
    shutdown_timeout: float = 10.0

    # Sandbox.
    uid_base: int = 61000
    uid_count: int = 1000
    require: tuple[str, ...] = ()
    disable: tuple[str, ...] = ()
    # Deal the CPUs out among the slots (pesto/sandbox/cpus.py).
    pin_cpus: bool = True

    # Limits (client values must fall inside these; defaults apply when absent).
    max_files: int = 20
    output_limit: int = 64 * 1024
    disk_limit: int = 64 * 1024 * 1024
    compile_timeout_default: int = 5000
    run_timeout_default: int = 5000
    timeout_max: int = 30000
    memory_default: int = 128 * 1024 * 1024
    # Not lower by default: a slot's supervisor shares its memory cgroup with the
    # run, and where the host withholds CAP_SYS_RESOURCE (containers, many CI
    # sandboxes) it cannot set its oom_score_adj to -1000. The OOM killer then
    # weighs the run's +1000 only as "the cgroup's limit" in pages, so under a
    # limit smaller than the supervisor's own RSS (~17 MiB) a run that fills its
    # tmpfs work dir got the *supervisor* killed (the job failed with a 500).
    # 32 MiB keeps the run the victim with room to spare (tests/test_traps.py).
    memory_min: int = 32 * 1024 * 1024
    memory_max: int = 512 * 1024 * 1024

    # Token requests from the page at / (docs/front-door.md): "off", "review"
    # (the operator approves with `pesto token approve`) or "auto" (a trial
    # token with the trial_* limits at once).
    token_requests: str = "review"
    token_requests_pending_max: int = 100       # requests waiting for review at most
    token_requests_per_hour: int = 5            # form posts per client address
    trial_rate_limit: int | None = 60           # requests per minute
    trial_monthly_limit: int | None = 1000      # executions per calendar month
    trial_max_concurrency: int | None = 2       # jobs queued or running at once
    # smtp://[user:password@]host[:port] or smtps://...: approved tokens are also mailed.
    smtp_url: str | None = attrs.field(default=None, repr=False)
    smtp_from: str = "pesto@localhost"
    # Judging, batches and webhooks (docs/judging.md).
    max_test_cases: int = 100
    max_batch: int = 50
    max_batch_body_bytes: int = 8 * 1024 * 1024
    # Callbacks to private and loopback addresses (never link-local ones).
    allow_private_callbacks: bool = False
    callback_retry_seconds: float = 3600.0     # how long a failing delivery is retried
    callback_timeout: float = 10.0             # seconds per delivery attempt

    def __attrs_post_init__(self) -> None:
        if self.token_requests not in ("off", "review", "auto"):
            raise ConfigError(f"token_requests must be off, review or auto "
                              f"(got {self.token_requests!r})")
        if self.workers < 1:
            raise ConfigError(f"workers must be at least 1 (got {self.workers})")
        for name in (*self.require, *self.disable):
            if name not in LAYERS:
                raise ConfigError(f"unknown sandbox layer {name!r}; known: {', '.join(LAYERS)}")


_conv = cattrs.Converter(forbid_extra_keys=True)
_conv.register_structure_hook(Path, lambda v, _: Path(v))


def _coerce_env(name: str, raw: str) -> Any:
    field = attrs.fields_dict(Settings)[name]
    t = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", "")
    if t == "int":
        return int(raw)
    if t == "float":
        return float(raw)
    if t == "bool":
        value = raw.strip().lower()
        if value in ("1", "true", "yes", "on"):
            return True
        if value in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected true or false, got {raw!r}")
    if t.startswith("tuple"):
        return tuple(x.strip() for x in raw.split(",") if x.strip())
    return raw


def load_settings(env: Mapping[str, str] | None = None,
                  config_file: str | os.PathLike[str] | None = None,
                  **overrides: Any) -> Settings:
    """Build Settings from a TOML file, PESTO_* variables and explicit overrides.

    Raises ConfigError naming the offending key.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    path = config_file or env.get("PESTO_CONFIG")
    if path:
        try:
            with open(path, "rb") as f:
                values.update(tomllib.load(f))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from None
    names = attrs.fields_dict(Settings)
    for name in names:
        key = "PESTO_" + name.upper()
        if key in env:
            try:
                values[name] = _coerce_env(name, env[key])
            except ValueError as exc:
                raise ConfigError(f"{key}: {exc}") from None
    values.update({k: v for k, v in overrides.items() if v is not None})
    for key in ("require", "disable"):
        if key in values:
            values[key] = tuple(values[key])
    try:
        return _conv.structure(values, Settings)
    except ConfigError:
        raise
    except Exception as exc:
        msgs = cattrs.transform_error(exc, path="config") if isinstance(
            exc, cattrs.BaseValidationError) else [str(exc)]
        raise ConfigError("invalid configuration: " + "; ".join(msgs)) from None
