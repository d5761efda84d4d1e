"""MCP servers as tools, end to end: a real agentd starting real MCP servers (tests/mcp_servers), the scripted model calling them."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import trio
from support import WAIT, Workspace

TOOLBOX = str(Path(__file__).parent / "mcp_servers" / "toolbox.py")


def toolbox(name: str = "box", *args: str) -> dict[str, Any]:
    return {"name": name, "command": [sys.executable, TOOLBOX, *args]}


async def attach(ws: Workspace, session: str, *servers: dict[str, Any]) -> None:
    await ws.client.call(
        "session.mcp_servers", {"workspace_id": ws.id, "session_id": session, "servers": list(servers)}
    )


async def until_state(ws: Workspace, name: str, state: str, timeout: float = WAIT) -> dict[str, Any]:
    """The `mcp.status` event that says server `name` is in `state`."""
    event = await ws.events.until(
        lambda e: e["type"] == "mcp.status"
        and e["payload"]["server"]["name"] == name
        and e["payload"]["server"]["state"] == state,
        timeout,
    )
    return event["payload"]["server"]  # type: ignore[no-any-return]


def calls(*steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {"steps": [{"tool_calls": step} for step in steps]}


async def tool_results(ws: Workspace, session: str) -> list[dict[str, Any]]:
    messages = await ws.client.call("session.messages", {"workspace_id": ws.id, "session_id": session})
    return [part for m in messages if m["role"] == "tool" for part in m["parts"]]


async def test_a_session_server_tool_is_called_and_its_result_reaches_the_model(ws: Workspace) -> None:
    session = await ws.new_session()
    await attach(ws, session, toolbox())
    ready = await until_state(ws, "box", "ready")
    assert "mcp__box__add" in ready["tools"]
    sent = await ws.send(
        session, calls([{"name": "mcp__box__add", "arguments": {"a": 2, "b": 40}}]), allow=["mcp__box__add"]
    )
    done = await ws.events.until_complete(sent["run_id"])
    assert done["error"] is None
    (result,) = await tool_results(ws, session)
    assert result["name"] == "mcp__box__add"
    assert result["status"] == "ok"
    assert result["output"] == "42"
