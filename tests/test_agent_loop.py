"""The agent loop through a real daemon: model turns, tool calls and their results, the step limit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio
from loopback_http import Streamed, start_loopback_server
from support import DaemonFactory, Workspace, alive, gone, run_agentctl
from test_models_e2e import HELLO, configure

from agentd.agent._history import turns
from agentd.models import ToolCall, ToolResult, Turn
from agentd.protocol import Message, ToolCallPart, ToolResultPart


def step_calls(*calls: dict[str, Any]) -> dict[str, Any]:
    return {"tool_calls": list(calls)}


async def messages_of(ws: Workspace, session_id: str, run_id: str) -> list[dict[str, Any]]:
    messages = await ws.client.call("session.messages", {"workspace_id": ws.id, "session_id": session_id})
    return [m for m in messages if m["run_id"] == run_id]


async def test_an_unknown_tool_is_an_error_result_the_model_reads_and_the_run_goes_on(ws: Workspace) -> None:
    session_id = await ws.new_session()
    script = {"steps": [step_calls({"name": "frobnicate", "arguments": {"x": 1}}), {"chunks": ["done"]}]}
    reply = await ws.send(session_id, script)
    rc = await ws.events.until_complete(reply["run_id"])
    assert (rc["error"], rc["cancelled"], rc["text"], rc["stop_reason"]) == (None, False, "done", "stop")
    user, asked, results, answer = await messages_of(ws, session_id, reply["run_id"])
    assert [m["role"] for m in (user, asked, results, answer)] == ["user", "assistant", "tool", "assistant"]
    assert asked["finish_reason"] == "tool_calls"
    assert asked["parts"] == [
        {"type": "tool_call", "call_id": "call_1_1", "name": "frobnicate", "arguments": '{"x": 1}'}
    ]
    [result] = results["parts"]
    assert (result["type"], result["call_id"], result["status"]) == ("tool_result", "call_1_1", "error")
    assert result["output"].startswith("unknown tool 'frobnicate'")
    assert answer["text"] == "done" and answer["finish_reason"] == "stop"
    assert rc["message_id"] == answer["id"]
    started = [e["payload"] for e in ws.events.of_type("tool.started")]
    finished = [e["payload"] for e in ws.events.of_type("tool.finished")]
    assert [(p["call_id"], p["name"]) for p in started] == [("call_1_1", "frobnicate")]
    assert [(p["call_id"], p["status"]) for p in finished] == [("call_1_1", "error")]
    # message.updated carries the calls, message.created the results.
    updated = [e["payload"] for e in ws.events.of_type("message.updated") if e["payload"]["id"] == asked["id"]]
    assert updated and updated[0]["parts"] == asked["parts"]
    created = [e["payload"] for e in ws.events.of_type("message.created") if e["payload"]["id"] == results["id"]]
    assert created and created[0]["parts"] == results["parts"]


async def test_arguments_that_are_not_json_are_an_error_result_not_a_crash(ws: Workspace) -> None:
    session_id = await ws.new_session()
    script = {"steps": [step_calls({"name": "frobnicate", "arguments": '{"path": "REA'}), {"chunks": ["ok"]}]}
    reply = await ws.send(session_id, script)
    rc = await ws.events.until_complete(reply["run_id"])
    assert (rc["error"], rc["text"]) == (None, "ok")
    _user, asked, results, _answer = await messages_of(ws, session_id, reply["run_id"])
    assert asked["parts"][0]["arguments"] == '{"path": "REA'
    assert results["parts"][0]["status"] == "error"


async def test_the_step_limit_ends_the_run_with_a_clear_reason(ws: Workspace) -> None:
    session_id = await ws.new_session()
    # One more step than the default limit of 50 model turns.
    script = {"steps": [step_calls({"name": "frobnicate"}) for _ in range(51)]}
    reply = await ws.send(session_id, script)
    rc = await ws.events.until_complete(reply["run_id"])
    assert rc["stop_reason"] == "step_limit"
    assert rc["error"] is not None and "step limit" in rc["error"] and "50" in rc["error"]
    messages = await messages_of(ws, session_id, reply["run_id"])
    assert [m["role"] for m in messages].count("assistant") == 50
    # The last tool turn is stored: the session's next run can go on from it.
    assert messages[-1]["role"] == "tool"


async def test_several_calls_in_one_turn_each_get_a_result_in_order(ws: Workspace) -> None:
    session_id = await ws.new_session()
    calls = [{"name": f"nope{i}", "id": f"c{i}"} for i in range(3)]
    reply = await ws.send(session_id, {"steps": [step_calls(*calls)]})
    rc = await ws.events.until_complete(reply["run_id"])
    assert rc["error"] is None
    _user, _asked, results, last = await messages_of(ws, session_id, reply["run_id"])
    assert [p["call_id"] for p in results["parts"]] == ["c0", "c1", "c2"]
    # After its last step the scripted model finishes without text.
    assert (last["role"], last["text"], last["finish_reason"]) == ("assistant", "", "stop")


def test_history_is_the_messages_with_their_calls_and_results() -> None:
    def msg(role: str, text: str = "", parts: tuple[Any, ...] = ()) -> Message:
        return Message("m", "s", role, text, "r", 0.0, "stop", parts)

    history = turns(
        [
            msg("user", "hi"),
            msg("assistant", "looking", (ToolCallPart("a", "view", "{}"), ToolCallPart("b", "ls", "{}"))),
            msg("tool", parts=(ToolResultPart("a", "view", "ok", "text", "1 line"),)),
            msg("assistant", "", (ToolCallPart("c", "bash", "{}"),)),
            msg("user", "again"),
        ]
    )
    # Unanswered calls ("b", "c": the daemon stopped during them) are the providers' to pair.
    assert history == [
        Turn("user", "hi"),
        Turn("assistant", "looking", tool_calls=(ToolCall("a", "view", "{}"), ToolCall("b", "ls", "{}"))),
        Turn("tool", "", tool_results=(ToolResult("a", "view", "text"),)),
        Turn("assistant", "", tool_calls=(ToolCall("c", "bash", "{}"),)),
        Turn("user", "again"),
    ]


async def test_the_workspace_instructions_reach_the_model(
    start_daemon: DaemonFactory, project: Path, env: dict[str, str]
) -> None:
    (project / "CLAUDE.md").write_text("Claude's rules\n")
    async with trio.open_nursery() as nursery:
        server = await start_loopback_server(nursery)
        configure(env, server.url)
        start_daemon()
        server.script(Streamed([HELLO]), Streamed([HELLO]), Streamed([HELLO]))
        result = await run_agentctl("run", "first", env=env, cwd=project)
        assert result.returncode == 0, result.stderr
        # CLAUDE.md is read when there is no AGENTS.md ...
        assert "Claude's rules" in server.requests[0].json["messages"][0]["content"]
        (project / "AGENTS.md").write_text("Use tabs. Never touch vendor/.\n")
        result = await run_agentctl("run", "second", env=env, cwd=project)
        assert result.returncode == 0, result.stderr
        # ... and AGENTS.md, read afresh for each run, wins over it.
        system = server.requests[1].json["messages"][0]
        assert system["role"] == "system"
        assert "Use tabs. Never touch vendor/." in system["content"]
        assert "Claude's rules" not in system["content"]
        # A link is not followed: it could point anywhere on the machine.
        outside = project.parent / "secret.txt"
        outside.write_text("the user's secret\n")
        (project / "AGENTS.md").unlink()
        (project / "CLAUDE.md").unlink()
        (project / "AGENTS.md").symlink_to(outside)
        result = await run_agentctl("run", "third", env=env, cwd=project)
        assert result.returncode == 0, result.stderr
        assert "the user's secret" not in server.requests[2].json["messages"][0]["content"]
        nursery.cancel_scope.cancel()


# --- with the real tools ---------------------------------------------------------------------------------


async def test_cancelling_a_run_in_a_tool_kills_its_group_and_records_the_call_cancelled(
    ws: Workspace, project: Path
) -> None:
    session_id = await ws.new_session()
    command = "sleep 30 & echo $! > child.pid; sleep 30"
    script = {"steps": [step_calls({"name": "bash", "arguments": {"command": command}}), {"chunks": ["never"]}]}
    reply = await ws.send(session_id, script, allow=["*"])
    await ws.events.until(lambda e: e["type"] == "tool.started" and e["payload"]["run_id"] == reply["run_id"])
    pidfile = project / "child.pid"
    with trio.fail_after(10):
        while not pidfile.exists() or not pidfile.read_text().strip():
            await trio.sleep(0.01)
    child = int(pidfile.read_text())
    assert alive(child)
    await ws.cancel(session_id)
    rc = await ws.events.until_complete(reply["run_id"])
    assert (rc["cancelled"], rc["error"], rc["stop_reason"]) == (True, None, "cancelled")
    # The shell's child went with its group.
    assert await gone(child)
    _user, asked, results = await messages_of(ws, session_id, reply["run_id"])
    assert asked["finish_reason"] == "tool_calls"
    [result] = results["parts"]
    assert result["status"] == "cancelled"
    [finished] = [e["payload"] for e in ws.events.of_type("tool.finished")]
    assert finished["status"] == "cancelled"
    # Nothing of the run after its RunComplete.
    complete_at = next(i for i, e in enumerate(ws.events.seen) if e["type"] == "run.complete")
    assert not [e for e in ws.events.seen[complete_at + 1 :] if e["payload"].get("run_id") == reply["run_id"]]


async def test_reads_of_one_turn_run_together_and_a_write_runs_alone_in_its_place(ws: Workspace, project: Path) -> None:
    (project / "a.txt").write_text("old\n")
    (project / "b.txt").write_text("bee\n")
    session_id = await ws.new_session()
    calls = [
        {"name": "view", "arguments": {"path": "a.txt"}, "id": "v1"},
        {"name": "view", "arguments": {"path": "b.txt"}, "id": "v2"},
        {"name": "write", "arguments": {"path": "a.txt", "content": "new\n"}, "id": "w"},
        {"name": "view", "arguments": {"path": "a.txt"}, "id": "v3"},
    ]
    reply = await ws.send(session_id, {"steps": [step_calls(*calls)]}, allow=["*"])
    rc = await ws.events.until_complete(reply["run_id"])
    assert rc["error"] is None and rc["changes"] == 1
    order = [
        (e["type"].split(".")[1], e["payload"]["call_id"])
        for e in ws.events.seen
        if e["type"] in ("tool.started", "tool.finished")
    ]
    # The two views start before either ends; the write waits for both, and the last view for it.
    assert sorted(order[:2]) == [("started", "v1"), ("started", "v2")]
    assert sorted(order[2:4]) == [("finished", "v1"), ("finished", "v2")]
    assert order[4:] == [("started", "w"), ("finished", "w"), ("started", "v3"), ("finished", "v3")]
    _user, _asked, results, _last = await messages_of(ws, session_id, reply["run_id"])
    by_id = {p["call_id"]: p for p in results["parts"]}
    assert "old" in by_id["v1"]["output"] and "new" in by_id["v3"]["output"]
    assert all(p["status"] == "ok" for p in results["parts"])


async def test_calls_of_an_answer_cut_short_are_not_run(
    start_daemon: DaemonFactory, project: Path, env: dict[str, str]
) -> None:
    chunk = '{"choices":[{"index":0,"delta":%s,"finish_reason":%s}]}'
    call = '{"tool_calls":[{"index":0,"id":"c1","type":"function","function":{"name":"write","arguments":"{\\"pa"}}]}'
    body = b"".join(
        f"data: {line}\n\n".encode()
        for line in (chunk % ('{"content":"Let me write"}', "null"), chunk % (call, '"length"'), "[DONE]")
    )
    async with trio.open_nursery() as nursery:
        server = await start_loopback_server(nursery)
        configure(env, server.url)
        start_daemon()
        server.script(Streamed([body]))
        result = await run_agentctl("run", "--yolo", "--json", "write it", env=env, cwd=project)
        assert result.returncode == 0, result.stderr
        rc = json.loads(result.stdout.splitlines()[-1])["payload"]
        assert (rc["stop_reason"], rc["text"], rc["changes"]) == ("length", "Let me write", 0)
        # One model turn: the half-streamed call was not run, and not answered.
        assert len(server.requests) == 1
        types = [json.loads(line)["type"] for line in result.stdout.splitlines()]
        assert "tool.started" not in types
        nursery.cancel_scope.cancel()


async def test_a_call_with_no_arguments_at_all_asks_with_the_tools_defaults(ws: Workspace) -> None:
    session_id = await ws.new_session()
    # Empty arguments are the empty object: ls takes it, with its defaults.
    reply = await ws.send(session_id, {"steps": [step_calls({"name": "ls", "arguments": ""}), {"chunks": ["ok"]}]})
    rc = await ws.events.until_complete(reply["run_id"])
    assert (rc["error"], rc["text"]) == (None, "ok")
    _user, _asked, results, _answer = await messages_of(ws, session_id, reply["run_id"])
    assert results["parts"][0]["status"] == "ok"
