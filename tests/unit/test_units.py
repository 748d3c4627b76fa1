"""Pure pieces: status table, request parsing, file names, runtime resolution, config."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from pesto.config import load_settings
from pesto.errors import ConfigError, InvalidRequest, RuntimeNotFound
from pesto.models import check_file_name, parse_request, StageResult
from pesto.runtimes import load_registry
from pesto.sandbox.status import decide_status


@pytest.mark.parametrize("exit_code,sig,reason,oom,expected", [
    (0, None, None, False, "ok"),
    (3, None, None, False, "error"),
    (139, 11, None, False, "signal"),
    (137, 9, "timeout", False, "timeout"),
    (0, None, "timeout", False, "timeout"),
    (137, 9, "output", False, "output"),
    (137, 9, "memory", False, "memory"),  # the engine's memory watch stopped it
    (137, 9, None, True, "memory"),
    (1, None, None, True, "memory"),
    (0, None, None, True, "ok"),      # touched the limit, reclaimed, finished fine
])
def test_status_table(exit_code, sig, reason, oom, expected):
    assert decide_status(exit_code=exit_code, signal_no=sig, reason=reason, oom=oom) == expected


def test_parse_request_camel_case_and_strict_types():
    req = parse_request({"language": "py", "code": "x", "runTimeout": 100, "args": ["a"]})
    assert req.run_timeout == 100 and req.args == ["a"]
    for bad in ({"language": 5, "code": "x"}, {"language": "py", "code": "x", "runTimeout": "1"},
                {"language": "py", "code": "x", "args": "abc"}, {"language": "py", "bogus": 1},
                {"code": "x"}, [], {"language": "py", "files": [{"name": "a"}]},
                {"language": "py", "code": "x", "runTimeout": True}):
        with pytest.raises(InvalidRequest) as exc:
            parse_request(bad)
        assert exc.value.details


def test_invalid_request_names_the_field():
    with pytest.raises(InvalidRequest) as exc:
        parse_request({"language": "py", "files": [{"name": 1, "code": "x"}]})
    assert any("$.files[0].name" in d for d in exc.value.details), exc.value.details


@pytest.mark.parametrize("name,ok", [
    ("main.py", True), ("pkg/mod.py", True), ("../x", False), ("/abs", False), ("a/../b", False),
    ("a\x00b", False), ("", False), (".", False), ("a//b", False), ("a\\b", False),
    ("x" * 256, False), ("dir/", False),
])
def test_file_names(name, ok):
    assert (check_file_name(name) is None) == ok


def test_stage_result_round_trip_camel_case():
    d = msgspec.to_builtins(StageResult(exit_code=3, wall_time=5, status="error"))
    assert d["exitCode"] == 3 and d["wallTime"] == 5 and d["status"] == "error"
    assert set(d) == {"stdout", "stderr", "output", "exitCode", "signal", "status", "wallTime",
                      "cpuTime", "memory", "truncated"}


def write_lang(root: Path, name: str, body: str) -> None:
    (root / name).mkdir()
    (root / name / "language.toml").write_text(body)


def test_registry_resolves_alias_and_versions(tmp_path):
    write_lang(tmp_path, "py311", 'language = "Python"\nversion = "3.11.2"\naliases = ["py"]\n'
               'extension = "py"\nrun = ["/usr/bin/python3", "{file}"]\n')
    write_lang(tmp_path, "py39", 'language = "Python"\nversion = "3.9.1"\naliases = ["py"]\n'
               'extension = "py"\nrun = ["/usr/bin/python3", "{file}"]\n')
    write_lang(tmp_path, "ghost", 'language = "Ghost"\nversion = "1.0"\n'
               'extension = "g"\nrun = ["/nonexistent/ghost", "{file}"]\n')
    reg = load_registry(tmp_path)
    assert reg.resolve("PYTHON").version == "3.11.2"
    assert reg.resolve("py", "3.9").version == "3.9.1"
    assert reg.resolve("py311", "3").version == "3.11.2"
    assert reg.resolve("py", "3.11.2").id == "py311"
    with pytest.raises(RuntimeNotFound):
        reg.resolve("py", "3.1")       # a prefix is whole components, not characters
    with pytest.raises(RuntimeNotFound):
        reg.resolve("ghost")           # present but not installed
    with pytest.raises(RuntimeNotFound):
        reg.resolve("cobol")


@pytest.mark.parametrize("body,needle", [
    ('language = "X"\nversion = "1"\nextension = "x"\nrun = ["/bin/x"]\ncolour = "red"\n', "colour"),
    ('language = "X"\nversion = "1"\nextension = "x"\nrun = "/bin/x"\n', "run"),
    ('language = "X"\nversion = "1"\nextension = "x"\nrun = ["/bin/x", "{nope}"]\n', "nope"),
    ('language = "X"\nversion = "1"\nextension = "x"\nrun = ["/bin/x"]\n[limits]\nmemory = "lots"\n', "limits.memory"),
])
def test_language_toml_is_strict(tmp_path, body, needle):
    write_lang(tmp_path, "bad", body)
    with pytest.raises(ConfigError) as exc:
        load_registry(tmp_path)
    # The temporary directory's own path may hold the needle (/tmp/pytest-of-runner/...).
    message = str(exc.value).replace(str(tmp_path), "<tmp>")
    assert "<tmp>/bad/language.toml" in message and needle in message.replace("<tmp>", ""), message


def test_shipped_language_folders_load():
    reg = load_registry(Path(__file__).resolve().parents[2] / "languages")
    ids = {r.id for r in reg.all}
    assert "python" in ids    # (an image keeps only the folders it installed)
    for r in reg.all:
        assert r.test_file.is_file(), f"{r.id} has no test program"


def test_settings_layering(tmp_path):
    cfg = tmp_path / "pesto.toml"
    cfg.write_text('port = 9000\nworkers = 3\nrequire = ["landlock"]\n')
    s = load_settings(env={"PESTO_WORKERS": "5"}, config_file=cfg, port=None)
    assert (s.port, s.workers, s.require) == (9000, 5, ("landlock",))
    s = load_settings(env={"PESTO_WORKERS": "5"}, config_file=cfg, workers=7)
    assert s.workers == 7
    with pytest.raises(ConfigError):
        load_settings(env={}, require=["magic"])
    with pytest.raises(ConfigError):
        load_settings(env={"PESTO_PORT": "eighty"})
    assert "secret" not in repr(load_settings(env={"PESTO_ADMIN_TOKEN": "secret"}))


def test_boolean_settings_from_the_environment():
    assert load_settings(env={}).pin_cpus is True
    assert load_settings(env={"PESTO_PIN_CPUS": "false"}).pin_cpus is False
    assert load_settings(env={"PESTO_PIN_CPUS": "1"}).pin_cpus is True
    with pytest.raises(ConfigError, match="PESTO_PIN_CPUS"):
        load_settings(env={"PESTO_PIN_CPUS": "maybe"})
    with pytest.raises(ConfigError, match="workers"):
        load_settings(env={"PESTO_WORKERS": "0"})
