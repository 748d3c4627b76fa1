"""The documentation a clone holds is complete and resolves inside the clone.

Every relative link of README.md, docs/, languages/README.md and the client's
README names a file that exists (and a heading that exists, within Markdown
pages), and nothing points at paths that only the developers' machine has.
The README's settings table lists every field of `pesto.config.Settings`,
with its environment variable and its default, and nothing else; the
README's set-up and test commands are the ones CI runs; and the comments and
docstrings of pesto/ quote no measured timing (docs/benchmarks.md holds them).
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import attrs
import pytest

from pesto.config import Settings

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", REPO / "languages" / "README.md",
         REPO / "clients" / "python" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~)")


def _prose(page: Path) -> list[str]:
    """The page's lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in page.read_text().splitlines():
        if FENCE.match(line.lstrip()):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    return {re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
            for line in _prose(page) if line.startswith("#")}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_links_resolve_in_a_clone(page: Path) -> None:
    text = page.read_text()
    assert "shared/spec" not in text and "/work/" not in text
    for target in LINK.findall("\n".join(_prose(page))):
        if re.match(r"(https?|mailto):", target):
            continue
        assert not re.match(r"[a-z]+:|/|~", target), f"{page.name}: {target} leaves the clone"
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.is_relative_to(REPO), f"{page.name}: {target} leaves the clone"
        assert resolved.exists(), f"{page.name}: {target} does not exist"
        if anchor and resolved.suffix == ".md":
            assert anchor in _anchors(resolved), f"{page.name}: no heading for #{anchor}"


def test_anchor_rule_matches_githubs() -> None:
    """The rule above, on headings whose anchors GitHub shows (so a wrong rule
    cannot pass every link by rejecting none)."""
    page = REPO / "docs" / "benchmarks.md"
    assert "soak-20-minutes-of-mixed-and-hostile-traffic-kill--9-in-the-middle" in _anchors(page)
    assert "pesto-doctor" in _anchors(REPO / "docs" / "operations.md")
    assert "pesto-toml" not in _anchors(REPO / "docs" / "operations.md")   # a comment in a code block


# --- the README's settings table --------------------------------------------

# Defaults that are computed, not literal: what the table says instead.
DYNAMIC = {"workers": "CPU count", "languages_dir": "`languages/` of the checkout",
           "node_name": "`host:pid`"}
UNITS = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}


def _settings_rows() -> dict[str, tuple[str, str]]:
    """{setting: (environment cell, default cell)} from the README's table."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and re.fullmatch(r"`\w+`", cells[0]):
            assert cells[0][1:-1] not in rows, f"{cells[0]} twice"
            rows[cells[0][1:-1]] = (cells[1], cells[2])
    return rows


def _parse_default(cell: str) -> object:
    if cell == "none":
        return None
    if cell in ("`true`", "`false`"):
        return cell == "`true`"
    if cell == "`[]`":
        return ()
    if m := re.fullmatch(r"(\d+) (KiB|MiB|GiB)", cell):
        return int(m[1]) * UNITS[m[2]]
    if re.fullmatch(r"\d+(\.\d+)?", cell):
        return float(cell)
    if m := re.fullmatch(r'`"(.*)"`', cell):
        return m[1]
    if m := re.fullmatch(r"`(/.*)`", cell):
        return Path(m[1])
    if m := re.fullmatch(r"`(.*)`", cell):
        return m[1]
    raise AssertionError(f"cannot read the default {cell!r}")


def test_readme_lists_every_setting_with_its_variable_and_default() -> None:
    rows = _settings_rows()
    fields = attrs.fields_dict(Settings)
    assert sorted(rows) == sorted(fields), "the README's table and pesto/config.py differ"
    for name, field in fields.items():
        env, default = rows[name]
        assert env == f"`PESTO_{name.upper()}`", name
        if name in DYNAMIC:
            assert default == DYNAMIC[name], name
            continue
        value = _parse_default(default)
        if isinstance(field.default, (int, float)) and not isinstance(field.default, bool):
            assert value == field.default, f"{name}: README says {default}, code {field.default}"
        else:
            assert value == field.default, f"{name}: README says {default}, code {field.default!r}"


def test_settings_table_reader_sees_a_wrong_default() -> None:
    """_parse_default reads sizes and literals as the code holds them, so a
    README default that drifted from the code would fail the test above."""
    assert _parse_default("128 MiB") == 128 << 20 != _parse_default("64 MiB")
    assert _parse_default("7") == 7.0 and _parse_default("`false`") is False
    assert _parse_default('`"review"`') == "review"


# --- the README's commands are CI's ------------------------------------------

def test_readme_setup_and_test_commands_are_what_ci_runs() -> None:
    readme = (REPO / "README.md").read_text()
    block = readme.split("\n## Set-up (fresh Debian 12, as root)\n", 1)[1].split("```sh\n", 1)[1]
    install, test = [line.split("#")[0].strip() for line in block.split("```")[0].splitlines()]
    assert install == "./install.sh --languages all && pesto serve --port 8080"
    assert test == ".venv/bin/pytest"
    ci = (REPO / ".ci" / "run").read_text()
    assert "\n./install.sh --languages all\n" in ci
    assert re.search(r"^timeout .* \.venv/bin/pytest\b", ci, re.M), "CI no longer runs .venv/bin/pytest"


# --- no measured timings in the code's comments ------------------------------

# "~3 ms", "~0.14 ms", "~80 us", "~10-15 ms", "40 ms here": a figure measured
# once, which goes stale with the next kernel or machine. Limits, defaults and
# timeouts are configuration and are not caught ("5000 ms", "the 30 s maximum").
TIMING = re.compile(r"~\s?\d[\d.,\-]*\s?(ms|us|µs)\b|\b\d[\d.,]*\s?(ms|us|µs) here\b")


def _commentary(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every comment and docstring of a Python or C file."""
    text = path.read_text()
    if path.suffix == ".c":
        return [(text.count("\n", 0, m.start()) + 1, m.group())
                for m in re.finditer(r"/\*.*?\*/|//[^\n]*", text, re.S)]
    found = [(tok.start[0], tok.string) for tok in tokenize.generate_tokens(io.StringIO(text).readline)
             if tok.type == tokenize.COMMENT]
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                found.append((node.body[0].lineno, doc))
    return found


def stale_timings(root: Path) -> list[str]:
    return [f"{path.relative_to(root)}:{line}: {m.group()}"
            for path in sorted(root.glob("pesto/**/*")) if path.suffix in (".py", ".c")
            for line, text in _commentary(path) for m in TIMING.finditer(text)]


def test_code_comments_quote_no_measured_timings() -> None:
    """Measured figures live in docs/benchmarks.md with their command and date."""
    assert stale_timings(REPO) == []


def test_stale_timing_pattern_catches_the_forms_it_names() -> None:
    caught = ["costs ~10-15 ms", "~0.14 ms of CPU", "cost ~80 us here", "~30 µs", "40 ms here"]
    missed = ["5000 ms", "the 30 s maximum", "timeout in ms", "~1000 WAL pages"]
    assert all(TIMING.search(s) for s in caught)
    assert not any(TIMING.search(s) for s in missed)


def test_code_map_lists_every_module() -> None:
    """docs/code-map.md names every module of pesto/ (a new module gets its line)."""
    text = (REPO / "docs" / "code-map.md").read_text()
    listed = set(re.findall(r"^\| `(pesto/[\w/]+\.py)` \|", text, flags=re.M))
    modules = {str(p.relative_to(REPO)) for p in (REPO / "pesto").rglob("*.py")
               if p != REPO / "pesto" / "__init__.py"}
    assert listed == modules, (sorted(modules - listed), sorted(listed - modules))
