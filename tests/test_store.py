"""The SQLite store under cancellation: a cancelled call finishes its statement, then the cancel lands.

A store call is never abandoned mid-statement. It returns what it did (so
its caller knows the write happened), and the cancellation lands at the
caller's next checkpoint.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import trio
import trio.testing

from agentd.store import GAP_TOO_OLD, Store


async def test_a_call_cancelled_while_its_statement_waits_finishes_it_then_is_cancelled(tmp_path: Path) -> None:
    path = tmp_path / "agentd.db"
    store = await Store.open(str(path))
    try:
        workspace = await store.workspace_for_path(str(tmp_path))
        # Another connection holds the database: the store's INSERT waits in SQLite.
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        outcome: list[str] = []

        async def create(scope: trio.CancelScope) -> None:
            with scope:
                await store.create_session(workspace.id, "made while cancelled")
                outcome.append("returned")
                await trio.lowlevel.checkpoint()
                outcome.append("not cancelled")
            if scope.cancelled_caught:
                outcome.append("cancelled")

        scope = trio.CancelScope()
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(create, scope)
                # The call is parked on its worker thread, inside the statement.
                await trio.testing.wait_all_tasks_blocked()
                scope.cancel()
                await trio.testing.wait_all_tasks_blocked()
                assert outcome == []  # the cancel waits for the statement
                blocker.execute("ROLLBACK")
        blocker.close()
        assert outcome == ["returned", "cancelled"]
        # Finished, not torn: the row is there, whole, and the store goes on working.
        assert [s.title for s in await store.list_sessions(workspace.id)] == ["made while cancelled"]
        await store.create_session(workspace.id, "after")
        assert len(await store.list_sessions(workspace.id)) == 2
    finally:
        await store.aclose()


async def test_a_transaction_cancelled_while_it_waits_commits_whole_then_is_cancelled(tmp_path: Path) -> None:
    path = tmp_path / "agentd.db"
    store = await Store.open(str(path))
    try:
        workspace = await store.workspace_for_path(str(tmp_path))
        first = await store.open_event_log(workspace.id, 100)
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                scope = trio.CancelScope()
                reserved: list[int] = []

                async def reserve() -> None:
                    with scope:
                        reserved.append(await store.reserve_seqs(workspace.id, 100))
                        await trio.lowlevel.checkpoint()

                nursery.start_soon(reserve)
                await trio.testing.wait_all_tasks_blocked()
                scope.cancel()
                blocker.execute("ROLLBACK")
        blocker.close()
        assert scope.cancelled_caught and reserved == [first + 100]
        # The reservation the cancelled call made stands: seqs never repeat.
        assert await store.reserve_seqs(workspace.id, 100) == first + 200
    finally:
        await store.aclose()


async def test_pruning_keeps_the_newest_events_and_those_younger_than_a_day(tmp_path: Path) -> None:
    from agentd.store._sqlite import EVENT_LOG_KEEP, EVENT_LOG_MAX_AGE

    path = tmp_path / "agentd.db"
    store = await Store.open(str(path))
    try:
        workspace = await store.workspace_for_path(str(tmp_path))
        first = await store.open_event_log(workspace.id, 100)
        now = time.time()
        old = now - 2 * EVENT_LOG_MAX_AGE
        # Day-old events, 500 more than the log keeps, with one young event
        # among them (written before a clock was set back).
        ages = [old] * 300 + [now] + [old] * (EVENT_LOG_KEEP + 200)
        conn = sqlite3.connect(path, isolation_level=None)
        conn.executemany(
            "INSERT INTO events (workspace_id, seq, type, payload, created_at) VALUES (?, ?, 'x', x'80', ?)",
            [(workspace.id, first + i, created_at) for i, created_at in enumerate(ages)],
        )
        conn.close()
        await store.append_events(workspace.id, [(first + len(ages), "session.deleted", {"id": "s"})])
        replay = await store.events_after(workspace.id, 0, first + len(ages))
        # The oldest are gone up to the young one, which stays, and all after it.
        seqs = [e.seq for e in replay.events]
        assert seqs[0] == first + 300 and seqs[-1] == first + len(ages)
        assert len(seqs) == len(ages) + 1 - 300
        assert replay.gap == GAP_TOO_OLD
        assert (await store.events_after(workspace.id, first + 299, first + len(ages))).gap is None
    finally:
        await store.aclose()
