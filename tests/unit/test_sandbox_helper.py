"""The exec helper's command line: named options, each checked; a bad one
is reported on the report pipe like any failed step (never a silent run)."""

from __future__ import annotations

import os
import subprocess

import pytest

from pesto.sandbox import helper


@pytest.fixture(scope="module")
def exe():
    try:
        return helper.find()
    except helper.HelperMissing as exc:
        pytest.skip(str(exc))


def report_of(exe: str, *args: str) -> tuple[int, str]:
    r, w = os.pipe()
    try:
        proc = subprocess.run([exe, f"--report={w}", *args], pass_fds=[w],
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
        os.close(w)
        w = -1
        return proc.returncode, helper.read_all(r).decode()
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


@pytest.mark.parametrize("args, text", [
    (["--uid=1", "--gid=1", "--workdir=/x", "--bogus=1"], "options:22:bad command line"),
    (["--uid=1", "--uid=2", "--gid=1", "--workdir=/x"], "options:22:bad command line"),
    (["--uid=1", "--gid=1", "--workdir=/x", "stray"], "options:22:bad command line"),
    (["--uid"], "options:22:bad command line"),
    (["--gid=1", "--workdir=/x"], "options:22:missing --uid"),
    (["--uid=1", "--gid=1"], "options:22:missing --workdir"),
    (["--uid=x1", "--gid=1", "--workdir=/x"], "options:22:bad number x1"),
])
def test_bad_command_line_is_reported(exe, args, text):
    code, report = report_of(exe, *args)
    assert (code, report) == (127, text)


def test_spec_fields_are_counted_and_nul_free():
    spec = helper.encode_spec(argv=["/bin/a", "x"], env={"K": "v"}, rlimits=[(4, 0)],
                              read_paths=[])
    assert spec == b"2\0/bin/a\0x\0001\0K=v\0002\0004\0000\0000\0"
    with pytest.raises(ValueError, match="NUL byte"):
        helper.encode_spec(argv=["a\0b"], env={}, rlimits=[], read_paths=[])
