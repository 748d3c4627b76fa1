"""A published Piston client, npm piston-client 1.0.2, pointed at a real
`pesto serve` by its `server` option and nothing else: no token header (the
server's `piston_anonymous_token` counts the traffic), JSON sent as
text/plain, every field filled by the client (js/piston_*.mjs).
"""

from __future__ import annotations

import json

from tests.compat.conftest import Compat


def test_runtimes(compat: Compat) -> None:
    runtimes = compat.node("piston_runtimes.mjs")
    assert isinstance(runtimes, list)
    python = [r for r in runtimes if r["language"] == "python"]
    assert python and set(python[0]) == {"language", "version", "aliases"}


def test_execute_interpreted(compat: Compat) -> None:
    # The client picks the newest version from runtimes and adds args 1 2 3.
    result = compat.node("piston_execute.mjs", "python",
                         "import sys\nprint('hello', sys.argv[1:])")
    assert result["language"] == "python" and "compile" not in result
    run = result["run"]
    assert run["stdout"] == "hello ['1', '2', '3']\n" and run["code"] == 0
    assert run["status"] is None and run["signal"] is None


def test_execute_compiled_with_stdin(compat: Compat) -> None:
    code = "#include <stdio.h>\nint main(){int a,b; scanf(\"%d %d\",&a,&b); printf(\"%d\\n\",a+b);}"
    result = compat.node("piston_execute.mjs", "c", code,
                         json.dumps({"stdin": "2 40", "args": []}))
    assert result["compile"]["code"] == 0
    assert result["run"]["stdout"] == "42\n"


def test_execute_with_lower_limits(compat: Compat) -> None:
    result = compat.node("piston_execute.mjs", "python", "while True: pass",
                         json.dumps({"runTimeout": 250}))
    assert result["run"]["status"] == "TO" and result["run"]["signal"] == "SIGKILL"


def test_errors_reach_the_client_as_piston_messages(compat: Compat) -> None:
    # Unknown language: the client finds no version and sends none.
    assert compat.node("piston_execute.mjs", "cobol", "x") == {
        "message": "version is required as a string"}
    too_long = compat.node("piston_execute.mjs", "python", "print(1)",
                           json.dumps({"runTimeout": 10 ** 7}))
    assert too_long == {"message": "run_timeout cannot exceed the configured limit of 30000"}
