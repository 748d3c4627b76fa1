"""Two request fields the Piston translation needed, on the native API too:
`files[].encoding` (binary files) and `compileMemoryLimit`."""

from __future__ import annotations

import base64

from tests.api.conftest import Api, assert_error

READ = "import sys\nsys.stdout.write(open('blob', 'rb').read().hex() + ' ' + open('h', 'rb').read().hex())"
C_HELLO = "#include <stdio.h>\nint main(void) { puts(\"hi\"); return 0; }"


def test_binary_files_arrive_byte_for_byte(api: Api) -> None:
    blob = bytes(range(256)) + b"\xff\xfe\x00"
    response = api.post("/api/execute", {"language": "python", "files": [
        {"name": "main.py", "code": READ, "entrypoint": True},
        {"name": "blob", "code": base64.b64encode(blob).decode(), "encoding": "base64"},
        {"name": "h", "code": "00ff10", "encoding": "hex"},
    ]})
    assert response.status_code == 200, response.text
    assert response.json()["runtime"]["stdout"] == blob.hex() + " 00ff10"


C_BIG = """#include <stdio.h>
#define A 1,1,1,1,1,1,1,1,1,1,
#define B A A A A A A A A A A
#define C B B B B B B B B B B
#define D C C C C C C C C C C
#define E D D D D D D D D D D
#define F E E E E E E E E E E
static const int big[] = { F 1 };
int main(void) { printf("%zu\\n", sizeof big / sizeof big[0]); return 0; }
"""


def test_bad_encodings_are_refused(api: Api) -> None:
    for file, where in (({"encoding": "rot13"}, "$.files[1].encoding"),
                        ({"encoding": "hex", "code": "zz"}, "$.files[1].code"),
                        ({"encoding": "base64", "code": "a"}, "$.files[1].code")):
        body = {"language": "python", "files": [
            {"name": "main.py", "code": "print(1)"}, {"name": "x", "code": "00", **file}]}
        error = assert_error(api.post("/api/execute", body), 400, "INVALID_REQUEST")
        assert any(line.startswith(where) for line in error["details"]), error


def test_compile_memory_limit_is_the_compile_stages_own(api: Api) -> None:
    assert_error(api.post("/api/execute", {"language": "c", "code": C_HELLO,
                                           "compileMemoryLimit": 1024}), 400, "INVALID_REQUEST")
    # gcc needs ~130 MiB for this million-element initializer: the server's
    # smallest limit (32 MiB) starves the compile, and only the compile.
    starved = api.post("/api/execute", {"language": "c", "code": C_BIG,
                                        "compileMemoryLimit": 32 * 2**20}).json()
    assert starved["compile"]["status"] != "ok" and starved["runtime"]["status"] == "skipped"
    # A small run limit does not shrink the compile stage given its own.
    roomy = api.post("/api/execute", {"language": "c", "code": C_BIG, "memoryLimit": 32 * 2**20,
                                      "compileMemoryLimit": 256 * 2**20,
                                      "compileTimeout": 20000}).json()
    assert roomy["compile"]["status"] == "ok", roomy["compile"]
    assert roomy["runtime"]["stdout"] == "1000001\n"
