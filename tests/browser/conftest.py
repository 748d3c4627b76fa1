"""A real `pesto serve` and headless Chromium (Debian's /usr/bin/chromium) driven by Playwright.

Playwright never downloads a browser here: it is pointed at the system
Chromium (`apt-get install chromium`, done by .ci/run). A failing test
leaves a screenshot of each of its pages in the directory printed with the
failure (under pytest's base temp dir, `screenshots/`).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.api.conftest import REPO, Server
from tests.conftest import UID_BASE

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# Uids of the browser tests' servers: just past tests/conftest.py's block of 500.
BROWSER_UIDS = (UID_BASE + 500, 16)
SECOND_UIDS = (UID_BASE + 516, 4)


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "pesto serve needs root to run programs under their own uids"
    if not os.access(CHROMIUM, os.X_OK):
        return f"no {CHROMIUM}: apt-get install chromium (.ci/run does)"
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install -e '.[test]')"
    return None


class PageServer(Server):
    """`pesto serve` (tests/api's Server) with its own uids and config, plus its CLI."""

    def __init__(self, root: Path, config: str, uids: tuple[int, int] = BROWSER_UIDS) -> None:
        (root / "pesto.toml").write_text(config)
        self.config = str(root / "pesto.toml")
        super().__init__(root / "data", "--workers", "2", "--config", self.config,
                         uids=uids)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """A `pesto token ...` command against this server's data dir; must succeed."""
        proc = subprocess.run([sys.executable, "-m", "pesto.cli", "--config", self.config, *args,
                               "--data-dir", str(self.data_dir)], capture_output=True, text=True,
                              timeout=60, cwd=REPO)
        assert proc.returncode == 0, proc.stderr
        return proc


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PageServer]:
    why = _why_not()
    if why:
        pytest.skip(why)
    # A short default run timeout: the timeout test waits for it.
    running = PageServer(tmp_path_factory.mktemp("browser"), "run_timeout_default = 1500\n")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser(server: PageServer) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, "report_" + report.when, report)


class Pages:
    """Opens pages (desktop or phone size) and keeps them for the failure screenshots.

    Every page records console errors and CSP violations in `problems`.
    """

    def __init__(self, browser: Any, server: PageServer) -> None:
        self.browser = browser
        self.server = server
        self.opened: list[tuple[str, Any]] = []
        self.contexts: list[Any] = []
        self.problems: list[str] = []

    def open(self, label: str = "desktop", width: int = 1280, height: int = 900,
             context: Any = None) -> Any:
        if context is None:
            context = self.browser.new_context(viewport={"width": width, "height": height})
            self.contexts.append(context)
        page = context.new_page()
        # API answers of 4xx are expected in some tests; a page file that fails is not.
        page.on("console", lambda msg: msg.type == "error"
                and not msg.text.startswith("Failed to load resource")
                and self.problems.append(msg.text))
        page.on("pageerror", lambda err: self.problems.append(str(err)))
        page.on("response", lambda r: r.status >= 400 and "/api/" not in r.url
                and self.problems.append(f"{r.status} {r.url}"))
        self.opened.append((label, page))
        page.goto(self.server.url + "/")
        # The runtimes list and the samples are in once a language is selectable.
        page.wait_for_selector("#language option", state="attached")
        return page

    def close(self, screenshots: Path | None) -> None:
        if screenshots is not None:
            screenshots.mkdir(parents=True, exist_ok=True)
            for number, (label, page) in enumerate(self.opened):
                try:
                    page.screenshot(path=str(screenshots / f"{number}-{label}.png"), full_page=True)
                except Exception as exc:   # a crashed page: say so, keep the others
                    print(f"no screenshot of {label}: {exc}")
            print(f"screenshots of the failed test's pages: {screenshots}")
        for context in self.contexts:
            context.close()


@pytest.fixture
def pages(request: pytest.FixtureRequest, browser: Any, server: PageServer,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pages]:
    opened = Pages(browser, server)
    yield opened
    failed = any(getattr(getattr(request.node, "report_" + when, None), "failed", False)
                 for when in ("setup", "call"))
    where = None
    if failed:
        where = tmp_path_factory.getbasetemp() / "screenshots" / request.node.name
        shutil.rmtree(where, ignore_errors=True)
    opened.close(where)
