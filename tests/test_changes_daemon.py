"""`run.changes`, `run.revert`, `agentctl diff` and `agentctl undo` through a real daemon.

The run's changes are recorded before the daemon starts, the way its tools
record them (`RunChanges` on the daemon's own database, the writes made
between `before_write` and `after_write`); then a real agentd serves them
and the real agentctl shows and undoes them.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from support import WAIT, DaemonFactory, agentctl_command, open_workspace, run_agentctl

from agentctl.client import RpcError
from agentd.changes import RunChanges
from agentd.protocol import run_complete
from agentd.rpc import ErrorCode
from agentd.store import RunRecord, Store, new_id


class Prepared:
    def __init__(self, workspace_id: str, session_id: str, run_id: str) -> None:
        self.workspace_id = workspace_id
        self.session_id = session_id
        self.run_id = run_id


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


async def prepare(env: dict[str, str], project: Path, writes: list[tuple[str, bytes | None]]) -> Prepared:
    """A finished run in a new session of `project` that made `writes`, in the daemon's database."""
    store = await Store.open(str(Path(env["XDG_DATA_HOME"]) / "agentd" / "agentd.db"))
    try:
        workspace = await store.workspace_for_path(os.path.realpath(project))
        session = await store.create_session(workspace.id, "made by hand")
        run_id = new_id("run")
        await store.create_run(RunRecord(run_id, workspace.id, session.id, "edit", "scripted", time.time()))
        await store.start_run(run_id)
        changes = RunChanges(store, str(project), run_id, session.id)
        for path, content in writes:
            await write(changes, project, path, content)
        await store.finish_run(run_complete(session.id, run_id, changes=changes.count))
        return Prepared(workspace.id, session.id, run_id)
    finally:
        await store.aclose()


@pytest.fixture
def edited(project: Path) -> list[tuple[str, bytes | None]]:
    """A project with two files, and a run's writes: one changed, one created, one deleted."""
    (project / "main.py").write_text("print('hello')\n")
    (project / "old.txt").write_text("old\n")
    return [("main.py", b"print('hello, world')\n"), ("pkg/new.py", b"x = 1\n"), ("old.txt", None)]


MAIN_DIFF = "--- a/main.py\n+++ b/main.py\n@@ -1 +1 @@\n-print('hello')\n+print('hello, world')\n"
NEW_DIFF = "--- /dev/null\n+++ b/pkg/new.py\n@@ -0,0 +1 @@\n+x = 1\n"
OLD_DIFF = "--- a/old.txt\n+++ /dev/null\n@@ -1 +0,0 @@\n-old\n"


def ok(result: subprocess.CompletedProcess[bytes]) -> str:
    assert b"Traceback" not in result.stderr, result.stderr.decode()
    assert result.returncode == 0, (result.stdout, result.stderr)
    return result.stdout.decode()


async def test_run_changes_lists_the_runs_files_by_run_id_and_as_the_sessions_last_run(
    start_daemon: DaemonFactory, env: dict[str, str], project: Path, edited: list[tuple[str, bytes | None]]
) -> None:
    prepared = await prepare(env, project, edited)
    daemon = start_daemon()
    async with daemon.client() as client:
        by_id = await client.call("run.changes", {"run_id": prepared.run_id})
        assert by_id == {
            "run_id": prepared.run_id,
            "session_id": prepared.session_id,
            "files": [
                {"path": "main.py", "action": "changed", "diff": MAIN_DIFF, "changed_since": False, "reverted": False},
                {
                    "path": "pkg/new.py",
                    "action": "created",
                    "diff": NEW_DIFF,
                    "changed_since": False,
                    "reverted": False,
                },
                {"path": "old.txt", "action": "deleted", "diff": OLD_DIFF, "changed_since": False, "reverted": False},
            ],
            "reverted_at": None,
        }
        # The session form needs the workspace open, as every method naming one does.
        session_ref = {"workspace_id": prepared.workspace_id, "session_id": prepared.session_id}
        with pytest.raises(RpcError) as not_open:
            await client.call("run.changes", session_ref)
        assert not_open.value.code == ErrorCode.NOT_FOUND
        await open_workspace(client, project)
        assert await client.call("run.changes", session_ref) == by_id
        with pytest.raises(RpcError) as both:
            await client.call("run.changes", {"run_id": prepared.run_id, **session_ref})
        assert both.value.code == ErrorCode.INVALID_PARAMS and "not both" in both.value.message
        with pytest.raises(RpcError) as unknown:
            await client.call("run.revert", {"run_id": "nope"})
        assert unknown.value.code == ErrorCode.NOT_FOUND and unknown.value.message == "run_id: no such run 'nope'"


async def test_agentctl_diff_prints_the_last_runs_diff_and_says_what_it_is_on_stderr(
    start_daemon: DaemonFactory, env: dict[str, str], project: Path, edited: list[tuple[str, bytes | None]]
) -> None:
    prepared = await prepare(env, project, edited)
    start_daemon()
    result = await run_agentctl("diff", env=env, cwd=project)
    assert ok(result) == MAIN_DIFF + NEW_DIFF + OLD_DIFF  # no colour: stdout is not a terminal
    assert result.stderr.decode() == (
        f"agentctl diff: run {prepared.run_id}: 3 files (1 created, 1 changed, 1 deleted)\n"
    )
    by_run = await run_agentctl("diff", "--run", prepared.run_id, "--json", env=env, cwd=project)
    assert [f["path"] for f in json.loads(ok(by_run))["files"]] == ["main.py", "pkg/new.py", "old.txt"]


async def test_agentctl_diff_is_in_colour_on_a_terminal_only(
    start_daemon: DaemonFactory, env: dict[str, str], project: Path, edited: list[tuple[str, bytes | None]]
) -> None:
    await prepare(env, project, edited)
    start_daemon()
    controller, terminal = pty.openpty()
    try:
        with trio.fail_after(WAIT * 2):
            process = await trio.run_process(
                [*agentctl_command(), "diff"],
                env={k: v for k, v in env.items() if k != "NO_COLOR"},
                cwd=project,
                stdin=b"",
                stdout=terminal,
                capture_stderr=True,
                check=False,
            )
        os.close(terminal)
        terminal = -1
        output = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the terminal's other end is closed and everything read
                break
            if not chunk:
                break
            output += chunk
    finally:
        if terminal != -1:
            os.close(terminal)
        os.close(controller)
    assert process.returncode == 0, process.stderr
    text = output.decode().replace("\r\n", "\n")
    assert "\x1b[31m-print('hello')\x1b[0m\n" in text
    assert "\x1b[32m+print('hello, world')\x1b[0m\n" in text
    assert "\x1b[36m@@ -1 +1 @@\x1b[0m\n" in text


async def test_agentctl_undo_refuses_a_file_the_user_edited_by_name_and_force_reverts_everything(
    start_daemon: DaemonFactory, env: dict[str, str], project: Path, edited: list[tuple[str, bytes | None]]
) -> None:
    prepared = await prepare(env, project, edited)
    start_daemon()
    # The user goes on editing what the run left.
    (project / "main.py").write_text("print('hello, world')\nprint('mine')\n")
    refused = await run_agentctl("undo", env=env, cwd=project)
    assert refused.returncode == 1 and b"Traceback" not in refused.stderr
    assert refused.stdout == b""
    assert refused.stderr.decode() == (
        "agentctl undo: main.py: changed since the run (it is no longer as the run left it)\n"
        f"agentctl undo: nothing undone; `agentctl undo --run {prepared.run_id} --force` puts back"
        " what it can, files changed since included\n"
    )
    # All or nothing: the run's other files are as it left them.
    assert (project / "pkg" / "new.py").exists() and not (project / "old.txt").exists()
    diff = await run_agentctl("diff", env=env, cwd=project)
    assert "agentctl diff: main.py has changed since the run\n" in diff.stderr.decode()

    forced = await run_agentctl("undo", "--force", env=env, cwd=project)
    assert ok(forced) == (
        "restored main.py\n"
        "removed pkg/new.py (the run created it)\n"
        "recreated old.txt\n"
        f"undid run {prepared.run_id}: 3 files put back\n"
    )
    assert (project / "main.py").read_text() == "print('hello')\n"
    assert (project / "old.txt").read_text() == "old\n"
    assert not (project / "pkg").exists()

    again = await run_agentctl("undo", env=env, cwd=project)
    assert ok(again) == f"run {prepared.run_id} was already undone; nothing to undo\n"
    undone = await run_agentctl("diff", env=env, cwd=project)
    assert "(undone since)" in undone.stderr.decode()


async def test_agentctl_undo_puts_back_a_run_nobody_touched_since(
    start_daemon: DaemonFactory, env: dict[str, str], project: Path, edited: list[tuple[str, bytes | None]]
) -> None:
    prepared = await prepare(env, project, edited)
    start_daemon()
    result = await run_agentctl("undo", "--run", prepared.run_id, "--json", env=env, cwd=project)
    reply: dict[str, Any] = json.loads(ok(result))
    assert reply["refused"] == []
    assert [(f["path"], f["action"]) for f in reply["reverted"]] == [
        ("main.py", "changed"),
        ("pkg/new.py", "created"),
        ("old.txt", "deleted"),
    ]
    assert sorted(p.name for p in project.iterdir()) == ["main.py", "old.txt"]


async def test_diff_and_undo_say_when_there_is_nothing_to_show_or_undo(
    start_daemon: DaemonFactory, env: dict[str, str], project: Path
) -> None:
    daemon = start_daemon()
    no_session = await run_agentctl("diff", env=env, cwd=project)
    assert ok(no_session) == ""
    assert no_session.stderr.decode() == (
        f"agentctl diff: no session in this directory's workspace ({os.path.realpath(project)}), so no run to diff\n"
    )
    async with daemon.client() as client:
        ws = await open_workspace(client, project)
        empty = await ws.new_session()
        no_runs = await run_agentctl("undo", env=env, cwd=project)
        assert ok(no_runs) == f"session {empty} has no runs, so nothing to undo\n"
        # A run that only talked.
        sent = await ws.send(empty, {"chunks": ["just words"]})
        await ws.events.until_complete(sent["run_id"])
    nothing = await run_agentctl("diff", env=env, cwd=project)
    assert ok(nothing) == ""
    assert nothing.stderr.decode() == f"agentctl diff: run {sent['run_id']} changed no files\n"
    nothing_to_undo = await run_agentctl("undo", env=env, cwd=project)
    assert ok(nothing_to_undo) == f"run {sent['run_id']} changed no files; nothing to undo\n"


async def test_a_run_still_running_cannot_be_reverted(
    start_daemon: DaemonFactory, env: dict[str, str], project: Path
) -> None:
    daemon = start_daemon()
    async with daemon.client() as client:
        ws = await open_workspace(client, project)
        session_id = await ws.new_session()
        sent = await ws.send(session_id, {"chunks": ["started "], "hang": True})
        await ws.events.until(lambda e: e["type"] == "message.delta")
        with pytest.raises(RpcError) as running:
            await client.call("run.revert", {"run_id": sent["run_id"]})
        assert running.value.code == ErrorCode.CONFLICT
        assert running.value.message.startswith(f"run {sent['run_id']} is still running")
        undo = await run_agentctl("undo", env=env, cwd=project)
        assert undo.returncode == 1
        assert undo.stderr.decode() == (
            f"agentctl undo: run {sent['run_id']} is still running; undo it once it has ended"
            " (agentctl cancel ends it now)\n"
        )
        # Its changes so far can be looked at meanwhile.
        assert (await client.call("run.changes", {"run_id": sent["run_id"]}))["files"] == []
        await ws.cancel(session_id)
        await ws.events.until_complete(sent["run_id"])


async def test_diff_takes_a_session_prefix_and_names_an_unknown_run(
    start_daemon: DaemonFactory, env: dict[str, str], project: Path, edited: list[tuple[str, bytes | None]]
) -> None:
    prepared = await prepare(env, project, edited)
    start_daemon()
    # Another session, more recently active, is the current one: --session picks the prepared one.
    newer = await run_agentctl("run", "-m", "scripted", '{"chunks": ["hi"]}', env=env, cwd=project)
    ok(newer)
    current = await run_agentctl("diff", env=env, cwd=project)
    assert ok(current) == "" and current.stderr.decode().endswith("changed no files\n")
    prefix = prepared.session_id.removeprefix("ses_")[:8]
    chosen = await run_agentctl("diff", "--session", prefix, env=env, cwd=project)
    assert ok(chosen) == MAIN_DIFF + NEW_DIFF + OLD_DIFF
    unknown = await run_agentctl("undo", "--run", "0123abcd", env=env, cwd=project)
    assert unknown.returncode == 1 and unknown.stdout == b""
    assert unknown.stderr.decode() == (
        "agentctl undo: agentd knows no run '0123abcd' (a run id is what `agentctl run --detach` prints)\n"
    )
