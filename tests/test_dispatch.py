"""The dispatcher in process, with the real workspace, coordinator, store and broker, where a test
needs to act between two steps of the daemon that no client can get between."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from support import WAIT

from agentd.models import ModelRegistry
from agentd.pubsub import DropStats, Subscriber
from agentd.runs import Run, RunIndex
from agentd.shutdown import Shutdown
from agentd.store import Store
from agentd.workspaces import WorkspaceHost

HANG = json.dumps({"chunks": ["x"], "hang": True})


class Harness:
    def __init__(self, host: WorkspaceHost, store: Store, sub: Subscriber) -> None:
        self.host = host
        self.store = store
        self.sub = sub
        self.events: list[tuple[str, dict[str, Any]]] = []

    async def until_complete(self, run_id: str) -> dict[str, Any]:
        with trio.fail_after(WAIT):
            async for event in self.sub.receive_channel:
                self.events.append((event.type, event.payload))
                if event.type == "run.complete" and event.payload["run_id"] == run_id:
                    return event.payload
        raise AssertionError("subscription ended")


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    store = await Store.open(str(tmp_path / "agentd.db"))
    workspace = await store.workspace_for_path(str(tmp_path))
    host = WorkspaceHost(
        workspace.id,
        workspace.path,
        store=store,
        models=ModelRegistry(),
        stats=DropStats(),
        must_deliver_timeout=5,
        idle_grace=30,
        runs=RunIndex(store),
        shutdown=Shutdown(),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(host.serve)
        sub = host.broker.subscribe("sub", 1024, lambda s: None)
        yield Harness(host, store, sub)
        host.request_close("test over")
    await store.aclose()


async def test_cancel_before_the_run_task_starts_still_ends_the_run_cancelled(harness: Harness) -> None:
    session = await harness.store.create_session(harness.host.id, "t")
    run = Run("run-1", harness.host.id, session.id, HANG, "scripted")
    assert harness.host.dispatcher.accept(run) is False
    # No checkpoint since accept: the run task has not run a single step yet.
    active, cleared = harness.host.dispatcher.cancel(session.id)
    assert active is run and cleared == []
    rc = await harness.until_complete("run-1")
    assert rc["cancelled"] is True and rc["error"] is None
    messages = await harness.store.list_messages(session.id)
    assert [(m.role, m.text) for m in messages if m.role == "user"] == [("user", HANG)]
    assert not any(kind == "agent.error" for kind, _ in harness.events)


async def test_a_cancel_for_an_idle_session_leaves_the_next_run_alone(harness: Harness) -> None:
    session = await harness.store.create_session(harness.host.id, "t")
    assert harness.host.dispatcher.cancel(session.id) == (None, [])
    run = Run("run-2", harness.host.id, session.id, "fine", "echo")
    harness.host.dispatcher.accept(run)
    rc = await harness.until_complete("run-2")
    assert rc["cancelled"] is False and rc["text"] == "fine"


async def test_closing_the_workspace_completes_active_and_queued_runs_cancelled(harness: Harness) -> None:
    session = await harness.store.create_session(harness.host.id, "t")
    active = Run("run-a", harness.host.id, session.id, HANG, "scripted")
    queued = Run("run-q", harness.host.id, session.id, "later", "echo")
    harness.host.dispatcher.accept(active)
    assert harness.host.dispatcher.accept(queued) is True
    harness.host.request_close("test")
    with trio.fail_after(WAIT):
        await harness.host.closed.wait()
    completes = {}
    async for event in harness.sub.receive_channel:
        if event.type == "run.complete":
            completes[event.payload["run_id"]] = event.payload
        last = event.type
    assert completes["run-a"]["cancelled"] is True
    assert completes["run-q"]["cancelled"] is True
    assert last == "workspace.closed"
