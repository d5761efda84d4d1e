"""view, ls, glob, write and edit: what each shows or changes, and where each stops."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import trio
from tools_support import call, context, recorded

from agentd.tools import ToolContext, ToolError, _fs
from agentd.tools._write import write_recorded


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return Path(os.path.realpath(tmp_path))


@pytest.fixture
def ctx(root: Path) -> ToolContext:
    return context(str(root))


async def refused(ctx: ToolContext, name: str, **arguments: object) -> str:
    with pytest.raises(ToolError) as info:
        await call(ctx, name, **arguments)
    return str(info.value)


# view


async def test_view_numbers_lines_like_cat_n(ctx: ToolContext, root: Path) -> None:
    (root / "a.txt").write_text("one\ntwo\r\n\nfour")
    out = await call(ctx, "view", path="a.txt")
    assert out.output == "     1\tone\n     2\ttwo\n     3\t\n     4\tfour"
    assert out.summary == "lines 1-4"


async def test_view_offset_and_limit_and_where_to_go_on(ctx: ToolContext, root: Path) -> None:
    (root / "a.txt").write_text("".join(f"line {i}\n" for i in range(1, 11)))
    out = await call(ctx, "view", path="a.txt", offset=3, limit=2)
    assert out.output.splitlines() == [
        "     3\tline 3",
        "     4\tline 4",
        "[lines 3-4 shown (limit 2); more follow: view with offset=5]",
    ]
    last = await call(ctx, "view", path="a.txt", offset=9, limit=5)
    assert last.output == "     9\tline 9\n    10\tline 10"
    assert "offset 11 is past the end of a.txt (10 lines)" in await refused(ctx, "view", path="a.txt", offset=11)


async def test_view_default_line_count_comes_from_the_limits(root: Path) -> None:
    (root / "a.txt").write_text("x\n" * 10)
    out = await call(context(str(root), view_default_lines=3), "view", path="a.txt")
    assert out.output.count("\tx") == 3
    assert "view with offset=4" in out.output


async def test_view_stops_at_the_byte_cap(root: Path) -> None:
    (root / "a.txt").write_text(("y" * 99 + "\n") * 100)
    out = await call(context(str(root), view_max_bytes=1000), "view", path="a.txt")
    rows = [row for row in out.output.splitlines() if "\t" in row]
    # Each row is 6 digits, a tab, 99 characters and a newline: 107 bytes, nine fit.
    assert len(rows) == 9
    assert "[lines 1-9 shown (the output is capped at 1000 bytes); more follow: view with offset=10]" in out.output


async def test_view_cuts_long_lines(root: Path) -> None:
    (root / "a.txt").write_text("z" * 50 + "\nshort\n" + "w" * 100_000 + "\nend\n")
    out = await call(context(str(root), max_line_chars=10), "view", path="a.txt")
    assert out.output.splitlines() == [
        "     1\tzzzzzzzzzz [line cut at 10 characters]",
        "     2\tshort",
        "     3\twwwwwwwwww [line cut at 10 characters]",
        "     4\tend",
    ]


async def test_view_refuses_binary_files_and_directories(ctx: ToolContext, root: Path) -> None:
    (root / "bin").write_bytes(b"\x7fELF\x00\x01\x02")
    (root / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    (root / "dir").mkdir()
    assert "bin is a binary file" in await refused(ctx, "view", path="bin")
    assert "latin1.txt is not a text file: line 1 is not UTF-8" in await refused(ctx, "view", path="latin1.txt")
    assert "dir is a directory: use ls to list it" in await refused(ctx, "view", path="dir")
    assert "nope.txt does not exist" in await refused(ctx, "view", path="nope.txt")


async def test_view_does_not_hang_on_a_fifo(ctx: ToolContext, root: Path) -> None:
    os.mkfifo(root / "pipe")
    with trio.fail_after(5):
        assert "pipe is not a regular file" in await refused(ctx, "view", path="pipe")


async def test_view_of_an_empty_file_says_so(ctx: ToolContext, root: Path) -> None:
    (root / "empty").write_bytes(b"")
    assert (await call(ctx, "view", path="empty")).output == "empty is empty"


# ls


def make_tree(root: Path) -> None:
    (root / ".git" / "objects").mkdir(parents=True)
    (root / "src" / "pkg" / "deep").mkdir(parents=True)
    (root / "src" / "pkg" / "deep" / "x.py").write_text("")
    (root / "src" / "main.py").write_text("")
    (root / "src" / "main.pyc").write_text("")
    (root / "build").mkdir()
    (root / "build" / "out.o").write_text("")
    (root / "keep.log").write_text("")
    (root / "other.log").write_text("")
    (root / "README.md").write_text("")
    (root / ".gitignore").write_text("build/\n*.log\n!keep.log\n")
    (root / "src" / ".gitignore").write_text("*.pyc\n")


async def test_ls_is_a_tree_honouring_gitignore_and_skipping_git(ctx: ToolContext, root: Path) -> None:
    make_tree(root)
    out = await call(ctx, "ls")
    assert out.output.splitlines() == [
        "./",
        ".gitignore",
        "README.md",
        "keep.log",
        "src/",
        "  .gitignore",
        "  main.py",
        "  pkg/",
        "    deep/",
        "[directories at depth 3 are not expanded: ls them, or pass a larger depth]",
    ]


async def test_ls_of_a_subdirectory_honours_the_gitignore_files_above_it(ctx: ToolContext, root: Path) -> None:
    make_tree(root)
    (root / "src" / "debug.log").write_text("")
    out = await call(ctx, "ls", path="src", depth=1)
    assert out.output.splitlines() == ["src/", ".gitignore", "main.py", "pkg/", *out.output.splitlines()[4:]]
    assert "debug.log" not in out.output and "main.pyc" not in out.output


async def test_ls_depth_and_entry_caps(root: Path) -> None:
    make_tree(root)
    ctx = context(str(root), max_entries=3)
    out = await call(ctx, "ls", depth=5)
    assert out.output.splitlines() == [
        "./",
        ".gitignore",
        "README.md",
        "keep.log",
        "[listing capped at 3 entries: ls a subdirectory to see more]",
    ]
    assert out.summary == "3 entries (capped)"
    deep = await call(context(str(root)), "ls", depth=5)
    assert "      x.py" in deep.output and "not expanded" not in deep.output
    assert "ls: bad arguments: depth must be at least 1, got 0" in await refused(ctx, "ls", depth=0)


async def test_ls_refuses_a_file(ctx: ToolContext, root: Path) -> None:
    (root / "f").write_text("")
    assert "f is not a directory: use view" in await refused(ctx, "ls", path="f")


# glob


async def test_glob_matches_by_gitignore_rules_sorted_by_path(ctx: ToolContext, root: Path) -> None:
    make_tree(root)
    assert (await call(ctx, "glob", pattern="*.py")).output == "src/main.py\nsrc/pkg/deep/x.py"
    assert (await call(ctx, "glob", pattern="src/*.py")).output == "src/main.py"
    assert (await call(ctx, "glob", pattern="**/deep/*")).output == "src/pkg/deep/x.py"
    # Relative to `path`, shown relative to the root.
    assert (await call(ctx, "glob", pattern="deep/*.py", path="src/pkg")).output == "src/pkg/deep/x.py"
    # Ignored files and .git are not found, even when named.
    assert (await call(ctx, "glob", pattern="*.o")).output.startswith("no files match")
    assert (await call(ctx, "glob", pattern="*.log")).output == "keep.log"
    assert (await call(ctx, "glob", pattern="objects/**")).summary == "0 files"


async def test_glob_is_capped(root: Path) -> None:
    for i in range(5):
        (root / f"f{i}.txt").write_text("")
    out = await call(context(str(root), max_entries=2), "glob", pattern="*.txt")
    assert out.output == "f0.txt\nf1.txt\n[capped at 2 files: narrow the pattern or the path]"
    assert out.summary == "2 files (capped)"


async def test_glob_refuses_an_empty_or_negated_pattern(ctx: ToolContext) -> None:
    assert "the pattern is empty" in await refused(ctx, "glob", pattern=" ")
    assert "cannot start with '!'" in await refused(ctx, "glob", pattern="!x")


# write


async def test_write_creates_a_file_and_its_parents_and_records_it(ctx: ToolContext, root: Path) -> None:
    out = await call(ctx, "write", path="a/b/c.txt", content="héllo\n")
    assert (root / "a" / "b" / "c.txt").read_text() == "héllo\n"
    assert out.output == "created a/b/c.txt (7 bytes)"
    assert recorded(ctx) == [("before", "a/b/c.txt"), ("after", "a/b/c.txt")]


async def test_write_overwrites_keeping_the_mode_and_leaves_no_temporary_file(ctx: ToolContext, root: Path) -> None:
    script = root / "run.sh"
    script.write_text("old\n")
    script.chmod(0o751)
    out = await call(ctx, "write", path="run.sh", content="new\n")
    assert out.output == "overwrote run.sh (4 bytes)"
    assert script.read_text() == "new\n"
    assert stat.S_IMODE(script.stat().st_mode) == 0o751
    assert sorted(p.name for p in root.iterdir()) == ["run.sh"]


async def test_write_is_one_rename_so_an_open_reader_keeps_the_old_file(ctx: ToolContext, root: Path) -> None:
    (root / "f").write_text("old content\n")
    with open(root / "f") as reader:  # noqa: ASYNC230  # a reader that holds the old file
        await call(ctx, "write", path="f", content="new\n")
        assert reader.read() == "old content\n"
    assert (root / "f").read_text() == "new\n"


async def test_write_refuses_a_directory(ctx: ToolContext, root: Path) -> None:
    (root / "d").mkdir()
    assert "d is a directory, not a file" in await refused(ctx, "write", path="d", content="x")
    assert "is a directory, not a file" in await refused(ctx, "write", path=".", content="x")
    assert recorded(ctx) == []


async def test_write_records_after_a_failed_write_too(ctx: ToolContext, root: Path) -> None:
    (root / "gone").mkdir()
    target = _fs.resolve_target(str(root), "gone/f", create_dirs=False)
    try:
        # Nothing can be created in a directory removed since it was opened, whoever asks.
        (root / "gone").rmdir()
        with pytest.raises(ToolError, match="cannot write gone/f"):
            await write_recorded(ctx, target, b"x", None)
    finally:
        target.close()
    assert recorded(ctx) == [("before", "gone/f"), ("after", "gone/f")]


# edit


async def test_edit_replaces_the_one_occurrence(ctx: ToolContext, root: Path) -> None:
    (root / "f.py").write_text("a = 1\nb = 2\n")
    (root / "f.py").chmod(0o640)
    out = await call(ctx, "edit", path="f.py", old_string="b = 2", new_string="b = 3")
    assert (root / "f.py").read_text() == "a = 1\nb = 3\n"
    assert stat.S_IMODE((root / "f.py").stat().st_mode) == 0o640
    assert out.output == "edited f.py: 1 replacement"
    assert recorded(ctx) == [("before", "f.py"), ("after", "f.py")]


async def test_edit_missing_and_ambiguous_strings_are_named(ctx: ToolContext, root: Path) -> None:
    (root / "f.py").write_text("x = 1\nx = 1\n")
    assert await refused(ctx, "edit", path="f.py", old_string="y", new_string="z") == "old_string not found in f.py"
    message = await refused(ctx, "edit", path="f.py", old_string="x = 1", new_string="x = 2")
    assert message == "old_string occurs 2 times in f.py: pass replace_all, or more context to make it unique"
    assert "nothing to change" in await refused(ctx, "edit", path="f.py", old_string="x", new_string="x")
    assert "nope.py does not exist" in await refused(ctx, "edit", path="nope.py", old_string="x", new_string="y")
    assert (root / "f.py").read_text() == "x = 1\nx = 1\n"
    assert recorded(ctx) == []


async def test_edit_replace_all(ctx: ToolContext, root: Path) -> None:
    (root / "f.py").write_text("x = 1\nx = 1\n")
    out = await call(ctx, "edit", path="f.py", old_string="x", new_string="y", replace_all=True)
    assert (root / "f.py").read_text() == "y = 1\ny = 1\n"
    assert out.summary == "edited f.py (2 replacements)"


async def test_edit_with_empty_old_string_creates_only_a_new_file(ctx: ToolContext, root: Path) -> None:
    out = await call(ctx, "edit", path="new/f.py", old_string="", new_string="print()\n")
    assert out.output == "created new/f.py (8 bytes)"
    assert (root / "new" / "f.py").read_text() == "print()\n"
    message = await refused(ctx, "edit", path="new/f.py", old_string="", new_string="other\n")
    assert "new/f.py exists: an empty old_string creates a file only where there is none" in message
    assert (root / "new" / "f.py").read_text() == "print()\n"


async def test_edit_refuses_binary_and_too_large_files(root: Path) -> None:
    ctx = context(str(root), edit_max_bytes=100)
    (root / "latin1.txt").write_bytes(b"caf\xe9\n")
    (root / "big.txt").write_text("x" * 101)
    assert "latin1.txt is not a text file" in await refused(
        ctx, "edit", path="latin1.txt", old_string="c", new_string="d"
    )
    assert "big.txt is larger than 100 bytes" in await refused(
        ctx, "edit", path="big.txt", old_string="x", new_string="y"
    )


async def test_ls_and_glob_of_an_ignored_directory_named_as_the_path_list_it(ctx: ToolContext, root: Path) -> None:
    make_tree(root)
    assert (await call(ctx, "ls", path="build")).output == "build/\nout.o"
    assert (await call(ctx, "glob", pattern="*.o", path="build")).output == "build/out.o"
