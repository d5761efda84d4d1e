"""Stopping the daemon: every run still gets its cancelled RunComplete, and the process exits 0, soon."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
import trio
from support import Daemon, DaemonFactory, delta_reaching, open_raw, open_workspace

from agentctl.client import RpcError
from agentd.rpc import ErrorCode

HANG = {"chunks": ["working "], "hang": True}
# Shutdown waits at most 2 s on a subscriber (protocol.md §6); the rest is the
# exit itself on a busy machine. Well under the 10 s must-deliver timeout and
# the 8 s --graceful-timeout, which a shutdown that ignored its own bound would reach.
EXIT_BOUND = 6.0


async def seconds_to_exit(daemon: Daemon, signalled_at: float) -> float:
    """How long after `signalled_at` (trio time) the daemon exited 0."""
    assert await daemon.exited() == 0
    return trio.current_time() - signalled_at


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_signal_mid_run_cancels_every_run_delivers_their_run_completes_and_exits_0(
    start_daemon: DaemonFactory, project: Path, signum: signal.Signals
) -> None:
    daemon = start_daemon()
    async with daemon.client() as client:
        ws = await open_workspace(client, project)
        first, second = await ws.new_session("one"), await ws.new_session("two")
        runs = [await ws.send(first, HANG), await ws.send(second, HANG), await ws.send(first, "queued")]
        assert runs[2]["queued"] is True
        for reply in runs[:2]:

            def streaming(e: dict[str, Any], run_id: str = reply["run_id"]) -> bool:
                return bool(e["type"] == "message.delta" and e["payload"]["run_id"] == run_id)

            await ws.events.until(streaming)
        daemon.proc.send_signal(signum)
        signalled_at = trio.current_time()
        for reply in runs:
            rc = await ws.events.until_complete(reply["run_id"])
            assert rc["cancelled"] is True and rc["error"] is None
        closed = await ws.events.until(lambda e: e["type"] == "workspace.closed")
        assert closed["payload"] == {"workspace_id": ws.id, "reason": "shutdown", "error": None}
    assert (took := await seconds_to_exit(daemon, signalled_at)) < EXIT_BOUND, took
    assert not daemon.socket_path.exists()


async def test_shutdown_with_a_stuck_subscriber_still_exits_within_seconds(
    start_daemon: DaemonFactory, project: Path
) -> None:
    daemon = start_daemon("--subscriber-buffer", "64")
    stuck = await open_raw(daemon)
    opened = await stuck.call("workspace.open", {"path": str(project)})
    await stuck.call("events.subscribe", {"workspace_id": opened.result["id"]})
    async with daemon.client() as client:
        ws = await open_workspace(client, project)
        session_id = await ws.new_session()
        reply = await ws.send(session_id, {"chunks": ["y" * 16384] * 300, "delay_ms": 2, "hang": True})
        await ws.events.until(delta_reaching(300 * 16384))
        assert (await client.call("server.status"))["events_dropped"] > 0
        daemon.proc.send_signal(signal.SIGTERM)
        signalled_at = trio.current_time()
        # The subscriber that reads gets its RunComplete at once...
        rc = await ws.events.until_complete(reply["run_id"])
        assert rc["cancelled"] is True
        # ...and while the daemon still waits on the stuck one, new work is refused.
        with pytest.raises(RpcError) as refused:
            await client.call("session.create", {"workspace_id": ws.id})
        assert refused.value.code == ErrorCode.SHUTTING_DOWN
        assert await client.call("ping") == {}
    # The must-deliver timeout is 10 s, but shutdown waits on a stuck
    # subscriber only briefly.
    assert (took := await seconds_to_exit(daemon, signalled_at)) < EXIT_BOUND, took


async def test_server_shutdown_replies_then_stops_the_daemon(start_daemon: DaemonFactory) -> None:
    daemon = start_daemon()
    async with daemon.client() as client:
        assert await client.call("server.shutdown") == {}
    assert await daemon.exited() == 0


async def test_server_shutdown_if_idle_refuses_while_a_run_is_active(
    start_daemon: DaemonFactory, project: Path
) -> None:
    daemon = start_daemon()
    async with daemon.client() as client:
        ws = await open_workspace(client, project)
        session_id = await ws.new_session()
        reply = await ws.send(session_id, HANG)
        with pytest.raises(RpcError) as refused:
            await client.call("server.shutdown", {"if_idle": True})
        assert refused.value.code == ErrorCode.CONFLICT
        assert "1 active run" in refused.value.message
        await ws.cancel(session_id)
        await ws.events.until_complete(reply["run_id"])
        assert await client.call("server.shutdown", {"if_idle": True}) == {}
    assert await daemon.exited() == 0
