"""The page at / in headless Chromium against a real `pesto serve`."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

TOKEN_KEY = "pesto.token"


@pytest.fixture(scope="module")
def secret(server: Any) -> str:
    """A token made with the operator's CLI (its last line)."""
    return server.cli("token", "create", "--name", "browser").stdout.strip().splitlines()[-1]


def _paste_token(page: Any, token: str) -> None:
    page.fill("#token", token)
    page.click("#token-save")
    page.wait_for_selector("#token-state:has-text('remembered')")


def _write_code(page: Any, code: str) -> None:
    page.fill("#code", code)


def _has(page: Any, language: str) -> bool:
    return language in page.eval_on_selector_all("#language option", "os => os.map(o => o.value)")


def _pick_python(page: Any) -> None:
    assert _has(page, "Python"), "Python is not offered"
    page.select_option("#language", "Python")


def _stage(page: Any, title: str) -> Any:
    return page.locator(".stage", has=page.locator(f"h3:has-text('{title}')"))


def test_loads_with_runtimes_sample_and_links(pages: Any, server: Any) -> None:
    page = pages.open()
    runtimes = httpx.get(server.url + "/api/runtimes").json()["runtime"]
    shown = page.locator("#runtimes li").all_inner_texts()
    assert len(shown) == len(runtimes)
    assert any(text.startswith("Python") for text in shown)
    # Python is picked first and its hello-world fills the editor.
    assert page.input_value("#language") == "Python"
    python = [r["version"] for r in runtimes if r["language"] == "Python"]
    assert page.eval_on_selector_all("#version option", "os => os.map(o => o.value)") == python
    assert "Hello world" in page.input_value("#code")
    lines = page.input_value("#code").count("\n") + 1
    assert page.inner_text("#gutter").split() == [str(n) for n in range(1, lines + 1)]
    # Another language's sample replaces an untouched sample.
    if _has(page, "C"):
        page.select_option("#language", "C")
        assert "#include" in page.input_value("#code")
        assert page.input_value("#version") == next(
            r["version"] for r in runtimes if r["language"] == "C")
    hrefs = page.eval_on_selector_all("nav a", "as => as.map(a => a.getAttribute('href'))")
    assert set(hrefs) == {"/docs", "/schema", "#request"}
    assert pages.problems == []     # no script error, no CSP violation


def test_runs_python_reading_stdin_with_ctrl_enter(pages: Any, secret: str) -> None:
    page = pages.open()
    _paste_token(page, secret)
    _pick_python(page)
    _write_code(page, "import sys\nname = sys.stdin.readline().strip()\n"
                      "print('hello,', name, sys.argv[1:])\nprint('oops', file=sys.stderr)\n")
    page.fill("#stdin", "pesto\n")
    page.fill("#args", "a b\nc\n")
    page.focus("#code")
    page.keyboard.press("Control+Enter")
    run = _stage(page, "Run")
    run.wait_for()
    assert run.get_attribute("data-status") == "ok"
    assert run.locator(".out-stdout").inner_text() == "hello, pesto ['a b', 'c']\n"
    assert run.locator(".out-stderr").inner_text() == "oops\n"
    facts = dict(zip(run.locator("dt").all_inner_texts(), run.locator("dd").all_inner_texts()))
    assert facts["exit code"] == "0"
    assert re.fullmatch(r"\d+ ms", facts["wall time"])
    assert re.fullmatch(r"\d+ KiB", facts["memory"]) and facts["memory"] != "0 KiB"
    # The token is in local storage, and never in the address.
    assert page.evaluate(f"localStorage.getItem('{TOKEN_KEY}')") == secret
    assert secret not in page.url
    assert pages.problems == []


def test_timeout_is_marked(pages: Any, secret: str) -> None:
    page = pages.open()
    _paste_token(page, secret)
    _pick_python(page)
    _write_code(page, "print('started', flush=True)\nwhile True:\n    pass\n")
    page.click("#run")
    run = _stage(page, "Run")
    run.wait_for(timeout=20_000)
    assert run.get_attribute("data-status") == "timeout"
    assert "stage-bad" in run.get_attribute("class")
    assert run.locator(".status").inner_text().lower() == "timed out"
    assert run.locator(".out-stdout").inner_text() == "started\n"


def test_failed_compile_is_marked(pages: Any, secret: str) -> None:
    page = pages.open()
    if not _has(page, "C"):
        pytest.skip("C is not installed on this host")
    _paste_token(page, secret)
    page.select_option("#language", "C")
    _write_code(page, "int main(void) { return missing; }\n")
    page.click("#run")
    compile_stage = _stage(page, "Compile")
    compile_stage.wait_for(timeout=30_000)
    assert compile_stage.get_attribute("data-status") == "error"
    assert "missing" in compile_stage.locator(".out-stderr").inner_text()
    assert page.locator(".warn:has-text('run stage was skipped')").count() == 1


def test_output_is_text_never_html(pages: Any, secret: str) -> None:
    page = pages.open()
    _paste_token(page, secret)
    _pick_python(page)
    hostile = ('<script>window.__pwned = 1</script>\n'
               '<img src="/nothing" onerror="window.__pwned = 2">\n'
               '<b id="injected">bold?</b>')
    _write_code(page, f"import sys\nprint({hostile!r})\nprint({hostile!r}, file=sys.stderr)\n")
    page.click("#run")
    run = _stage(page, "Run")
    run.wait_for()
    assert run.locator(".out-stdout").inner_text() == hostile + "\n"
    assert run.locator(".out-stderr").inner_text() == hostile + "\n"
    page.wait_for_timeout(300)      # an onerror would have fired by now
    assert page.evaluate("window.__pwned") is None
    assert page.locator("#result img, #result script, #injected").count() == 0


def test_editor_keyboard(pages: Any) -> None:
    page = pages.open()
    page.fill("#code", "")
    page.focus("#code")
    page.keyboard.type("if True:")
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    page.keyboard.type("x = 1")
    page.keyboard.press("Enter")          # keeps the indent
    page.keyboard.type("y = 2")
    assert page.input_value("#code") == "if True:\n    x = 1\n    y = 2"
    page.keyboard.press("Shift+Tab")      # outdents the line
    assert page.input_value("#code") == "if True:\n    x = 1\ny = 2"
    assert page.inner_text("#gutter").split() == ["1", "2", "3"]
    # Esc, then Tab leaves the editor for the next field.
    page.keyboard.press("Escape")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "stdin"
    assert page.input_value("#code") == "if True:\n    x = 1\ny = 2"


def test_phone_width_has_no_sideways_scroll(pages: Any) -> None:
    page = pages.open("phone", width=390, height=844)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    box = page.locator(".editor").bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 390
    # Inputs stay usable: the Run button is full width and in view when scrolled to.
    page.locator("#run").scroll_into_view_if_needed()
    assert page.locator("#run").is_visible()


def test_request_approve_claim_and_run(pages: Any, server: Any) -> None:
    page = pages.open()
    assert page.evaluate(f"localStorage.getItem('{TOKEN_KEY}')") is None   # a new visitor
    page.fill("#req-name", "Ada Lovelace")
    page.fill("#req-email", "ada@example.org")
    page.fill("#req-purpose", "An analytical engine course")
    page.click("#req-send")
    code = page.locator("#request-result .secret-value").inner_text()
    assert code.startswith("claim_")
    # Still pending: the page says so.
    page.click("#claim-send")
    page.wait_for_selector("#claim-result:has-text('still waiting')")
    listing = server.cli("token", "requests", "--pending").stdout
    row = next(line for line in listing.splitlines() if "ada@example.org" in line)
    request_id = row.split()[0]
    server.cli("token", "approve", request_id, "--monthly-limit", "10")
    page.click("#claim-send")
    token = page.locator("#claim-result .secret-value").inner_text()
    assert token.startswith("pesto_")
    page.click("#token-use")
    assert page.evaluate(f"localStorage.getItem('{TOKEN_KEY}')") == token
    # A second claim gets nothing: the token is shown once.
    page.click("#claim-send")
    page.wait_for_selector("#claim-result:has-text('ALREADY_CLAIMED')")
    _pick_python(page)
    _write_code(page, "print(input()[::-1])\n")
    page.fill("#stdin", "olleh")
    page.click("#run")
    run = _stage(page, "Run")
    run.wait_for()
    assert run.locator(".out-stdout").inner_text() == "hello\n"
    assert token not in page.url and code not in page.url
    assert pages.problems == []


def test_bad_form_shows_the_error(pages: Any, server: Any) -> None:
    page = pages.open("phone-form", width=390, height=844)
    page.fill("#req-name", "Bob")
    page.fill("#req-email", "bob@example.org")
    page.fill("#req-purpose", "x")
    # The browser's own checks pass; the server refuses a control character.
    page.eval_on_selector("#req-name", "e => { e.value = 'Bob\\u0007' }")
    page.click("#req-send")
    page.wait_for_selector("#request-result [role=alert]")
    shown = page.inner_text("#request-result")
    assert "name: control characters are not allowed" in shown and "$." not in shown
    listing = server.cli("token", "requests").stdout
    assert "bob@example.org" not in listing


def test_token_pasted_once_is_remembered_across_visits(pages: Any) -> None:
    page = pages.open()
    page.fill("#token", "pesto_pasted")
    page.keyboard.press("Tab")                     # leaving the field keeps it
    page.reload()
    page.wait_for_selector("#token-state:has-text('remembered')")
    assert page.input_value("#token") == "pesto_pasted"
    assert page.evaluate(f"localStorage.getItem('{TOKEN_KEY}')") == "pesto_pasted"
    assert "pesto_pasted" not in page.url
    page.click("#token-forget")
    assert page.evaluate(f"localStorage.getItem('{TOKEN_KEY}')") is None
    assert page.input_value("#token") == ""


def test_form_is_hidden_when_requests_are_off(browser: Any, tmp_path: Any) -> None:
    from tests.browser.conftest import SECOND_UIDS, PageServer

    server = PageServer(tmp_path, 'token_requests = "off"\n', uids=SECOND_UIDS)
    try:
        page = browser.new_page()
        page.goto(server.url + "/")
        page.wait_for_selector("#request-mode:has-text('does not take token requests')")
        assert not page.locator("#request-form").is_visible()
        page.close()
    finally:
        server.stop()


def test_csp_blocks_inline_code_and_other_origins(pages: Any) -> None:
    # Even HTML that got onto the page some other way runs nothing: the
    # browser enforces the page's policy.
    page = pages.open()
    failed: dict[str, str] = {}
    page.on("requestfailed", lambda r: failed.__setitem__(r.url, r.failure or ""))
    page.evaluate("""() => {
        document.body.insertAdjacentHTML('beforeend',
            '<img src="http://pesto-elsewhere.example/x.png">' +
            '<img src="/no-such-image" onerror="window.__inline = 1">' +
            '<div id="styled" style="position: fixed; color: rgb(255, 0, 0)">x</div>');
        const s = document.createElement('script');
        s.textContent = 'window.__inline = 2';
        document.body.append(s);
    }""")
    page.wait_for_timeout(300)
    assert page.evaluate("window.__inline") is None
    assert page.eval_on_selector("#styled", "e => getComputedStyle(e).color") != "rgb(255, 0, 0)"
    assert any("Content Security Policy" in p for p in pages.problems)
    # Refused by the policy itself (not by a failed name lookup).
    assert failed.get("http://pesto-elsewhere.example/x.png") == "csp", failed
    pages.problems.clear()      # the violations above were the point


def test_keyboard_alone_reaches_everything_and_runs(pages: Any, secret: str) -> None:
    page = pages.open()
    order = []
    for _ in range(40):
        page.keyboard.press("Tab")
        element = page.evaluate("document.activeElement.id || document.activeElement.tagName")
        if element == "code":
            page.keyboard.press("Escape")       # the editor keeps Tab; Esc lets it go
        order.append(element)
        if element == "claim-send":
            break
    expected = ["token", "token-save", "token-forget", "language", "version", "code", "stdin", "args", "run",
                "req-name", "req-email", "req-purpose", "req-send", "claim-code", "claim-send"]
    assert [e for e in order if e in expected] == expected, order
    # Type a token and run, keys only.
    page.focus("#token")
    page.keyboard.type(secret)
    page.keyboard.press("Tab")               # leaving the field remembers it
    page.focus("#code")
    page.keyboard.press("Control+a")
    page.keyboard.type("print(6 * 7)")
    page.keyboard.press("Control+Enter")
    run = _stage(page, "Run")
    run.wait_for()
    assert run.locator(".out-stdout").inner_text() == "42\n"


def test_api_documentation_lists_every_route(pages: Any, server: Any) -> None:
    context = pages.browser.new_context()
    pages.contexts.append(context)
    page = context.new_page()
    pages.opened.append(("docs", page))
    page.on("pageerror", lambda err: pages.problems.append(str(err)))
    page.goto(server.url + "/docs")
    page.wait_for_selector(".route")
    document = httpx.get(server.url + "/schema/openapi.json").json()
    expected = sorted(f"{method.upper()} {path}" for path, item in document["paths"].items()
                      for method in item)
    shown = sorted(" ".join(h.split()[:2]) for h in page.locator(".route h3").all_inner_texts())
    assert shown == expected
    execute = page.locator("#post-api-execute")
    assert "token" in execute.locator("h3").inner_text()
    fields = execute.locator(".field").all_inner_texts()
    assert {"language", "code", "stdin", "runTimeout", "stdout", "exitCode", "wallTime"} <= set(fields)
    assert "token" not in page.locator("#get-api-runtimes h3").inner_text()
    assert pages.problems == []
