"""The host's sandbox suites, run again inside the container (no --privileged).

Every S1-S10 property, trap regression and per-layer test that passes on the
host must pass inside the image too, where the layers differ (no writable
cgroup, no mount of the work dir's tmpfs; namespaces through a user
namespace). Tests whose layer is missing there skip with their reason.
"""

from __future__ import annotations

import pytest

from tests.container.helpers import Container

pytestmark = pytest.mark.container

# test_languages.py: every language of the image, and the memory limit held
# without a memory cgroup (the container has none) for Go, Node and Bun;
# test_memory_host.py and test_reach.py: the memory watch, doctor's memory
# report and the start-up path checks where the layers differ.
SUITES = ["tests/test_sandbox.py", "tests/test_traps.py", "tests/test_layers.py",
          "tests/test_accounting.py", "tests/unit", "tests/test_languages.py",
          "tests/test_memory_host.py", "tests/test_reach.py"]


def test_sandbox_suites_pass_inside_the_container(container: Container) -> None:
    # A uid range far from the host's test blocks and from the image's own
    # server range: rootful podman shares uids with the host.
    p = container.exec(
        "env", "PESTO_TEST_UID_BASE=2100000000", "PYTHONDONTWRITEBYTECODE=1",
        "sh", "-c", "cd /opt/pesto && .venv/bin/pytest -q -p no:cacheprovider -rs "
        # The image keeps only its languages' folders; this checks the repo's.
        "--deselect tests/test_languages.py::test_every_language_has_programs "
        + " ".join(SUITES), check=False, timeout=900)
    tail = "\n".join((p.stdout + p.stderr).splitlines()[-60:])
    print(tail)
    assert p.returncode == 0, tail
    assert " passed" in p.stdout, tail
