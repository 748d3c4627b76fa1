"""The unit tier: pure pieces, no root, no sandbox, no server; the whole tier runs in seconds.

`pytest tests/unit` runs it alone (as any user); the default `pytest` run
collects it with the other suites. Fakes are fine here and only here: the
behaviour suites above drive real processes under real uids.

A unit test may use pytest's own fixtures and the ones defined under
tests/unit/, never the suites' fixtures (`runner`, `api`, `postgres`, ...):
those start a sandbox or a server and need root, which would make a unit
test pass only where it runs as root. Collection refuses such a test.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent
TESTS = UNIT.parent

# The Python client's pure parts (test_client.py) come from this checkout,
# as in tests/client/.
CLIENT_SRC = TESTS.parent / "clients" / "python"
if str(CLIENT_SRC) not in sys.path:
    sys.path.insert(0, str(CLIENT_SRC))


def _borrowed_fixtures(item: pytest.Item) -> list[str]:
    """The fixtures `item` uses that are defined in tests/ outside tests/unit/."""
    borrowed = []
    # _fixtureinfo is pytest's resolved fixture closure of a test function (no
    # public accessor gives where each fixture was defined).
    info = getattr(item, "_fixtureinfo", None)
    for name, defs in (info.name2fixturedefs.items() if info else ()):
        where = Path(inspect.getfile(defs[-1].func)).resolve()
        if where.is_relative_to(TESTS) and not where.is_relative_to(UNIT):
            borrowed.append(f"{name!r} ({where.relative_to(TESTS.parent)})")
    return borrowed


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Called once with every collected item, the other suites' included.
    wrong = []
    for item in items:
        if Path(item.path).resolve().is_relative_to(UNIT):
            borrowed = _borrowed_fixtures(item)
            if borrowed:
                wrong.append(f"{item.nodeid} uses {', '.join(borrowed)}")
    if wrong:
        raise pytest.UsageError(
            "the unit tier runs without root and uses no suite's fixtures; move these "
            "tests to the suite whose fixtures they need:\n  " + "\n  ".join(wrong))
