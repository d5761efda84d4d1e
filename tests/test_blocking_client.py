"""The blocking client `agentctl` runs on: replies by msgid, notifications kept in order around them."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from support import Daemon

from agentctl.blocking import BlockingClient
from agentctl.errors import ConnectionLost, RpcError


def drive(daemon: Daemon, project: Path) -> list[str]:
    with BlockingClient.connect(daemon.socket_path) as client:
        ws = client.call("workspace.open", {"path": str(project)})
        sub = client.call("events.subscribe", {"workspace_id": ws["id"]})
        session = client.call("session.create", {"workspace_id": ws["id"]})
        client.call(
            "agent.send",
            {
                "workspace_id": ws["id"],
                "session_id": session["id"],
                "prompt": '{"chunks": ["a", " b", " c"]}',
                "model": "scripted",
                "run_id": "r1",
            },
        )
        # Events that arrived while calls waited are kept, in order.
        assert client.call("ping") == {}
        types = []
        while True:
            item = client.next_notification(timeout=10)
            assert item is not None, "no event within 10 s"
            method, params = item
            assert method == "event" and params[0]["subscription_id"] == sub["subscription_id"]
            types.append(params[0]["type"])
            if params[0]["type"] == "run.complete":
                break
        # The session going idle is the last thing that happens; then silence.
        item = client.next_notification(timeout=10)
        assert item is not None and item[1][0]["type"] == "session.updated"
        assert client.next_notification(timeout=0.05) is None
        with pytest.raises(RpcError) as refused:
            client.call("session.get", {"workspace_id": ws["id"], "session_id": "nope"})
        assert refused.value.code == 2
        return types


async def test_blocking_client_keeps_notifications_in_order_around_replies(daemon: Daemon, project: Path) -> None:
    with trio.fail_after(20):
        # Abandoned on cancel: otherwise the bound could not end a thread that hangs.
        types = await trio.to_thread.run_sync(drive, daemon, project, abandon_on_cancel=True)
    assert types[0] == "session.created"
    assert types[-3:] == ["message.delta", "message.updated", "run.complete"]
    assert types.count("message.delta") == 3


def lose(daemon: Daemon) -> str:
    with BlockingClient.connect(daemon.socket_path) as client:
        assert client.call("ping") == {}
        client.call("server.shutdown")
        with pytest.raises(ConnectionLost) as lost:
            while True:
                client.next_notification(timeout=10)
        with pytest.raises(ConnectionLost):
            client.call("ping")
        return str(lost.value)


async def test_blocking_client_reports_a_closed_connection(daemon: Daemon) -> None:
    with trio.fail_after(20):
        # Abandoned on cancel: otherwise the bound could not end a thread that hangs.
        reason = await trio.to_thread.run_sync(lose, daemon, abandon_on_cancel=True)
    assert "closed the connection" in reason
