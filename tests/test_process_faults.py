"""The promise under process faults: kill -9 in a loop, another process holding the database, a full disk.

Each test owns its daemon (`bench._stress._faults.OwnedDaemon`): it kills
and restarts it, and checks the database from outside with SQLite itself.
The kill loop is seeded: `AGENTD_STRESS_SEED=N` runs it again as it failed.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.lowlevel
from support import WAIT, Events, Workspace

from agentctl.client import Client, RpcError
from agentd.changes import ChangeRequests, RunChanges
from agentd.protocol import RunComplete, RunReverted
from agentd.rpc import ErrorCode
from agentd.runs import RunIndex
from agentd.store import INTERRUPTED, RunRecord, Store
from bench._stress._faults import (
    INTEGRITY_OK,
    OwnedDaemon,
    SmallDisk,
    StartFailed,
    WriteLock,
    _Loop,
    integrity_check,
    kill_loop,
)
from bench._stress._ledger import Ledger

SEED = int(os.environ.get("AGENTD_STRESS_SEED", "20261202"))
DAEMON_ARGS = ("--idle-grace", "0.5", "--must-deliver-timeout", "2")
BUSY_TIMEOUT = 5.0  # the store's (agentd/store/_sqlite.py): a write waits this long for another process's lock
KILLS = 20


@pytest.fixture
async def owned(short_tmp: Path, env: dict[str, str]) -> AsyncIterator[OwnedDaemon]:
    daemon = OwnedDaemon(
        socket_path=Path(env["AGENTD_SOCKET"]),
        data_dir=Path(env["XDG_DATA_HOME"]) / "agentd",
        log_dir=short_tmp / "logs",
        env=env,
        args=DAEMON_ARGS,
    )
    yield daemon
    await daemon.stop()


async def open_ws(client: Client, path: Path) -> Workspace:
    opened = await client.call("workspace.open", {"path": str(path)})
    sub = await client.call("events.subscribe", {"workspace_id": opened["id"]})
    return Workspace(client, opened["id"], Events(client, sub["subscription_id"]))


# --- kill -9 in a loop ------------------------------------------------------------------------------


async def test_kill_9_twenty_times_with_runs_tools_and_permissions_in_flight_keeps_the_promise(
    owned: OwnedDaemon, short_tmp: Path
) -> None:
    projects = []
    for name in ("p0", "p1"):
        (short_tmp / name).mkdir()
        projects.append(short_tmp / name)
    await owned.start()
    started = time.monotonic()
    with trio.fail_after(KILLS * 10):
        stats = await kill_loop(owned, projects, SEED, KILLS)
    took = time.monotonic() - started
    assert stats.violations == [], "\n".join(stats.violations) + f"\n{stats.counts}\n" + owned.log()[-4000:]
    # The faults really happened with all of it in flight.
    assert stats.counts["kills"] == KILLS
    assert stats.counts["runs"] >= KILLS * 2
    assert stats.counts.get("tool_calls", 0) > 0 and stats.counts.get("permission_requests", 0) > 0, stats.counts
    assert stats.counts["records_checked"] >= stats.counts["runs"], stats.counts
    assert "Traceback" not in owned.log(), owned.log()
    print(f"kill loop (seed {SEED}): {stats.counts} in {took:.1f} s")


def test_across_a_restart_the_kill_loop_counts_a_replayed_run_complete_once_and_a_second_one_as_a_violation() -> None:
    loop = _Loop(SEED, Ledger())
    loop.ledger.accepted("ws", "r1")

    def complete(seq: int) -> dict[str, Any]:
        payload = {"run_id": "r1", "session_id": "s", "error": INTERRUPTED}
        return {"workspace_id": "ws", "seq": seq, "type": "run.complete", "payload": payload}

    loop.observe("ws", complete(100_001))
    # After the next kill: the replay opens with the lost gap (the protocol's), then repeats what was seen.
    loop.observe("ws", {"workspace_id": "ws", "seq": 200_001, "type": "events.gap", "payload": {"reason": "lost"}})
    loop.observe("ws", complete(100_001))
    assert loop.stats().violations == [] and loop.since["ws"] == 100_001
    loop.observe("ws", complete(200_002))
    [second] = loop.stats().violations
    assert "second run.complete" in second, second


# --- another process holds the database -------------------------------------------------------------


async def finished_run(ws: Workspace, session_id: str, text: str) -> dict[str, Any]:
    reply = await ws.send(session_id, text, model="echo")
    return await ws.events.until_complete(reply["run_id"])


@attrs.frozen
class Serving:
    """The owned daemon started, a client subscribed to the project, a session, and a run it finished."""

    client: Client
    ws: Workspace
    session_id: str
    # The run finished before the fault: its record must come through it unchanged.
    before: dict[str, Any]


@pytest.fixture
async def serving(owned: OwnedDaemon, project: Path) -> AsyncIterator[Serving]:
    await owned.start()
    async with owned.client() as client:
        ws = await open_ws(client, project)
        session_id = await ws.new_session()
        yield Serving(client, ws, session_id, await finished_run(ws, session_id, "before the fault"))


def assert_refused_by_the_database(exc: RpcError, db_path: Path, problem: str) -> None:
    assert exc.code == ErrorCode.UNAVAILABLE, exc
    assert str(db_path) in exc.message and problem in exc.message, exc.message


async def test_a_write_lock_held_past_the_busy_timeout_fails_requests_with_code_7_then_they_work_again(
    owned: OwnedDaemon, serving: Serving
) -> None:
    client, ws, session_id, before = serving.client, serving.ws, serving.session_id, serving.before
    lock = await WriteLock.hold(owned.db_path)
    try:
        started = time.monotonic()
        with pytest.raises(RpcError) as refused, trio.fail_after(BUSY_TIMEOUT * 6):
            await ws.send(session_id, "while locked", run_id="locked-1")
        waited = time.monotonic() - started
        # Reads are not blocked by another writer, and the daemon serves meanwhile.
        with trio.fail_after(WAIT):
            assert await client.call("ping") == {}
            messages = await client.call("session.messages", {"workspace_id": ws.id, "session_id": session_id})
        with pytest.raises(RpcError) as refused_too, trio.fail_after(BUSY_TIMEOUT * 6):
            await client.call("session.create", {"workspace_id": ws.id})
    finally:
        await lock.release()
    assert_refused_by_the_database(refused.value, owned.db_path, "locked")
    assert_refused_by_the_database(refused_too.value, owned.db_path, "locked")
    assert waited >= BUSY_TIMEOUT * 0.9, f"refused after {waited:.1f} s, before the busy timeout"
    # The refused send did nothing.
    with pytest.raises(RpcError) as unknown:
        await client.call("run.get", {"run_id": "locked-1"})
    assert unknown.value.code == ErrorCode.NOT_FOUND
    # Released: everything works again, and nothing acknowledged went missing.
    after = await finished_run(ws, session_id, "after the lock")
    assert after["error"] is None and after["text"] == "after the lock"
    assert (await client.call("run.get", {"run_id": before["run_id"]}))["complete"] == before
    now = await client.call("session.messages", {"workspace_id": ws.id, "session_id": session_id})
    assert now[: len(messages)] == messages and len(now) == len(messages) + 2
    assert await integrity_check(owned.db_path) == INTEGRITY_OK
    assert "Traceback" not in owned.log(), owned.log()


async def test_a_write_lock_whose_holder_is_killed_mid_transaction_frees_the_database(
    owned: OwnedDaemon, serving: Serving
) -> None:
    client, ws, session_id, before = serving.client, serving.ws, serving.session_id, serving.before
    # The holder also wrote pages it never commits, some into the WAL.
    lock = await WriteLock.hold(owned.db_path, dirty=True)
    with pytest.raises(RpcError) as refused, trio.fail_after(BUSY_TIMEOUT * 6):
        await ws.send(session_id, "while locked")
    assert_refused_by_the_database(refused.value, owned.db_path, "locked")
    replies: list[dict[str, Any]] = []

    async def send_waiting_on_the_lock() -> None:
        replies.append(await ws.send(session_id, "while the holder dies"))

    started = time.monotonic()
    with trio.fail_after(BUSY_TIMEOUT * 6):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_waiting_on_the_lock)
            # A checkpoint lets the send go out; whether the kill comes before
            # it reaches the store or while it waits there, it must succeed.
            await trio.lowlevel.checkpoint()
            await lock.kill()
    # Its lock went with it: the send did not wait out the busy timeout and fail.
    assert time.monotonic() - started < BUSY_TIMEOUT * 2
    done = await ws.events.until_complete(replies[0]["run_id"])
    assert done["error"] is None and done["text"] == "while the holder dies"
    assert (await client.call("run.get", {"run_id": before["run_id"]}))["complete"] == before
    await owned.stop()
    # Nothing of the holder's transaction is in the database, and it is whole.
    assert await integrity_check(owned.db_path) == INTEGRITY_OK
    assert "holder_scratch" not in await table_names(owned.db_path)
    assert "Traceback" not in owned.log(), owned.log()


async def table_names(db_path: Path) -> set[str]:
    import sqlite3

    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        conn.close()


# --- a full disk -------------------------------------------------------------------------------------

DISK_SIZE = 8 * 1024 * 1024


@pytest.fixture
async def small_disk(short_tmp: Path) -> AsyncIterator[SmallDisk]:
    why = SmallDisk.unavailable()
    if why is not None:
        pytest.skip(why)
    try:
        disk = await SmallDisk.mount(short_tmp / "disk", DISK_SIZE)
    except RuntimeError as exc:
        pytest.skip(f"no small filesystem of the test's own: {exc}")
    yield disk
    await disk.aclose()


@pytest.fixture
async def disk_daemon(small_disk: SmallDisk, short_tmp: Path, env: dict[str, str]) -> AsyncIterator[OwnedDaemon]:
    """An agentd whose database is on the small disk (it runs in the disk's mount namespace); not started."""
    daemon = OwnedDaemon(
        socket_path=Path(env["AGENTD_SOCKET"]),
        data_dir=small_disk.mountpoint / "data",
        log_dir=short_tmp / "logs",
        env=env,
        args=DAEMON_ARGS,
        prefix=small_disk.prefix,
    )
    yield daemon
    await daemon.stop()


async def replayed_completes(client: Client, workspace_id: str) -> dict[str, list[dict[str, Any]]]:
    """run_id -> the run.complete events the workspace's whole log replays for it."""
    sub = await client.call("events.subscribe", {"workspace_id": workspace_id, "since": 0})
    events = Events(client, sub["subscription_id"])
    for _ in range(sub["replayed"]):
        await events.next()
    await client.call("events.unsubscribe", {"subscription_id": sub["subscription_id"]})
    found: dict[str, list[dict[str, Any]]] = {}
    for event in events.of_type("run.complete"):
        found.setdefault(event["payload"]["run_id"], []).append(event["payload"])
    return found


async def test_a_full_disk_fails_runs_clearly_loses_nothing_acknowledged_and_recovers_once_space_is_freed(
    small_disk: SmallDisk, disk_daemon: OwnedDaemon, project: Path
) -> None:
    daemon = disk_daemon
    await daemon.start()
    async with daemon.client() as client:
        ws = await open_ws(client, project)
        session_id = await ws.new_session()
        acknowledged = [await finished_run(ws, session_id, f"before the disk filled {i}") for i in range(3)]
        messages = await client.call("session.messages", {"workspace_id": ws.id, "session_id": session_id})
        # A run streams as the disk fills.
        streaming = await ws.send(session_id, {"chunks": ["a", "b", "c"], "delay_ms": 300})
        await ws.events.until(lambda e: e["type"] == "message.delta" and e["payload"]["text"] == "a")
        small_disk.fill()
        # The WAL may have room left in pages it holds: send until the database refuses (it does at once, mostly).
        told: dict[str, dict[str, Any]] = {}
        with trio.fail_after(60):
            for i in range(100):
                try:
                    reply = await ws.send(session_id, f"on a full disk {i} " + "x" * 65536, model="echo")
                except RpcError as exc:
                    assert_refused_by_the_database(exc, daemon.db_path, "full")
                    break
                told[reply["run_id"]] = await ws.events.until_complete(reply["run_id"])
            else:
                raise AssertionError("100 sends of 64 KiB on a full disk of 8 MiB were all taken")
        live = await ws.events.until_complete(streaming["run_id"], timeout=WAIT * 3)
        told[streaming["run_id"]] = live
        # Its end could be kept neither in the database nor beside it: the run says so, with its text.
        assert live["text"] == "abc", live
        assert live["error"] is None or live["error"].startswith("the run could not be saved: "), live
        assert "No space left on device" in (live["error"] or "No space left on device"), live
        # The daemon lives through it, and serves what needs no write.
        with trio.fail_after(WAIT):
            assert await client.call("ping") == {}
            now = await client.call("session.messages", {"workspace_id": ws.id, "session_id": session_id})
        assert now[: len(messages)] == messages
        small_disk.free()
        after = await finished_run(ws, session_id, "after the disk was freed")
        assert after["error"] is None and after["text"] == "after the disk was freed"
        told[after["run_id"]] = after
    assert await daemon.stop() == 0, daemon.log()
    assert await integrity_check(daemon.db_path, daemon.prefix) == INTEGRITY_OK
    await daemon.start()
    try:
        async with daemon.client() as client:
            opened = await client.call("workspace.open", {"path": str(project)})
            replayed = await replayed_completes(client, opened["id"])
            for complete in [*acknowledged, *told.values()]:
                run_id = complete["run_id"]
                run = await client.call("run.get", {"run_id": run_id})
                assert run["state"] == "done" and run["complete"] == complete, (run, complete)
                assert replayed.get(run_id) == [complete], (run_id, replayed.get(run_id))
            now = await client.call("session.messages", {"workspace_id": opened["id"], "session_id": session_id})
            assert now[: len(messages)] == messages
    finally:
        assert await daemon.stop() == 0, daemon.log()
    assert await integrity_check(daemon.db_path, daemon.prefix) == INTEGRITY_OK


async def test_kill_9_on_a_full_disk_then_a_start_that_cannot_write_says_so_and_one_after_freeing_recovers(
    small_disk: SmallDisk, disk_daemon: OwnedDaemon, project: Path
) -> None:
    daemon = disk_daemon
    await daemon.start()
    async with daemon.client() as client:
        ws = await open_ws(client, project)
        session_id = await ws.new_session()
        done = await finished_run(ws, session_id, "before the disk filled")
        hanging = await ws.send(await ws.new_session(), {"chunks": ["partial"], "hang": True})
        await ws.events.until(lambda e: e["type"] == "message.delta")
        messages = await client.call("session.messages", {"workspace_id": ws.id, "session_id": session_id})
        small_disk.fill()
        await daemon.kill()
    # Starting means writing (the interrupted runs' ends): refused, in one line that says what to do.
    with pytest.raises(StartFailed) as refused:
        await daemon.start()
    assert refused.value.status == 1, refused.value
    said = refused.value.said.strip()
    assert said == (
        f"agentd: cannot open the database {daemon.db_path}: database or disk is full;"
        " free some disk space, or pass --data-dir on another disk"
    ), said
    small_disk.free()
    await daemon.start()
    try:
        async with daemon.client() as client:
            interrupted = await client.call("run.get", {"run_id": hanging["run_id"]})
            assert interrupted["state"] == "done", interrupted
            assert interrupted["complete"]["error"] == "interrupted: daemon restarted", interrupted
            assert (await client.call("run.get", {"run_id": done["run_id"]}))["complete"] == done
            opened = await client.call("workspace.open", {"path": str(project)})
            replayed = await replayed_completes(client, opened["id"])
            assert replayed[hanging["run_id"]] == [interrupted["complete"]]
            now = await client.call("session.messages", {"workspace_id": opened["id"], "session_id": session_id})
            assert now == messages
            again = await finished_run(await open_ws(client, project), session_id, "works again")
            assert again["error"] is None
    finally:
        assert await daemon.stop() == 0, daemon.log()
    assert await integrity_check(daemon.db_path, daemon.prefix) == INTEGRITY_OK


# --- what the kill loop found -------------------------------------------------------------------------


@attrs.frozen
class CutShort:
    """A run killed in the middle of a write tool's call to `path`, and the store opened again after it."""

    store: Store
    root: Path
    run_id: str
    interrupted: RunComplete

    async def listed(self) -> list[str]:
        return [f.path for f in (await ChangeRequests(self.store, RunIndex(self.store)).list(self.run_id)).files]

    async def revert(self, *, force: bool = False) -> RunReverted:
        return await ChangeRequests(self.store, RunIndex(self.store)).revert(self.run_id, force=force)


CutShortAt = Callable[[str, bytes | None, bytes | None], Awaitable[CutShort]]


@pytest.fixture
async def cut_short(tmp_path: Path) -> AsyncIterator[CutShortAt]:
    """`cut_short(path, before, written)`: `path` holds `before` (None: no file), the run's write tool keeps it

    (the before-record), writes `written` (None: the kill came first), and
    the daemon dies before the after-record. What the next start finds.
    """
    root = tmp_path / "project"
    root.mkdir()
    db = str(tmp_path / "data" / "agentd.db")
    opened: list[Store] = []

    async def at(path: str, before: bytes | None, written: bytes | None) -> CutShort:
        if before is not None:
            (root / path).write_bytes(before)
        store = await Store.open(db)
        workspace = await store.workspace_for_path(str(root))
        session = await store.create_session(workspace.id, "s")
        await store.create_run(RunRecord("mid-write", workspace.id, session.id, "write it", "scripted", time.time()))
        await store.start_run("mid-write")
        await RunChanges(store, str(root), "mid-write", session.id).before_write(path)
        if written is not None:
            (root / path).write_bytes(written)
        await store.aclose()
        again = await Store.open(db)
        opened.append(again)
        [interrupted] = again.recovered
        return CutShort(again, root, "mid-write", interrupted)

    yield at
    for store in opened:
        await store.aclose()


async def test_a_run_killed_mid_write_counts_that_file_in_its_interrupted_run_complete(cut_short: CutShortAt) -> None:
    # Killed once the file was written, before its after was recorded.
    cut = await cut_short("made.txt", None, b"the run's\n")
    assert cut.interrupted.error == INTERRUPTED
    assert await cut.listed() == ["made.txt"]
    assert cut.interrupted.changes == 1
    reverted = await cut.revert()
    assert [(f.path, f.action) for f in reverted.reverted] == [("made.txt", "created")] and not reverted.refused
    assert not (cut.root / "made.txt").exists()


async def test_a_run_killed_between_keeping_a_file_and_writing_it_neither_counts_nor_lists_it(
    cut_short: CutShortAt,
) -> None:
    # Killed after the before-record, before the write: the file is the user's, as it was.
    cut = await cut_short("mine.txt", b"the user's\n", None)
    assert await cut.listed() == []
    assert cut.interrupted.changes == 0
    reverted = await cut.revert()
    assert reverted.reverted == [] and reverted.refused == []
    assert (cut.root / "mine.txt").read_bytes() == b"the user's\n"


async def test_a_file_the_user_edits_after_a_restart_cut_a_write_short_is_not_reverted_over(
    cut_short: CutShortAt,
) -> None:
    cut = await cut_short("shared.txt", b"before\n", b"the run's\n")
    assert cut.interrupted.changes == 1
    # Once the daemon is back, the user changes the file: that is theirs, not the run's.
    (cut.root / "shared.txt").write_bytes(b"the user's, since\n")
    [change] = (await ChangeRequests(cut.store, RunIndex(cut.store)).list(cut.run_id)).files
    assert change.changed_since and "+the run's" in change.diff, change
    refused = await cut.revert()
    assert refused.reverted == [] and [f.path for f in refused.refused] == ["shared.txt"], refused
    assert (cut.root / "shared.txt").read_bytes() == b"the user's, since\n"
    # Only when asked to: the content from before the run, as it was.
    forced = await cut.revert(force=True)
    assert [f.path for f in forced.reverted] == ["shared.txt"]
    assert (cut.root / "shared.txt").read_bytes() == b"before\n"
