"""The event journal and the store's event log: when a replay must admit it lacks events."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from agentd.protocol import events
from agentd.pubsub import Event
from agentd.store import GAP_LOST, GAP_TOO_OLD, SCHEMA_VERSION, Store
from agentd.workspaces._journal import EventJournal


async def open_store(tmp_path: Path) -> tuple[Store, str]:
    store = await Store.open(str(tmp_path / "agentd.db"))
    workspace = await store.workspace_for_path(str(tmp_path))
    return store, workspace.id


def logged(workspace_id: str, seq: int) -> Event:
    return Event(workspace_id, seq, events.SESSION_UPDATED, {"n": seq})


async def test_events_the_journal_had_to_let_go_make_a_replay_from_before_them_start_with_a_gap(
    tmp_path: Path,
) -> None:
    store, ws = await open_store(tmp_path)
    try:
        first = await store.open_event_log(ws, 1000)
        journal = EventJournal(ws, store, max_pending=3)
        for seq in range(first, first + 5):
            journal.record(logged(ws, seq))
        # Two fell off the front while nothing was written.
        assert journal.lost_through == first + 1
        assert [e.seq for e in journal.unwritten(0, first + 10)] == [first + 2, first + 3, first + 4]
        await journal.flush()
        assert journal.lost_through == 0 and journal.unwritten(0, first + 10) == []

        before = await store.events_after(ws, first - 1, first + 10)
        assert before.gap == GAP_LOST
        assert [e.seq for e in before.events] == [first + 2, first + 3, first + 4]
        # A client that saw the last lost event lacks nothing.
        after = await store.events_after(ws, first + 1, first + 10)
        assert after.gap is None and [e.seq for e in after.events] == [first + 2, first + 3, first + 4]
    finally:
        await store.aclose()


async def test_a_workspace_a_dead_daemon_left_live_has_that_life_marked_lost_and_a_clean_close_does_not(
    tmp_path: Path,
) -> None:
    store, ws = await open_store(tmp_path)
    first = await store.open_event_log(ws, 1000)
    await store.append_events(ws, [(first, events.SESSION_CREATED, {})])
    # Never closed: the next store to open the database finds it live.
    await store.aclose()

    store = await Store.open(str(tmp_path / "agentd.db"))
    try:
        second = await store.open_event_log(ws, 1000)
        assert second == first + 1000
        assert (await store.events_after(ws, first, second)).gap == GAP_LOST
        assert (await store.events_after(ws, first - 1, second)).gap == GAP_LOST
        # Seqs of the new life are above everything marked lost.
        assert (await store.events_after(ws, second - 1, second + 5)).gap is None
        # The last events of this life, and the mark that it closed cleanly.
        await store.append_events(ws, [(second, events.WORKSPACE_CLOSED, {})], closed=True)
    finally:
        await store.aclose()

    store = await Store.open(str(tmp_path / "agentd.db"))
    try:
        third = await store.open_event_log(ws, 1000)
        # The second life closed cleanly: a client from it lacks nothing.
        assert (await store.events_after(ws, second, third)).gap is None
        assert (await store.events_after(ws, first, third)).gap == GAP_LOST
    finally:
        await store.aclose()


async def test_a_version_1_database_is_migrated_and_keeps_its_data(tmp_path: Path) -> None:
    from agentd.store._schema import _SCHEMA

    path = tmp_path / "agentd.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute(
        "INSERT INTO workspaces (id, path, created_at, seq_reserved, pruned_through) VALUES (?, ?, 0, 500, 7)",
        ("ws_old", str(tmp_path)),
    )
    conn.execute("PRAGMA user_version = 1")
    conn.close()

    store = await Store.open(str(path))
    try:
        workspace = await store.workspace_for_path(str(tmp_path))
        assert workspace.id == "ws_old"
        assert await store.open_event_log("ws_old", 100) == 501
        assert (await store.events_after("ws_old", 3, 600)).gap == GAP_TOO_OLD
        assert (await store.events_after("ws_old", 7, 600)).gap is None
    finally:
        await store.aclose()
    version = sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0]
    assert version == SCHEMA_VERSION
