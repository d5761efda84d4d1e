"""MCP servers as tools, end to end: a real agentd, real MCP servers (tests/mcp_servers), the scripted model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from mcp_servers import START_WAIT, TOOLBOX, toolbox
from support import WAIT, DaemonFactory, Workspace, alive, gone, open_workspace

from agentctl.client import RpcError
from agentd.rpc import ErrorCode


async def attach(ws: Workspace, session: str, *servers: dict[str, object]) -> None:
    await ws.client.call(
        "session.mcp_servers", {"workspace_id": ws.id, "session_id": session, "servers": list(servers)}
    )


TOKEN = "tok-1234567890-secret"


def _status_of(name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["type"] == "mcp.status" and e["payload"]["server"]["name"] == name


async def until_server(
    ws: Workspace, name: str, wanted: Callable[[dict[str, Any]], bool], timeout: float = START_WAIT
) -> dict[str, Any]:
    """Server `name` as its latest `mcp.status` shows it, once that is `wanted`: already seen last, or still to come."""
    is_status = _status_of(name)
    latest = [e for e in ws.events.seen if is_status(e)][-1:]
    if latest and wanted(latest[0]["payload"]["server"]):
        return latest[0]["payload"]["server"]  # type: ignore[no-any-return]
    event = await ws.events.until(lambda e: is_status(e) and wanted(e["payload"]["server"]), timeout)
    return event["payload"]["server"]  # type: ignore[no-any-return]


async def until_state(ws: Workspace, name: str, state: str, timeout: float = START_WAIT) -> dict[str, Any]:
    """Server `name` once its latest `mcp.status` says `state`."""
    return await until_server(ws, name, lambda server: server["state"] == state, timeout)


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


async def test_a_server_tool_result_that_is_an_error_image_or_too_long_is_told_to_the_model(ws: Workspace) -> None:
    session = await ws.new_session()
    await attach(ws, session, toolbox())
    await until_state(ws, "box", "ready")
    sent = await ws.send(
        session,
        calls(
            [{"name": "mcp__box__refuse", "arguments": {"reason": "no such ticket"}}],
            [{"name": "mcp__box__picture"}],
            [{"name": "mcp__box__big", "arguments": {"chars": 100_000}}],
            [{"name": "mcp__box__add", "arguments": {"a": "two"}}],
        ),
        allow=["*"],
    )
    await ws.events.until_complete(sent["run_id"])
    refused, picture, big, bad = await tool_results(ws, session)
    assert refused["status"] == "error"
    assert "no such ticket" in refused["output"]
    assert picture["status"] == "ok"
    assert picture["output"].startswith("a one-pixel picture\n[image: image/png, ")
    assert "not shown to the model" in picture["output"]
    assert big["status"] == "ok"
    assert len(big["output"]) < 31_000
    assert big["output"].endswith("[... 70000 more characters not shown]")
    assert bad["status"] == "error"
    assert "mcp__box__add" in bad["output"] or "box: add" in bad["output"]


async def test_a_server_runs_in_the_workspace_without_the_daemons_keys(
    env: dict[str, str], start_daemon: DaemonFactory, project: Path
) -> None:
    env["OPENAI_API_KEY"] = "sk-daemon-key-never-for-servers"
    daemon = start_daemon()
    async with daemon.client() as client:
        ws = await open_workspace(client, project)
        session = await ws.new_session()
        server = toolbox()
        server["env"] = {"TOOLBOX_TOKEN": TOKEN}
        await attach(ws, session, server)
        await until_state(ws, "box", "ready")
        three: list[dict[str, Any]] = [
            {"name": "mcp__box__where"},
            {"name": "mcp__box__echo", "arguments": {"text": TOKEN}},
            {"name": "mcp__box__token"},
        ]
        sent = await ws.send(session, calls(three), allow=["*"])
        await ws.events.until_complete(sent["run_id"])
        where, echoed, told = await tool_results(ws, session)
        messages = await client.call("session.messages", {"workspace_id": ws.id, "session_id": session})
    assert where["output"] == f"cwd={os.path.realpath(project)} env=TOOLBOX_TOKEN,PATH"
    # The token the server was given is taken out of its results, as a provider's key is.
    assert echoed["output"] == "[box env TOOLBOX_TOKEN]"
    assert told["output"] == "using token [box env TOOLBOX_TOKEN]"
    # (The model's own call carries it as an argument, in the prompt here: that is the model's, not the server's.)
    results = [m for m in messages if m["role"] == "tool"]
    finished = [e for e in ws.events.seen if e["type"] == "tool.finished"]
    assert TOKEN not in json.dumps(results) and TOKEN not in json.dumps(finished)
    # Its stderr goes to the daemon's log, its env's values never do.
    with trio.fail_after(WAIT):
        while "mcp box: echo: [TOOLBOX_TOKEN]" not in daemon.log():
            await trio.sleep(0.05)
    assert TOKEN not in daemon.log()


async def test_a_run_does_not_wait_for_a_slow_server_and_its_tools_come_once_it_is_ready(ws: Workspace) -> None:
    session = await ws.new_session()
    await attach(ws, session, toolbox("slow", "--start-delay", "20"))
    add = [{"name": "mcp__slow__add", "arguments": {"a": 1, "b": 2}}]
    started = trio.current_time()
    sent = await ws.send(session, calls(add), allow=["*"])
    done = await ws.events.until_complete(sent["run_id"], timeout=WAIT)
    waited = trio.current_time() - started
    # The run waited its bound ([agent] mcp_wait, 2 s), not the server's 20 s, and went on without its tools.
    assert done["error"] is None
    assert waited < 12, waited
    (first,) = await tool_results(ws, session)
    assert first["status"] == "error"
    assert "unknown tool 'mcp__slow__add'" in first["output"]
    await until_state(ws, "slow", "ready", timeout=START_WAIT + 20)
    sent = await ws.send(session, calls(add), allow=["*"])
    await ws.events.until_complete(sent["run_id"])
    _first, second = await tool_results(ws, session)
    assert (second["status"], second["output"]) == ("ok", "3")


async def test_a_server_that_crashes_mid_call_is_a_tool_error_and_is_restarted_with_backoff(
    ws: Workspace, short_tmp: Path
) -> None:
    starts = short_tmp / "starts"
    session = await ws.new_session()
    await attach(ws, session, toolbox("box", "--starts", str(starts)))
    await until_state(ws, "box", "ready")
    sent = await ws.send(session, calls([{"name": "mcp__box__crash"}]), allow=["*"])
    done = await ws.events.until_complete(sent["run_id"])
    assert done["error"] is None
    (result,) = await tool_results(ws, session)
    assert result["status"] == "error"
    assert "the connection ended during the call" in result["output"]
    failed = await until_state(ws, "box", "failed")
    assert failed["error"] == "the connection ended: it exited (exit status 3)"
    assert failed["retry_in"] is not None and 0 < failed["retry_in"] <= 1
    again = await until_state(ws, "box", "ready")
    assert again["restarts"] == 1
    assert len(starts.read_text().split()) == 2
    listed = await ws.client.call("mcp.list", {"workspace_id": ws.id})
    (view,) = listed["servers"]
    assert (view["name"], view["state"], view["restarts"]) == ("box", "ready", 1)
    assert view["error"] == failed["error"]
    # The backoff doubles: a second crash waits 2 s before the next start.
    sent = await ws.send(session, calls([{"name": "mcp__box__crash"}]), allow=["*"])
    await ws.events.until_complete(sent["run_id"])
    failed = await until_state(ws, "box", "failed")
    assert 1 < failed["retry_in"] <= 2


async def test_a_run_cancelled_during_a_call_that_never_answers_reports_cancelled(ws: Workspace) -> None:
    session = await ws.new_session()
    await attach(ws, session, toolbox())
    await until_state(ws, "box", "ready")
    sent = await ws.send(session, calls([{"name": "mcp__box__never"}]), allow=["*"])
    await ws.events.until(lambda e: e["type"] == "tool.started" and e["payload"]["name"] == "mcp__box__never")
    await ws.cancel(session)
    done = await ws.events.until_complete(sent["run_id"])
    assert done["cancelled"] is True
    (result,) = await tool_results(ws, session)
    assert result["status"] == "cancelled"
    # The server lives on, and answers the next call.
    sent = await ws.send(session, calls([{"name": "mcp__box__add", "arguments": {"a": 1, "b": 1}}]), allow=["*"])
    await ws.events.until_complete(sent["run_id"])
    assert (await tool_results(ws, session))[-1]["output"] == "2"


async def test_an_mcp_tool_asks_permission_like_bash(ws: Workspace) -> None:
    session = await ws.new_session()
    await attach(ws, session, toolbox())
    await until_state(ws, "box", "ready")
    sent = await ws.send(session, calls([{"name": "mcp__box__echo", "arguments": {"text": "hello"}}]))
    asked = await ws.events.until(lambda e: e["type"] == "permission.request")
    request = asked["payload"]
    assert request["tool"] == "mcp__box__echo"
    assert request["description"] == 'box: echo {"text":"hello"}'
    assert request["params"] == {"text": "hello"}
    await ws.client.call(
        "permission.grant", {"workspace_id": ws.id, "request_id": request["request_id"], "action": "deny"}
    )
    await ws.events.until_complete(sent["run_id"])
    (result,) = await tool_results(ws, session)
    assert result["status"] == "denied"


async def test_closing_the_workspace_leaves_no_server_process(
    start_daemon: DaemonFactory, project: Path, short_tmp: Path
) -> None:
    daemon = start_daemon("--idle-grace=0.2")
    async with daemon.client() as client:
        await _close_with_server_running(await open_workspace(client, project), short_tmp)


async def _close_with_server_running(ws: Workspace, short_tmp: Path) -> None:
    starts = short_tmp / "starts"
    session = await ws.new_session()
    await attach(ws, session, toolbox("box", "--starts", str(starts)))
    await until_state(ws, "box", "ready")
    sent = await ws.send(session, calls([{"name": "mcp__box__spawn"}]), allow=["*"])
    await ws.events.until_complete(sent["run_id"])
    (result,) = await tool_results(ws, session)
    child = int(result["output"])
    (server,) = (int(pid) for pid in starts.read_text().split())
    assert alive(server) and alive(child)
    # The last client lets go of it: after its idle grace, the workspace closes.
    await ws.client.call("workspace.close", {"workspace_id": ws.id})
    await ws.events.until(lambda e: e["type"] == "workspace.closed")
    assert await gone(server)
    # The child ignored SIGTERM: the group's SIGKILL took it.
    assert await gone(child)


async def test_a_message_over_the_cap_is_a_tool_error_and_junk_on_stdout_is_skipped(ws: Workspace, daemon: Any) -> None:
    session = await ws.new_session()
    await attach(ws, session, toolbox("box", "--junk"))
    await until_state(ws, "box", "ready")
    sent = await ws.send(
        session,
        calls([{"name": "mcp__box__big", "arguments": {"chars": 5 * 1024 * 1024}}]),
        allow=["*"],
    )
    await ws.events.until_complete(sent["run_id"])
    (result,) = await tool_results(ws, session)
    assert result["status"] == "error"
    assert "over 4 MiB" in result["output"]
    await until_state(ws, "box", "failed")
    assert "skipped a stdout line that is not JSON-RPC: this line is not JSON-RPC" in daemon.log()


async def test_bad_session_servers_are_refused_by_name(ws: Workspace) -> None:
    session = await ws.new_session()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"name": "a__b", "command": ["x"]}, "may not hold '__'"),
        ({"name": "box"}, "needs exactly one of command (stdio) and url"),
        ({"name": "box", "command": ["x"], "url": "http://localhost/"}, "needs exactly one of"),
        ({"name": "box", "url": "ftp://host/"}, "url must be an http:// or https:// URL"),
        ({"name": "box", "command": [""]}, "the program, is empty"),
        ({"name": "box", "command": ["x"], "env": {"NOT A NAME": "v"}}, "not a variable name"),
        (
            {
                "name": "box",
                "url": "http://localhost/",
                "headers": {"Authorization": "Bearer s3cr3t-value"},
                "env": {"A": "b"},
            },
            "env is for stdio",
        ),
    ]
    for spec, message in cases:
        with pytest.raises(RpcError) as info:
            await attach(ws, session, spec)
        assert info.value.code == ErrorCode.INVALID_PARAMS, spec
        assert message in str(info.value), (spec, info.value)
        assert "servers[0]: " in str(info.value)
        assert "s3cr3t" not in str(info.value)
    with pytest.raises(RpcError, match="the name 'box' is given twice"):
        await attach(ws, session, toolbox(), toolbox())
    with pytest.raises(RpcError) as info:
        await ws.client.call("session.mcp_servers", {"workspace_id": ws.id, "session_id": "nope", "servers": []})
    assert info.value.code == ErrorCode.NOT_FOUND


async def test_a_streamable_http_server_is_called_with_its_headers(ws: Workspace) -> None:
    server = await trio.lowlevel.open_process([sys.executable, TOOLBOX, "--http"], stdout=subprocess.PIPE)
    try:
        assert server.stdout is not None
        with trio.fail_after(WAIT):
            port = int((await server.stdout.receive_some(64)).split()[0])
        session = await ws.new_session()
        url = f"http://127.0.0.1:{port}/mcp"
        await attach(ws, session, {"name": "web", "url": url, "headers": {"X-Token": "t-123456789"}})
        ready = await until_state(ws, "web", "ready")
        assert ready["transport"] == "http"
        step = [
            {"name": "mcp__web__add", "arguments": {"a": 20, "b": 22}},
            {"name": "mcp__web__header", "arguments": {"name": "x-token"}},
        ]
        sent = await ws.send(session, calls(step), allow=["*"])
        await ws.events.until_complete(sent["run_id"])
        added, header = await tool_results(ws, session)
        assert (added["status"], added["output"]) == ("ok", "42")
        # The server got the header, and said it back; the value is a credential, taken out of the result.
        assert (header["status"], header["output"]) == ("ok", "[web header X-Token]")
    finally:
        server.kill()
        with trio.move_on_after(WAIT):
            await server.wait()


async def test_tools_a_server_adds_later_are_offered_from_the_next_turn(ws: Workspace) -> None:
    session = await ws.new_session()
    await attach(ws, session, toolbox())
    ready = await until_state(ws, "box", "ready")
    assert "mcp__box__shout" not in ready["tools"]
    sent = await ws.send(session, calls([{"name": "mcp__box__grow"}]), allow=["*"])
    await ws.events.until_complete(sent["run_id"])
    # The server tells of its new tool during the call; its listing may come after the run's end.
    grown = await until_server(ws, "box", lambda server: "mcp__box__shout" in server["tools"])
    assert grown["state"] == "ready"
    sent = await ws.send(session, calls([{"name": "mcp__box__shout", "arguments": {"text": "hey"}}]), allow=["*"])
    await ws.events.until_complete(sent["run_id"])
    assert (await tool_results(ws, session))[-1]["output"] == "HEY"


async def _server_and_child(ws: Workspace, session: str, starts: Path) -> tuple[int, int]:
    """Start the toolbox for `session`, have it spawn a child that ignores SIGTERM; (server pid, child pid)."""
    await attach(ws, session, toolbox("box", "--starts", str(starts)))
    await until_state(ws, "box", "ready")
    sent = await ws.send(session, calls([{"name": "mcp__box__spawn"}]), allow=["*"])
    await ws.events.until_complete(sent["run_id"])
    child = int((await tool_results(ws, session))[-1]["output"])
    server = int(starts.read_text().split()[-1])
    assert alive(server) and alive(child)
    return server, child


async def test_a_crashed_servers_children_are_killed_with_its_group(ws: Workspace, short_tmp: Path) -> None:
    session = await ws.new_session()
    server, child = await _server_and_child(ws, session, short_tmp / "starts")
    sent = await ws.send(session, calls([{"name": "mcp__box__crash"}]), allow=["*"])
    await ws.events.until_complete(sent["run_id"])
    assert await gone(server)
    assert await gone(child)


async def test_deleting_a_session_stops_its_servers(ws: Workspace, short_tmp: Path) -> None:
    session = await ws.new_session()
    server, child = await _server_and_child(ws, session, short_tmp / "starts")
    await ws.client.call("session.delete", {"workspace_id": ws.id, "session_id": session})
    stopped = await until_state(ws, "box", "stopped")
    assert stopped["session_id"] == session
    assert await gone(server) and await gone(child)
    listed = await ws.client.call("mcp.list", {"workspace_id": ws.id})
    assert listed["servers"] == []


async def test_daemon_shutdown_stops_every_server(start_daemon: DaemonFactory, project: Path, short_tmp: Path) -> None:
    daemon = start_daemon()
    async with daemon.client() as client:
        ws = await open_workspace(client, project)
        session = await ws.new_session()
        server, child = await _server_and_child(ws, session, short_tmp / "starts")
        status = await client.call("server.status")
        assert status["mcp_servers"] == {"ready": 1}
    daemon.proc.send_signal(signal.SIGTERM)
    assert await daemon.exited() == 0
    assert not alive(server)
    assert await gone(child)
