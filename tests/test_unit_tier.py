"""The unit tier (tests/unit/) passes as an unprivileged user.

The default run is root's (.ci/run), so a unit test that needed root would
pass there and fail for a contributor without it. Here the tier runs again
with every privilege dropped: another uid (nobody), no groups, no
capabilities, no_new_privs. The checkout is bind-mounted at a path of its
own in a private mount namespace, so it is reachable even if a directory
above it (a clone under /root) is closed to other users.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOBODY = 65534

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="dropping to another uid needs root; "
                                "run as this user, `pytest tests/unit` already is unprivileged")


def test_unit_tier_passes_without_root() -> None:
    with tempfile.TemporaryDirectory(prefix="pesto-unit-tier-") as mnt:
        os.chmod(mnt, 0o755)
        # The same interpreter and venv, seen through the mount when they are
        # part of the checkout (.venv).
        python = Path(sys.executable)
        if python.is_relative_to(REPO):
            python = Path(mnt) / python.relative_to(REPO)
        script = ('mount --bind "$1" "$2" && cd "$2" && exec setpriv --reuid=$3 --regid=$3 '
                  '--clear-groups --inh-caps=-all --bounding-set=-all --no-new-privs -- '
                  '"$4" -m pytest tests/unit -q -p no:cacheprovider')
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent",
               "PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8"}
        proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                               script, "sh", str(REPO), mnt, str(NOBODY), str(python)],
                              capture_output=True, text=True, timeout=300, env=env)
    tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
    assert proc.returncode == 0, tail
    last = proc.stdout.strip().splitlines()[-1]
    # Skips (with their reasons) are allowed: a test may need to write into
    # the checkout, which is root's here.
    assert " passed" in last, tail
    print(last)
