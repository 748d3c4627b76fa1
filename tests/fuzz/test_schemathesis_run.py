"""`schemathesis run`, the command line, against the served document: its every phase.

The per-operation test (test_schema_fuzz.py) adds our own error-shape
check; this one adds what only the command line does: the coverage phase
(boundary values, missing headers, OPTIONS and unexpected methods) and the
stateful phase (links inferred from `Location`: POST /api/jobs, then GET
and DELETE of the job it made).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = os.environ.get("PESTO_FUZZ_EXAMPLES", "25")

EXCLUDED = [
    # Valid by the schema is not valid by the server: a language must be
    # installed, `code` and `files` exclude each other, limits are the
    # operator's. Those refusals are 400s the document lists.
    "positive_data_acceptance",
    # "A deleted resource must be gone": DELETE /api/jobs/<id> cancels the
    # job, which stays readable (API.md), so a 200 after it is right.
    "use_after_free",
]


def test_schemathesis_run_finds_nothing(served: tuple[str, str], tmp_path: Path):
    url, token = served
    cli = Path(sys.executable).with_name("schemathesis")
    run = subprocess.run(
        [str(cli), "run", url + "/schema/openapi.json", "-H", f"X-Pesto-Token: {token}",
         "--checks", "all", "--exclude-checks", ",".join(EXCLUDED),
         "--max-examples", EXAMPLES, "--generation-deterministic", "--no-color",
         "--max-response-time", "60"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    # The report names each failure with a curl line to reproduce it.
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
