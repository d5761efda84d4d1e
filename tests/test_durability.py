"""What survives the daemon: history, run outcomes, event seqs and the replayable event log."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from support import WAIT, Daemon, DaemonFactory, Events, Workspace, open_workspace

from agentctl.client import Client, RpcError
from agentd.rpc import ErrorCode


async def kill9(daemon: Daemon) -> None:
    daemon.proc.kill()
    await daemon.exited()


async def subscribe_since(client: Client, workspace_id: str, since: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Subscribe with `since`: the reply, and the events replayed ahead of the live ones."""
    sub = await client.call("events.subscribe", {"workspace_id": workspace_id, "since": since})
    replayed: list[dict[str, Any]] = []
    with trio.fail_after(WAIT):
        while len(replayed) < sub["replayed"]:
            _method, params = await client.notifications.receive()
            if params[0]["subscription_id"] == sub["subscription_id"]:
                replayed.append(params[0])
    return sub, replayed


async def test_run_killed_mid_stream_reads_interrupted_after_restart_with_its_partial_text(
    start_daemon: DaemonFactory, project: Path
) -> None:
    daemon = start_daemon()
    async with daemon.client() as client:
        ws = await open_workspace(client, project)
        session_id = await ws.new_session()
        # The text so far is saved about once a second: the second chunk comes
        # after the save that followed the first.
        reply = await ws.send(session_id, {"chunks": ["part1 ", "part2"], "delay_ms": 1100, "hang": True})
        await ws.events.until(lambda e: e["type"] == "message.delta" and e["payload"]["text"] == "part2")
    await kill9(daemon)

    again = start_daemon()
    async with again.client() as client:
        rc = await client.call("run.wait", {"run_id": reply["run_id"], "timeout": 5})
        assert rc["error"] == "interrupted: daemon restarted"
        assert rc["cancelled"] is False
        assert rc["text"].startswith("part1 ")
        run = await client.call("run.get", {"run_id": reply["run_id"]})
        assert run["state"] == "done" and run["complete"] == rc
        ws_again = await client.call("workspace.open", {"path": str(project)})
        messages = await client.call("session.messages", {"workspace_id": ws_again["id"], "session_id": session_id})
        assistant = [m for m in messages if m["role"] == "assistant"]
        assert assistant[-1]["text"].startswith("part1 ")
        assert assistant[-1]["finish_reason"] == "error"
    assert "interrupted" in again.log()


async def test_sigterm_persists_every_run_as_cancelled(start_daemon: DaemonFactory, project: Path) -> None:
    daemon = start_daemon()
    async with daemon.client() as client:
        ws = await open_workspace(client, project)
        session_id = await ws.new_session()
        running = await ws.send(session_id, {"chunks": ["x"], "hang": True})
        queued = await ws.send(session_id, "later")
        await ws.events.until(lambda e: e["type"] == "message.delta")
        daemon.proc.send_signal(signal.SIGTERM)
        await ws.events.until(lambda e: e["type"] == "workspace.closed")
    assert await daemon.exited() == 0

    again = start_daemon()
    async with again.client() as client:
        for reply in (running, queued):
            run = await client.call("run.get", {"run_id": reply["run_id"]})
            assert run["state"] == "done"
            assert run["complete"]["cancelled"] is True and run["complete"]["error"] is None


async def test_history_and_titles_survive_a_restart(start_daemon: DaemonFactory, project: Path) -> None:
    daemon = start_daemon()
    async with daemon.client() as client:
        ws = await open_workspace(client, project)
        session_id = await ws.new_session("")
        for prompt in ("first question here", "second one"):
            reply = await ws.send(session_id, prompt)
            await ws.events.until_complete(reply["run_id"])
        before = await client.call("session.messages", {"workspace_id": ws.id, "session_id": session_id})
    daemon.terminate()

    again = start_daemon()
    async with again.client() as client:
        opened = await client.call("workspace.open", {"path": str(project)})
        assert opened["id"] == ws.id
        sessions = await client.call("session.list", {"workspace_id": ws.id})
        assert [(s["id"], s["title"], s["message_count"]) for s in sessions] == [(session_id, "first question here", 4)]
        after = await client.call("session.messages", {"workspace_id": ws.id, "session_id": session_id})
        assert after == before
        assert [m["text"] for m in after] == ["first question here"] * 2 + ["second one"] * 2


async def test_resubscribing_since_across_a_restart_gets_every_run_complete_exactly_once(
    start_daemon: DaemonFactory, project: Path
) -> None:
    daemon = start_daemon()
    async with daemon.client() as client:
        ws = await client.call("workspace.open", {"path": str(project)})
        sub = await client.call("events.subscribe", {"workspace_id": ws["id"]})
        since = sub["seq"]
        session = await client.call("session.create", {"workspace_id": ws["id"]})
        finished = []
        for prompt in ("one", "two", "three"):
            reply = await client.call(
                "agent.send", {"workspace_id": ws["id"], "session_id": session["id"], "prompt": prompt}
            )
            finished.append(reply["run_id"])
            await client.call("run.wait", {"run_id": reply["run_id"]})
        hanging = await client.call(
            "agent.send",
            {
                "workspace_id": ws["id"],
                "session_id": session["id"],
                "prompt": '{"chunks": ["x"], "hang": true}',
                "model": "scripted",
            },
        )
        # The log is written in the background: a clean stop flushes it, a
        # kill -9 may not, so this one stops cleanly; the hanging run ends cancelled.
    daemon.terminate()

    again = start_daemon()
    async with again.client() as client:
        await client.call("workspace.open", {"path": str(project)})
        sub, replayed = await subscribe_since(client, ws["id"], since)
        assert all(e["seq"] <= sub["seq"] for e in replayed)
        completes = [e["payload"]["run_id"] for e in replayed if e["type"] == "run.complete"]
        assert sorted(completes) == sorted([*finished, hanging["run_id"]])
        seqs = [e["seq"] for e in replayed]
        assert seqs == sorted(set(seqs)) and seqs[0] > since
        assert not any(e["type"] == "message.delta" for e in replayed)
        # A clean stop wrote every logged event: nothing to admit.
        assert not any(e["type"] == "events.gap" for e in replayed)
        # New events go on numbering above everything from before the restart.
        session2 = await client.call("session.create", {"workspace_id": ws["id"]})
        assert session2["id"]
        with trio.fail_after(WAIT):
            async for _method, params in client.notifications:
                assert params[0]["seq"] > sub["seq"]
                break


async def test_a_replay_reaching_back_across_a_kill_starts_with_a_lost_gap(
    start_daemon: DaemonFactory, project: Path
) -> None:
    daemon = start_daemon()
    async with daemon.client() as client:
        opened = await client.call("workspace.open", {"path": str(project)})
        sub = await client.call("events.subscribe", {"workspace_id": opened["id"]})
        since = sub["seq"]
        ws = Workspace(client, opened["id"], Events(client, sub["subscription_id"]))
        session_id = await ws.new_session()
        reply = await ws.send(session_id, {"chunks": ["x"], "hang": True})
        await ws.events.until(lambda e: e["type"] == "message.delta")
    # Whatever the journal had not yet written dies with the process.
    await kill9(daemon)

    again = start_daemon()
    async with again.client() as client:
        await client.call("workspace.open", {"path": str(project)})
        _, across = await subscribe_since(client, ws.id, since)
        assert across[0]["type"] == "events.gap" and across[0]["payload"] == {"reason": "lost"}
        assert [e["type"] for e in across[1:]].count("events.gap") == 0
        # The run the kill interrupted still has its one RunComplete in the replay.
        completes = [e["payload"] for e in across if e["type"] == "run.complete"]
        assert [(c["run_id"], c["error"]) for c in completes] == [(reply["run_id"], "interrupted: daemon restarted")]
        # A client that only knows this daemon's life lacks nothing.
        now = max(e["seq"] for e in across)
        _, recent = await subscribe_since(client, ws.id, now - 1)
        assert recent and all(e["type"] != "events.gap" for e in recent)


async def test_replay_and_live_meet_with_no_gap_and_no_duplicate(daemon: Daemon, ws: Workspace, project: Path) -> None:
    # `ws` watches from the start; another client joins mid-stream with `since`.
    session_id = await ws.new_session()
    reply = await ws.send(session_id, {"chunks": [f"c{i} " for i in range(60)], "delay_ms": 5})
    first = await ws.events.until(lambda e: e["type"] == "message.delta")
    since = first["seq"]
    others = [await ws.send(await ws.new_session(f"s{i}"), f"other {i}") for i in range(3)]
    async with daemon.client() as client:
        await client.call("workspace.open", {"path": str(project)})
        sub = await client.call("events.subscribe", {"workspace_id": ws.id, "since": since})
        joined: list[dict[str, Any]] = []
        with trio.fail_after(WAIT):
            async for _method, params in client.notifications:
                joined.append(params[0])
                if params[0]["type"] == "run.complete" and params[0]["payload"]["run_id"] == reply["run_id"]:
                    break
    await ws.events.until_complete(reply["run_id"])
    for other in others:
        await ws.events.until_complete(other["run_id"])
    seqs = [e["seq"] for e in joined]
    assert seqs == sorted(set(seqs)), "a duplicate or a step back at the seam"
    # Everything the watcher saw after `since` that the log keeps, the joiner saw,
    # whether it came from the replay or live.
    logged = {
        e["seq"] for e in ws.events.seen if since < e["seq"] <= joined[-1]["seq"] and e["type"] != "message.delta"
    }
    assert logged <= set(seqs)
    # Past the seam, deltas come live.
    assert any(e["type"] == "message.delta" and e["seq"] > sub["seq"] for e in joined)


async def test_since_from_the_future_gets_a_too_old_gap_first(daemon: Daemon, project: Path) -> None:
    async with daemon.client() as client:
        ws = await client.call("workspace.open", {"path": str(project)})
        sub = await client.call("events.subscribe", {"workspace_id": ws["id"], "since": 10**12})
        with trio.fail_after(WAIT):
            async for _method, params in client.notifications:
                event = params[0]
                assert event["subscription_id"] == sub["subscription_id"]
                assert event["type"] == "events.gap"
                assert event["payload"] == {"reason": "too_old"}
                break
        with pytest.raises(RpcError) as refused:
            await client.call("events.subscribe", {"workspace_id": ws["id"], "since": -1})
        assert refused.value.code == ErrorCode.INVALID_PARAMS


async def test_resending_a_known_run_id_returns_that_run_and_starts_nothing(ws: Workspace) -> None:
    session_id = await ws.new_session()
    script = {"chunks": ["x"], "hang": True}
    first = await ws.send(session_id, script, run_id="retry-1")
    again = await ws.send(session_id, script, run_id="retry-1")
    assert first["run_id"] == again["run_id"] == "retry-1"
    assert again["state"] in ("queued", "running") and again["queued"] is False
    with pytest.raises(RpcError) as conflict:
        await ws.send(session_id, {"chunks": ["other"]}, run_id="retry-1")
    assert conflict.value.code == ErrorCode.CONFLICT
    await ws.cancel(session_id)
    rc = await ws.events.until_complete("retry-1")
    assert rc["cancelled"] is True
    done = await ws.send(session_id, script, run_id="retry-1")
    assert done == {"run_id": "retry-1", "queued": False, "state": "done", "ahead": 0}
    started = [e for e in ws.events.of_type("run.started") if e["payload"]["run_id"] == "retry-1"]
    assert len(started) == 1


async def test_unreadable_database_stops_the_daemon_with_the_file_and_what_to_do(
    env: dict[str, str], short_tmp: Path
) -> None:
    db = Path(env["XDG_DATA_HOME"]) / "agentd" / "agentd.db"
    db.parent.mkdir(parents=True)
    db.write_bytes(b"this is not a database, " * 100)
    with trio.fail_after(WAIT):
        result = await trio.run_process(
            [sys.executable, "-m", "agentd", "--socket", str(short_tmp / "x.sock")],
            env=env,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 1
    message = result.stderr.decode()
    assert str(db) in message
    assert "mv " in message and ".broken" in message
    assert "Traceback" not in message
    assert not (short_tmp / "x.sock").exists()


async def test_two_daemons_cannot_share_one_database(
    start_daemon: DaemonFactory, env: dict[str, str], short_tmp: Path
) -> None:
    start_daemon()
    with trio.fail_after(WAIT):
        result = await trio.run_process(
            [sys.executable, "-m", "agentd", "--socket", str(short_tmp / "other.sock")],
            env=env,
            capture_stderr=True,
            check=False,
            stdout=subprocess.DEVNULL,
        )
    assert result.returncode == 1
    assert b"another agentd is using the database" in result.stderr


def _hold_database(env: dict[str, str]) -> Any:
    """Another process's write lock on the daemon's database: its writes fail after the busy timeout."""
    import sqlite3

    blocker = sqlite3.connect(Path(env["XDG_DATA_HOME"]) / "agentd" / "agentd.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    return blocker


async def _run_completes_replayed(client: Client, workspace_id: str, run_id: str) -> list[dict[str, Any]]:
    _sub, replayed = await subscribe_since(client, workspace_id, 0)
    return [e["payload"] for e in replayed if e["type"] == "run.complete" and e["payload"]["run_id"] == run_id]


async def test_a_run_end_the_database_refused_is_what_a_restart_after_kill_9_finds(
    start_daemon: DaemonFactory, project: Path, env: dict[str, str]
) -> None:
    daemon = start_daemon()
    async with daemon.client() as client:
        ws = await open_workspace(client, project)
        session_id = await ws.new_session()
        # A partial save follows each chunk (they are over a second apart).
        reply = await ws.send(session_id, {"chunks": ["a", "b", "c"], "delay_ms": 1100})
        await ws.events.until(lambda e: e["type"] == "message.delta" and e["payload"]["text"] == "a")
        blocker = _hold_database(env)
        try:
            # Every write waits out the store's 5 s busy timeout, then fails:
            # the partial save after "b", the journal's, and the run's end.
            with trio.fail_after(60):
                live = await ws.events.until_complete(reply["run_id"], timeout=60)
            # A refused partial save is not the run's end, and a refused end
            # is not an error: it was kept durable beside the database.
            assert live["error"] is None and live["cancelled"] is False and live["text"] == "abc", live
            assert "saving the text so far failed" in daemon.log()
            # Killed before the database takes anything again.
            await kill9(daemon)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()

    again = start_daemon()
    async with again.client() as client:
        run = await client.call("run.get", {"run_id": reply["run_id"]})
        assert run["state"] == "done" and run["complete"] == live
        assert await client.call("run.wait", {"run_id": reply["run_id"], "timeout": 1}) == live
        ws_again = await client.call("workspace.open", {"path": str(project)})
        # Told once live, found once after the restart: no second, "interrupted" one.
        assert await _run_completes_replayed(client, ws_again["id"], reply["run_id"]) == [live]
        messages = await client.call("session.messages", {"workspace_id": ws_again["id"], "session_id": session_id})
        assistant = [m for m in messages if m["role"] == "assistant"]
        assert [(m["text"], m["finish_reason"]) for m in assistant] == [("abc", "stop")]


async def test_a_refused_run_end_written_later_finishes_the_message_too(
    daemon: Daemon, ws: Workspace, env: dict[str, str], start_daemon: DaemonFactory, project: Path
) -> None:
    session_id = await ws.new_session()
    reply = await ws.send(session_id, {"chunks": ["a", "b"], "delay_ms": 1100})
    await ws.events.until(lambda e: e["type"] == "message.delta" and e["payload"]["text"] == "a")
    blocker = _hold_database(env)
    try:
        with trio.fail_after(60):
            live = await ws.events.until_complete(reply["run_id"], timeout=60)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert live["error"] is None and live["text"] == "ab"
    # The daemon keeps serving, and the retry records the end, message included.
    assert await ws.client.call("ping") == {}
    with trio.fail_after(30):
        updated = await ws.events.until(
            lambda e: e["type"] == "message.updated" and e["payload"]["id"] == live["message_id"], timeout=30
        )
    assert updated["payload"]["text"] == "ab" and updated["payload"]["finish_reason"] == "stop"
    again = await ws.send(session_id, "saved now")
    done = await ws.events.until_complete(again["run_id"])
    assert done["error"] is None and done["text"] == "saved now"
    daemon.terminate()
    restarted = start_daemon()
    async with restarted.client() as client:
        run = await client.call("run.get", {"run_id": reply["run_id"]})
        assert run["complete"] == live
        ws_again = await client.call("workspace.open", {"path": str(project)})
        messages = await client.call("session.messages", {"workspace_id": ws_again["id"], "session_id": session_id})
    assert [(m["text"], m["finish_reason"]) for m in messages if m["role"] == "assistant"][0] == ("ab", "stop")


async def test_a_send_the_store_cannot_take_is_an_error_reply_and_no_run(
    daemon: Daemon, ws: Workspace, env: dict[str, str]
) -> None:
    import sqlite3

    session_id = await ws.new_session()
    blocker = sqlite3.connect(Path(env["XDG_DATA_HOME"]) / "agentd" / "agentd.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(RpcError) as refused, trio.fail_after(30):
            await ws.send(session_id, "not now", run_id="refused-1")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert refused.value.code == ErrorCode.UNAVAILABLE and "locked" in refused.value.message
    with pytest.raises(RpcError) as unknown:
        await ws.client.call("run.get", {"run_id": "refused-1"})
    assert unknown.value.code == ErrorCode.NOT_FOUND


async def test_two_first_prompts_at_once_title_the_session_after_one_of_them(ws: Workspace) -> None:
    session_id = await ws.new_session("")
    async with trio.open_nursery() as nursery:
        for prompt in ("alpha prompt", "beta prompt"):
            nursery.start_soon(ws.send, session_id, prompt)
    session = await ws.client.call("session.get", {"workspace_id": ws.id, "session_id": session_id})
    assert session["title"] in ("alpha prompt", "beta prompt")
    # One title was given: no session.updated ever carried the other.
    await ws.events.until(lambda e: e["type"] == "session.updated" and e["payload"]["title"] == session["title"])
    assert {e["payload"]["title"] for e in ws.events.seen if e["type"] == "session.updated"} - {""} == {
        session["title"]
    }
