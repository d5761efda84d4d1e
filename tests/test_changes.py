"""A run's file changes as its tools report them: kept before the first write, listed, counted, put back.

The real store (SQLite in a temporary directory) and real files; the writes
are made here the way the write and edit tools make them: `before_write`,
the write, `after_write`.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from pathlib import Path

import pytest
import trio
from support import WAIT

from agentd.changes import ChangeLimits, ChangeRequests, RunChanges
from agentd.changes._record import DEFAULT_LIMITS
from agentd.errors import Conflict, InvalidRequest, NotFound
from agentd.protocol import run_complete
from agentd.runs import RunIndex
from agentd.store import SCHEMA_VERSION, RunRecord, Store, new_id
from agentd.store._schema import _SCHEMA, _SCHEMA_2, _SCHEMA_3
from agentd.tools._base import ToolError


class Recorded:
    """A store, a workspace with one session, and a run of it whose changes are recorded."""

    def __init__(self, store: Store, root: Path, workspace_id: str, session_id: str, run_id: str) -> None:
        self.store = store
        self.root = root
        self.workspace_id = workspace_id
        self.session_id = session_id
        self.run_id = run_id
        self.requests = ChangeRequests(store, RunIndex(store))

    def changes(self, limits: ChangeLimits = DEFAULT_LIMITS) -> RunChanges:
        return RunChanges(self.store, str(self.root), self.run_id, self.session_id, limits)

    async def finish(self, changes: RunChanges) -> None:
        await self.store.finish_run(run_complete(self.session_id, self.run_id, changes=changes.count))


async def new_run(store: Store, workspace_id: str, session_id: str) -> str:
    run_id = new_id("run")
    await store.create_run(RunRecord(run_id, workspace_id, session_id, "do it", "scripted", time.time()))
    await store.start_run(run_id)
    return run_id


@pytest.fixture
async def recorded(tmp_path: Path) -> Recorded:
    root = tmp_path / "project"
    root.mkdir()
    store = await Store.open(str(tmp_path / "agentd.db"))
    workspace = await store.workspace_for_path(str(root))
    session = await store.create_session(workspace.id, "s")
    run_id = await new_run(store, workspace.id, session.id)
    return Recorded(store, root, workspace.id, session.id, run_id)


async def write(changes: RunChanges, root: Path, path: str, content: bytes | None) -> None:
    """What a write tool does: tell, write (or remove, for None), tell again."""
    await changes.before_write(path)
    target = root / path
    if content is None:
        target.unlink()
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    await changes.after_write(path)


async def test_created_changed_and_deleted_files_are_listed_with_diffs_and_counted(recorded: Recorded) -> None:
    root = recorded.root
    (root / "kept.txt").write_text("one\ntwo\nthree\n")
    (root / "gone.txt").write_text("bye\n")
    changes = recorded.changes()
    await write(changes, root, "kept.txt", b"one\n2\nthree\n")
    await write(changes, root, "new/deep/made.txt", b"hello\n")
    await write(changes, root, "gone.txt", None)
    # Written twice: the before is the file as it was before the first write.
    await write(changes, root, "kept.txt", b"one\nTWO\nthree\n")
    assert changes.count == 3
    await recorded.finish(changes)

    listed = await recorded.requests.list(recorded.run_id)
    by_path = {f.path: f for f in listed.files}
    assert [f.path for f in listed.files] == ["kept.txt", "new/deep/made.txt", "gone.txt"]
    assert by_path["kept.txt"].action == "changed"
    assert by_path["kept.txt"].diff == ("--- a/kept.txt\n+++ b/kept.txt\n@@ -1,3 +1,3 @@\n one\n-two\n+TWO\n three\n")
    assert by_path["new/deep/made.txt"].action == "created"
    assert by_path["new/deep/made.txt"].diff == "--- /dev/null\n+++ b/new/deep/made.txt\n@@ -0,0 +1 @@\n+hello\n"
    assert by_path["gone.txt"].action == "deleted"
    assert by_path["gone.txt"].diff == "--- a/gone.txt\n+++ /dev/null\n@@ -1 +0,0 @@\n-bye\n"
    assert not any(f.changed_since or f.reverted for f in listed.files)
    assert listed.reverted_at is None


async def test_a_write_of_the_same_bytes_is_no_change(recorded: Recorded) -> None:
    (recorded.root / "same.txt").write_text("x\n")
    changes = recorded.changes()
    await write(changes, recorded.root, "same.txt", b"x\n")
    assert changes.count == 0
    await recorded.finish(changes)
    assert (await recorded.requests.list(recorded.run_id)).files == []


async def test_revert_puts_every_file_back_and_a_second_revert_is_refused(recorded: Recorded) -> None:
    root = recorded.root
    (root / "kept.txt").write_text("before\n")
    os.chmod(root / "kept.txt", 0o640)
    (root / "gone.sh").write_text("#!/bin/sh\n")
    os.chmod(root / "gone.sh", 0o755)
    (root / "src").mkdir()
    changes = recorded.changes()
    await write(changes, root, "kept.txt", b"after\n")
    await write(changes, root, "gone.sh", None)
    await write(changes, root, "new/deep/made.txt", b"hello\n")
    await write(changes, root, "src/also_new.txt", b"hi\n")
    await recorded.finish(changes)

    result = await recorded.requests.revert(recorded.run_id, force=False)
    assert {(f.path, f.action) for f in result.reverted} == {
        ("kept.txt", "changed"),
        ("gone.sh", "deleted"),
        ("new/deep/made.txt", "created"),
        ("src/also_new.txt", "created"),
    }
    assert result.refused == []
    assert (root / "kept.txt").read_text() == "before\n"
    assert (root / "kept.txt").stat().st_mode & 0o777 == 0o640
    assert (root / "gone.sh").read_text() == "#!/bin/sh\n"
    assert (root / "gone.sh").stat().st_mode & 0o777 == 0o755
    # The directories the run made for its files go with them; those that were there stay.
    assert not (root / "new").exists()
    assert (root / "src").is_dir() and not (root / "src" / "also_new.txt").exists()
    assert sorted(p.name for p in root.iterdir()) == ["gone.sh", "kept.txt", "src"]

    listed = await recorded.requests.list(recorded.run_id)
    assert all(f.reverted for f in listed.files) and listed.reverted_at is not None
    with pytest.raises(Conflict, match="already reverted"):
        await recorded.requests.revert(recorded.run_id, force=False)


async def test_a_file_changed_since_the_run_is_refused_by_name_and_nothing_is_reverted(recorded: Recorded) -> None:
    root = recorded.root
    (root / "a.txt").write_text("a0\n")
    (root / "b.txt").write_text("b0\n")
    changes = recorded.changes()
    await write(changes, root, "a.txt", b"a1\n")
    await write(changes, root, "b.txt", b"b1\n")
    await recorded.finish(changes)
    (root / "b.txt").write_text("the user's own edit\n")

    listed = await recorded.requests.list(recorded.run_id)
    assert {f.path: f.changed_since for f in listed.files} == {"a.txt": False, "b.txt": True}
    result = await recorded.requests.revert(recorded.run_id, force=False)
    assert result.reverted == []
    assert [(f.path, f.reason) for f in result.refused] == [
        ("b.txt", "changed since the run (it is no longer as the run left it)")
    ]
    # All or nothing: the file nobody touched is not reverted either.
    assert (root / "a.txt").read_text() == "a1\n"
    assert (root / "b.txt").read_text() == "the user's own edit\n"

    forced = await recorded.requests.revert(recorded.run_id, force=True)
    assert sorted(f.path for f in forced.reverted) == ["a.txt", "b.txt"] and forced.refused == []
    assert (root / "a.txt").read_text() == "a0\n"
    assert (root / "b.txt").read_text() == "b0\n"


async def test_a_file_removed_by_the_user_after_the_run_changed_it_is_refused_then_recreated_by_force(
    recorded: Recorded,
) -> None:
    root = recorded.root
    (root / "a.txt").write_text("a0\n")
    changes = recorded.changes()
    await write(changes, root, "a.txt", b"a1\n")
    await recorded.finish(changes)
    (root / "a.txt").unlink()
    result = await recorded.requests.revert(recorded.run_id, force=False)
    assert [f.path for f in result.refused] == ["a.txt"]
    assert not (root / "a.txt").exists()
    await recorded.requests.revert(recorded.run_id, force=True)
    assert (root / "a.txt").read_text() == "a0\n"


async def test_a_file_too_large_to_keep_is_listed_and_its_revert_refused_by_name(recorded: Recorded) -> None:
    root = recorded.root
    (root / "big.txt").write_bytes(b"x" * 100)
    (root / "small.txt").write_text("s0\n")
    changes = recorded.changes(ChangeLimits(max_file_bytes=50))
    await write(changes, root, "big.txt", b"y" * 100)
    await write(changes, root, "small.txt", b"s1\n")
    assert changes.count == 2
    await recorded.finish(changes)

    listed = await recorded.requests.list(recorded.run_id)
    big = next(f for f in listed.files if f.path == "big.txt")
    assert big.action == "changed"
    assert "content before the run was not kept: too large (100 bytes -> 100 bytes)" in big.diff
    result = await recorded.requests.revert(recorded.run_id, force=False)
    assert result.reverted == []
    assert [(f.path, f.reason) for f in result.refused] == [
        ("big.txt", "its content before the run was too large to keep (100 bytes)")
    ]
    assert (root / "small.txt").read_text() == "s1\n"
    # Forced, what can be put back is; the file that cannot stays as the run left it.
    forced = await recorded.requests.revert(recorded.run_id, force=True)
    assert [f.path for f in forced.reverted] == ["small.txt"]
    assert [f.path for f in forced.refused] == ["big.txt"]
    assert (root / "small.txt").read_text() == "s0\n"
    assert (root / "big.txt").read_bytes() == b"y" * 100


async def test_a_run_keeps_no_more_than_its_budget(recorded: Recorded) -> None:
    root = recorded.root
    for name in ("a", "b", "c"):
        (root / name).write_bytes(name.encode() * 40)
    changes = recorded.changes(ChangeLimits(max_file_bytes=50, max_run_bytes=100))
    for name in ("a", "b", "c"):
        await write(changes, root, name, b"new")
    await recorded.finish(changes)
    result = await recorded.requests.revert(recorded.run_id, force=True)
    # a (40) and its after (3), b (40) and its after (3) fit in 100; c's 40 do not.
    assert sorted(f.path for f in result.reverted) == ["a", "b"]
    assert [f.path for f in result.refused] == ["c"]


async def test_binary_files_are_said_to_have_changed(recorded: Recorded) -> None:
    (recorded.root / "logo.png").write_bytes(b"\x89PNG\x00\x01")
    changes = recorded.changes()
    await write(changes, recorded.root, "logo.png", b"\x89PNG\x00\x02\x03")
    await recorded.finish(changes)
    (listed,) = (await recorded.requests.list(recorded.run_id)).files
    assert listed.diff == "--- a/logo.png\n+++ b/logo.png\nbinary file changed (6 bytes -> 7 bytes)\n"


async def test_a_last_line_without_newline_is_marked_as_diff_marks_it(recorded: Recorded) -> None:
    (recorded.root / "t.txt").write_text("a\nb")
    changes = recorded.changes()
    await write(changes, recorded.root, "t.txt", b"a\nc")
    await recorded.finish(changes)
    (listed,) = (await recorded.requests.list(recorded.run_id)).files
    assert listed.diff == (
        "--- a/t.txt\n+++ b/t.txt\n@@ -1,2 +1,2 @@\n a\n-b\n\\ No newline at end of file\n"
        "+c\n\\ No newline at end of file\n"
    )


async def test_a_write_through_a_symlink_in_the_workspace_records_the_file_it_reaches(recorded: Recorded) -> None:
    root = recorded.root
    (root / "docs").mkdir()
    (root / "docs" / "notes.md").write_text("n0\n")
    os.symlink("docs", root / "link")
    changes = recorded.changes()
    await write(changes, root, "link/notes.md", b"n1\n")
    await recorded.finish(changes)
    assert [f.path for f in (await recorded.requests.list(recorded.run_id)).files] == ["docs/notes.md"]
    await recorded.requests.revert(recorded.run_id, force=False)
    assert (root / "docs" / "notes.md").read_text() == "n0\n"


async def test_paths_that_are_not_files_are_refused_before_the_write(recorded: Recorded) -> None:
    root = recorded.root
    os.mkfifo(root / "pipe")
    (root / "dir").mkdir()
    changes = recorded.changes()
    started = time.monotonic()
    async with trio.open_nursery() as nursery:

        async def rescue() -> None:
            # Should the open wait for a writer after all, one comes: the test ends, and fails below.
            await trio.sleep(WAIT)
            with contextlib.suppress(OSError):
                os.close(os.open(root / "pipe", os.O_WRONLY | os.O_NONBLOCK))

        nursery.start_soon(rescue)
        with pytest.raises(ToolError, match=r"^pipe: not written: it is not a regular file$"):
            await changes.before_write("pipe")
        nursery.cancel_scope.cancel()
    assert time.monotonic() - started < WAIT, "reading a FIFO waited for a writer"
    with pytest.raises(ToolError, match=r"^dir: not written: it is a directory$"):
        await changes.before_write("dir")
    with pytest.raises(ToolError, match=r"^\.\./outside\.txt: not written: it resolves outside the workspace$"):
        await changes.before_write("../outside.txt")


async def test_a_symlink_swapped_in_before_a_revert_is_not_followed(recorded: Recorded, tmp_path: Path) -> None:
    root = recorded.root
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "sub").mkdir()
    (root / "sub" / "f.txt").write_text("f0\n")
    changes = recorded.changes()
    await write(changes, root, "sub/f.txt", b"f1\n")
    await recorded.finish(changes)
    # The directory becomes a symlink to elsewhere, holding the same bytes.
    (outside / "f.txt").write_text("f1\n")
    (root / "sub" / "f.txt").unlink()
    (root / "sub").rmdir()
    os.symlink(outside, root / "sub")
    result = await recorded.requests.revert(recorded.run_id, force=True)
    assert result.reverted == []
    assert [f.path for f in result.refused] == ["sub/f.txt"]
    assert (outside / "f.txt").read_text() == "f1\n"


async def test_a_run_not_yet_ended_cannot_be_reverted(recorded: Recorded) -> None:
    with pytest.raises(Conflict, match=f"run {recorded.run_id} is still running"):
        await recorded.requests.revert(recorded.run_id, force=False)


async def test_the_last_run_of_a_session_is_the_one_picked(recorded: Recorded) -> None:
    store, requests = recorded.store, recorded.requests
    assert await requests.pick_run(None, recorded.workspace_id, recorded.session_id) == recorded.run_id
    later = await new_run(store, recorded.workspace_id, recorded.session_id)
    assert await requests.pick_run(None, recorded.workspace_id, recorded.session_id) == later
    empty = await store.create_session(recorded.workspace_id, "empty")
    with pytest.raises(NotFound, match=f"session {empty.id} has no runs"):
        await requests.pick_run(None, recorded.workspace_id, empty.id)
    with pytest.raises(NotFound, match="no such session 'ses_nope'"):
        await requests.pick_run(None, recorded.workspace_id, "ses_nope")
    with pytest.raises(InvalidRequest, match="not both"):
        await requests.pick_run(later, recorded.workspace_id, recorded.session_id)
    with pytest.raises(InvalidRequest, match="run_id: required"):
        await requests.pick_run(None, None, recorded.session_id)
    with pytest.raises(NotFound, match="no such run 'run_nope'"):
        await requests.list("run_nope")


async def test_deleting_the_session_deletes_its_runs_file_changes(recorded: Recorded) -> None:
    (recorded.root / "a.txt").write_text("a0\n")
    changes = recorded.changes()
    await write(changes, recorded.root, "a.txt", b"a1\n")
    await recorded.finish(changes)
    assert await recorded.store.file_changes(recorded.run_id)
    await recorded.store.delete_session(recorded.workspace_id, recorded.session_id)
    assert await recorded.store.file_changes(recorded.run_id) == []
    assert (await recorded.requests.list(recorded.run_id)).files == []


async def test_a_crash_mid_run_keeps_its_changes_and_counts_them_in_its_interrupted_complete(tmp_path: Path) -> None:
    root = tmp_path / "project"
    root.mkdir()
    path = str(tmp_path / "agentd.db")
    store = await Store.open(path)
    workspace = await store.workspace_for_path(str(root))
    session = await store.create_session(workspace.id, "s")
    run_id = await new_run(store, workspace.id, session.id)
    changes = RunChanges(store, str(root), run_id, session.id)
    await write(changes, root, "made.txt", b"m\n")
    # Never finished: the next open finds the run running.
    await store.aclose()
    store = await Store.open(path)
    try:
        (rc,) = store.recovered
        assert rc.run_id == run_id and rc.changes == 1
        result = await ChangeRequests(store, RunIndex(store)).revert(run_id, force=False)
        assert [f.path for f in result.reverted] == ["made.txt"]
        assert not (root / "made.txt").exists()
    finally:
        await store.aclose()


async def test_a_version_3_database_migrates_to_hold_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "agentd.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for schema in (_SCHEMA, _SCHEMA_2, _SCHEMA_3):
        for statement in schema.split(";"):
            if statement.strip():
                conn.execute(statement)
    conn.execute("PRAGMA user_version = 3")
    conn.close()
    store = await Store.open(str(path))
    try:
        workspace = await store.workspace_for_path(str(tmp_path))
        session = await store.create_session(workspace.id, "s")
        run_id = await new_run(store, workspace.id, session.id)
        changes = RunChanges(store, str(tmp_path), run_id, session.id)
        await write(changes, tmp_path, "x.txt", b"x\n")
        assert len(await store.file_changes(run_id)) == 1
    finally:
        await store.aclose()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,) == (5,)
    conn.close()


async def test_a_file_that_cannot_be_put_back_is_named_the_others_are_and_a_later_revert_tries_it_again(
    recorded: Recorded,
) -> None:
    root = recorded.root
    (root / "a.txt").write_text("a0\n")
    (root / "b.txt").write_text("b0\n")
    changes = recorded.changes()
    await write(changes, root, "a.txt", b"a1\n")
    await write(changes, root, "b.txt", b"b1\n")
    await recorded.finish(changes)
    # Where b.txt was, a directory holding something: nothing can be renamed over it.
    (root / "b.txt").unlink()
    (root / "b.txt").mkdir()
    (root / "b.txt" / "inside").write_text("x")
    result = await recorded.requests.revert(recorded.run_id, force=True)
    assert [f.path for f in result.reverted] == ["a.txt"]
    [(path, reason)] = [(f.path, f.reason) for f in result.refused]
    assert path == "b.txt" and reason.startswith("cannot be put back: ")
    assert (root / "a.txt").read_text() == "a0\n"
    assert not (await recorded.requests.list(recorded.run_id)).reverted_at

    (root / "b.txt" / "inside").unlink()
    (root / "b.txt").rmdir()
    again = await recorded.requests.revert(recorded.run_id, force=True)
    assert [f.path for f in again.reverted] == ["b.txt"] and again.refused == []
    assert (root / "b.txt").read_text() == "b0\n"
    assert (await recorded.requests.list(recorded.run_id)).reverted_at is not None


async def test_a_write_the_daemon_never_saw_finish_is_compared_with_the_file_as_it_is(recorded: Recorded) -> None:
    root = recorded.root
    (root / "a.txt").write_text("a0\n")
    changes = recorded.changes()
    await changes.before_write("a.txt")
    (root / "a.txt").write_text("a1\n")
    # No after_write: the daemon died mid-write.
    await recorded.finish(changes)
    (listed,) = (await recorded.requests.list(recorded.run_id)).files
    assert (listed.action, listed.changed_since) == ("changed", False)
    assert listed.diff == "--- a/a.txt\n+++ b/a.txt\n@@ -1 +1 @@\n-a0\n+a1\n"
    await recorded.requests.revert(recorded.run_id, force=False)
    assert (root / "a.txt").read_text() == "a0\n"
