"""grep finds the same lines, in the same order, by ripgrep and by Python."""

from __future__ import annotations

import os
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio
from tools_support import call, context

from agentd.tools import ToolError, ToolLimits, ToolOutput
from agentd.tools._grep import GrepParams, Match, _open_dir, _rg_in, format_matches, search_python, search_rg

RG = shutil.which("rg")

Search = Callable[[str, GrepParams, int], Awaitable[ToolOutput]]


def _python(limits: ToolLimits) -> Search:
    async def search(root: str, params: GrepParams, limit: int) -> ToolOutput:
        found, more = await trio.to_thread.run_sync(search_python, root, params, limit)
        return format_matches(found, more, limits)

    return search


def _rg(limits: ToolLimits) -> Search:
    if RG is None:
        pytest.skip("ripgrep (rg) is not installed")
    rg = RG

    async def search(root: str, params: GrepParams, limit: int) -> ToolOutput:
        found, more = await search_rg(rg, root, params, limit)
        return format_matches(found, more, limits)

    return search


@pytest.fixture(params=["python", "rg"])
def grep(request: pytest.FixtureRequest) -> Search:
    limits = ToolLimits()
    return _python(limits) if request.param == "python" else _rg(limits)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = Path(os.path.realpath(tmp_path))
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "src" / "main.py").write_text("import os\n\ndef main():\n    return os.getcwd()\n")
    (root / "src" / "pkg" / "util.py").write_text("def helper():\n    return 'Main'\n")
    (root / "src" / "notes.txt").write_text("main idea\n")
    (root / "build").mkdir()
    (root / "build" / "main.py").write_text("def main(): pass\n")
    (root / ".hidden.py").write_text("def main_hidden(): pass\n")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("def main\n")
    (root / "blob.bin").write_bytes(b"def main\x00\x01\x02")
    (root / ".gitignore").write_text("build/\n")
    return root


async def test_matches_are_path_line_text_in_path_order(grep: Search, root: Path) -> None:
    out = await grep(str(root), GrepParams("def main"), 100)
    assert out.output == ".hidden.py:1:def main_hidden(): pass\nsrc/main.py:3:def main():"
    assert out.summary == "2 matches in 2 files"


async def test_path_include_and_case(grep: Search, root: Path) -> None:
    found = await grep(str(root), GrepParams("main", path="src", include="*.py", case_insensitive=True), 100)
    assert found.output == "src/main.py:3:def main():\nsrc/pkg/util.py:2:    return 'Main'"
    one_file = await grep(str(root), GrepParams("return", path="src/pkg/util.py"), 100)
    assert one_file.output == "src/pkg/util.py:2:    return 'Main'"
    assert (await grep(str(root), GrepParams("nothing like this"), 100)).output == "no matches"


async def test_regex_syntax(grep: Search, root: Path) -> None:
    out = await grep(str(root), GrepParams(r"^\s+return \w+\.", include="*.py"), 100)
    assert out.output == "src/main.py:4:    return os.getcwd()"


async def test_capped_at_the_limit(grep: Search, root: Path) -> None:
    (root / "many.txt").write_text("hit\n" * 50)
    out = await grep(str(root), GrepParams("hit"), 3)
    assert out.output.splitlines() == [
        "many.txt:1:hit",
        "many.txt:2:hit",
        "many.txt:3:hit",
        "[3 matches shown, more not: narrow the pattern, the path or include]",
    ]
    assert out.summary == "3 matches in 1 files (capped)"


async def test_bad_regex_is_a_tool_error(grep: Search, root: Path) -> None:
    with pytest.raises(ToolError, match="regex|grep failed"):
        await grep(str(root), GrepParams("(unclosed"), 100)


async def test_gitignore_below_the_search_root_and_negation(grep: Search, root: Path) -> None:
    (root / "src" / ".gitignore").write_text("*.txt\n!keep.txt\n")
    (root / "src" / "keep.txt").write_text("main kept\n")
    out = await grep(str(root), GrepParams("main", path="src"), 100)
    assert "notes.txt" not in out.output
    assert "src/keep.txt:1:main kept" in out.output


async def test_python_search_alone_escapes_are_refused(root: Path) -> None:
    with pytest.raises(ToolError, match="outside the workspace"):
        search_python(str(root), GrepParams("x", path="../"), 10)


async def test_the_tool_output_is_the_same_from_both_searches(root: Path) -> None:
    if RG is None:
        pytest.skip("ripgrep (rg) is not installed")
    (root / "long.txt").write_text("main " + "x" * 50 + "\n")
    limits = ToolLimits(max_line_chars=20)
    params = GrepParams("main", case_insensitive=True)
    assert (await _python(limits)(str(root), params, 100)) == (await _rg(limits)(str(root), params, 100))


async def test_the_grep_tool_runs_whichever_search_there_is(root: Path) -> None:
    out = await call(context(str(root), max_line_chars=8), "grep", pattern="def main", path="src")
    assert out.output == "src/main.py:3:def main [line cut at 8 characters]"


async def test_output_is_capped_in_characters(root: Path) -> None:
    (root / "many.txt").write_text(("m" * 30 + "\n") * 10)
    limits = ToolLimits(max_output_chars=100)
    out = await _python(limits)(str(root), GrepParams("m+"), 100)
    # Each row is "many.txt:N:" and 30 characters, 42 with its newline: two fit in 100.
    assert out.output.splitlines()[2:] == ["[2 matches shown, more not: narrow the pattern, the path or include]"]


async def test_ripgrep_searches_the_directory_the_walk_opened_even_when_swapped(root: Path) -> None:
    if RG is None:
        pytest.skip("ripgrep (rg) is not installed")
    outside = root.parent / (root.name + "-outside")
    outside.mkdir()
    (outside / "main.py").write_text("def main(): outside\n")
    opened = _open_dir(str(root), "src")
    assert opened is not None
    try:
        (root / "src").rename(root / "src-moved")
        (root / "src").symlink_to(outside)
        found, more = await _rg_in(RG, opened, GrepParams("def main"), 100)
    finally:
        os.close(opened.fd)
    assert (found, more) == ([Match("src/main.py", 3, "def main():")], False)


async def test_an_ignored_directory_named_as_the_path_is_searched(grep: Search, root: Path) -> None:
    (root / "build" / "sub").mkdir()
    (root / "build" / "sub" / "gen.py").write_text("def main(): generated\n")
    (root / "build" / ".gitignore").write_text("sub/\n")
    out = await grep(str(root), GrepParams("def main", path="build"), 100)
    assert out.output == "build/main.py:1:def main(): pass"
    inner = await grep(str(root), GrepParams("def main", path="build/sub"), 100)
    assert inner.output == "build/sub/gen.py:1:def main(): generated"
