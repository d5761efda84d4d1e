"""Every path a tool is given stays inside the workspace root, however it is spelled or swapped."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tools_support import call, context, recorded

from agentd.tools import ToolContext, ToolError, _fs


@pytest.fixture
def root(tmp_path: Path) -> Path:
    real = Path(os.path.realpath(tmp_path))
    (real / "ws" / "src").mkdir(parents=True)
    (real / "ws" / "src" / "main.py").write_text("print('inside')\n")
    (real / "outside").mkdir()
    (real / "outside" / "secret.txt").write_text("the secret\n")
    return real / "ws"


@pytest.fixture
def outside(root: Path) -> Path:
    return root.parent / "outside"


@pytest.fixture
def ctx(root: Path) -> ToolContext:
    return context(str(root))


async def refused(ctx: ToolContext, name: str, **arguments: object) -> str:
    with pytest.raises(ToolError) as info:
        await call(ctx, name, **arguments)
    return str(info.value)


@pytest.mark.parametrize(
    ("name", "arguments"),
    [
        ("view", {"path": "../outside/secret.txt"}),
        ("view", {"path": "src/../../outside/secret.txt"}),
        ("ls", {"path": ".."}),
        ("glob", {"pattern": "*", "path": "../outside"}),
        ("grep", {"pattern": "secret", "path": "../outside"}),
        ("write", {"path": "../outside/new.txt", "content": "x"}),
        ("edit", {"path": "../outside/secret.txt", "old_string": "secret", "new_string": "public"}),
    ],
)
async def test_dot_dot_out_of_the_root_is_refused(
    ctx: ToolContext, outside: Path, name: str, arguments: dict[str, object]
) -> None:
    message = await refused(ctx, name, **arguments)
    assert "outside the workspace" in message
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert (outside / "secret.txt").read_text() == "the secret\n"
    assert recorded(ctx) == []


async def test_dot_dot_that_stays_inside_is_fine(ctx: ToolContext) -> None:
    out = await call(ctx, "view", path="src/../src/./main.py")
    assert "print('inside')" in out.output


async def test_absolute_path_elsewhere_is_refused(ctx: ToolContext, outside: Path) -> None:
    assert "outside the workspace" in await refused(ctx, "view", path=str(outside / "secret.txt"))
    assert "outside the workspace" in await refused(ctx, "write", path=str(outside / "new.txt"), content="x")
    assert "outside the workspace" in await refused(ctx, "view", path="/etc/passwd")
    assert not (outside / "new.txt").exists()


async def test_absolute_path_inside_the_root_is_fine(ctx: ToolContext, root: Path) -> None:
    out = await call(ctx, "view", path=str(root / "src" / "main.py"))
    assert "print('inside')" in out.output


async def test_a_prefix_of_the_root_name_is_not_the_root(ctx: ToolContext, root: Path) -> None:
    sibling = root.parent / (root.name + "2")
    sibling.mkdir()
    (sibling / "f").write_text("x")
    assert "outside the workspace" in await refused(ctx, "view", path=str(sibling / "f"))


async def test_symlinked_file_pointing_outside_is_refused(ctx: ToolContext, root: Path, outside: Path) -> None:
    (root / "leak.txt").symlink_to(outside / "secret.txt")
    (root / "rel-leak.txt").symlink_to("../outside/secret.txt")
    for path in ("leak.txt", "rel-leak.txt"):
        message = await refused(ctx, "view", path=path)
        assert f"the symlink {path} points outside the workspace" in message
        assert "the secret" not in message
        await refused(ctx, "write", path=path, content="overwritten")
        await refused(ctx, "edit", path=path, old_string="secret", new_string="public")
    assert (outside / "secret.txt").read_text() == "the secret\n"


async def test_symlinked_directory_pointing_outside_is_refused(ctx: ToolContext, root: Path, outside: Path) -> None:
    (root / "out").symlink_to(outside)
    assert "the symlink out points outside" in await refused(ctx, "view", path="out/secret.txt")
    assert "the symlink out points outside" in await refused(ctx, "ls", path="out")
    assert "the symlink out points outside" in await refused(ctx, "write", path="out/new.txt", content="x")
    assert "the symlink out points outside" in await refused(ctx, "grep", pattern="secret", path="out")
    assert not (outside / "new.txt").exists()


async def test_dangling_symlink_to_outside_cannot_create_a_file_there(
    ctx: ToolContext, root: Path, outside: Path
) -> None:
    (root / "trap").symlink_to(outside / "created-by-agent")
    assert "points outside" in await refused(ctx, "write", path="trap", content="x")
    assert "points outside" in await refused(ctx, "edit", path="trap", old_string="", new_string="x")
    assert not (outside / "created-by-agent").exists()


async def test_walks_do_not_follow_symlinks_out(ctx: ToolContext, root: Path, outside: Path) -> None:
    (root / "out").symlink_to(outside)
    (root / "leak.txt").symlink_to(outside / "secret.txt")
    assert "secret" not in (await call(ctx, "glob", pattern="**/*.txt")).output
    assert (await call(ctx, "grep", pattern="the secret")).output == "no matches"
    listing = (await call(ctx, "ls")).output
    # Shown as links, with their targets; never entered.
    assert f"out -> {outside}\n" in listing
    assert "\n  secret.txt" not in listing


async def test_symlinks_inside_the_workspace_are_followed(ctx: ToolContext, root: Path) -> None:
    (root / "lib").symlink_to("src")
    (root / "abs-lib").symlink_to(root / "src")
    (root / "main-link.py").symlink_to("src/main.py")
    for path in ("lib/main.py", "abs-lib/main.py", "main-link.py"):
        assert "print('inside')" in (await call(ctx, "view", path=path)).output
    # A write through an in-workspace link changes (and records) the file it names.
    await call(ctx, "edit", path="main-link.py", old_string="inside", new_string="edited")
    assert (root / "src" / "main.py").read_text() == "print('edited')\n"
    assert (root / "main-link.py").is_symlink()
    assert recorded(ctx) == [("before", "src/main.py"), ("after", "src/main.py")]


async def test_symlink_loop_is_refused(ctx: ToolContext, root: Path) -> None:
    (root / "a").symlink_to("b")
    (root / "b").symlink_to("a")
    assert "too many levels of symbolic links" in await refused(ctx, "view", path="a")


async def test_symlinked_workspace_root_is_reachable_through_the_link(tmp_path: Path, root: Path) -> None:
    # The user opened the workspace as a link; the daemon holds its real path.
    link = Path(os.path.realpath(tmp_path)) / "link-to-ws"
    link.symlink_to(root)
    ctx = context(str(root))
    out = await call(ctx, "view", path=str(link / "src" / "main.py"))
    assert "print('inside')" in out.output
    await call(ctx, "write", path=str(link / "src" / "new.py"), content="x = 1\n")
    assert (root / "src" / "new.py").read_text() == "x = 1\n"
    assert recorded(ctx) == [("before", "src/new.py"), ("after", "src/new.py")]
    # Through the link, '..' still climbs out of the real root.
    assert "outside the workspace" in await refused(ctx, "view", path=str(link / ".." / "outside" / "secret.txt"))


async def test_root_swapped_for_a_symlink_is_refused(root: Path, outside: Path) -> None:
    ctx = context(str(root))
    root.rename(root.parent / "moved")
    root.symlink_to(outside)
    message = await refused(ctx, "view", path="secret.txt")
    assert "cannot open the workspace root" in message


def test_write_target_swapped_for_a_symlink_after_the_check_stays_inside(root: Path, outside: Path) -> None:
    """The check (the walk to src/) and the use (the write) are apart; src/ is swapped between them."""
    target = _fs.resolve_target(str(root), "src/new.txt", create_dirs=False)
    try:
        (root / "src").rename(root / "src-moved")
        (root / "src").symlink_to(outside)
        _fs.replace_file(target, b"written\n", None)
    finally:
        target.close()
    assert not (outside / "new.txt").exists()
    # The write went where the check looked: the directory that was src/ then.
    assert (root / "src-moved" / "new.txt").read_text() == "written\n"


def test_file_swapped_for_a_symlink_before_the_read_is_refused(root: Path, outside: Path) -> None:
    target = _fs.resolve_target(str(root), "src/main.py", create_dirs=False)
    try:
        (root / "src" / "main.py").unlink()
        (root / "src" / "main.py").symlink_to(outside / "secret.txt")
        with pytest.raises(ToolError, match="became a symlink during the call"):
            _fs.read_at(target, 1024)
        # The rename replaces the link itself; it does not write through it.
        _fs.replace_file(target, b"new\n", None)
    finally:
        target.close()
    assert (outside / "secret.txt").read_text() == "the secret\n"
    assert (root / "src" / "main.py").read_text() == "new\n"
    assert not (root / "src" / "main.py").is_symlink()


def test_directory_swapped_after_it_was_opened_is_read_where_it_was(root: Path, outside: Path) -> None:
    (outside / "main.py").write_text("outside main\n")
    opened = _fs.open_path(str(root), "src")
    try:
        (root / "src").rename(root / "src-moved")
        (root / "src").symlink_to(outside)
        fd = os.open("main.py", os.O_RDONLY | os.O_NOFOLLOW, dir_fd=opened.fd)
        with open(fd, "rb") as f:
            assert f.read() == b"print('inside')\n"
    finally:
        os.close(opened.fd)


async def test_nul_in_a_path_is_refused(ctx: ToolContext) -> None:
    assert "NUL" in await refused(ctx, "view", path="src/\x00main.py")
