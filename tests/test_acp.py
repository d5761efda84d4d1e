"""`agentctl acp` end to end: the official ACP client (asyncio) drives the real bridge against a real agentd.

The client side runs in a thread of its own (`asyncio.run`), as an editor
would be a process of its own; the bridge is the real `agentctl acp`
executable, the daemon the real one, the model `scripted` (the prompt is its
script). The raw tests write bytes on the bridge's stdin.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import acp
import pytest
import trio
from acp.exceptions import RequestError
from loopback_http import Streamed, start_loopback_server
from mcp_servers import START_WAIT
from support import WAIT, Daemon, DaemonFactory, agentctl_command, configure_loopback
from test_models_e2e import HELLO

from agentctl.blocking import BlockingClient

ACP = [*agentctl_command(), "acp", "--model", "scripted"]


def option_of_kind(options: list[Any], kind: str) -> str:
    """The id of the offered option of `kind` (`allow_once`...), as an editor's user picks one: by what it does."""
    (option_id,) = [o.option_id for o in options if o.kind == kind]
    return str(option_id)


class Editor:
    """An ACP client recording every session/update, answering permission requests with the option of kind `answer`.

    None: it cancels them.
    """

    def __init__(self, answer: str | None = "allow_once") -> None:
        self.answer = answer
        self.updates: list[tuple[str, Any]] = []
        self.asked: list[Any] = []
        self._changed = asyncio.Event()

    async def request_permission(self, session_id: str, tool_call: Any, options: list[Any], **kwargs: Any) -> Any:
        self.asked.append((session_id, tool_call, options))
        self._changed.set()
        if self.answer is None:
            return acp.RequestPermissionResponse(outcome=acp.schema.DeniedOutcome(outcome="cancelled"))
        return acp.RequestPermissionResponse(
            outcome=acp.schema.AllowedOutcome(outcome="selected", option_id=option_of_kind(options, self.answer))
        )

    async def session_update(self, session_id: str, update: Any, **kwargs: Any) -> None:
        self.updates.append((session_id, update))
        self._changed.set()

    def texts(self, session_id: str, kind: str = "agent_message_chunk") -> str:
        return "".join(u.content.text for s, u in self.updates if s == session_id and u.session_update == kind)

    async def saw(self, session_id: str, text: str, kind: str = "agent_message_chunk") -> None:
        """The updates add up to `text`, soon: the SDK hands notifications to tasks of their own."""
        with contextlib.suppress(TimeoutError):
            await self.until(lambda: self.texts(session_id, kind) == text)
        assert self.texts(session_id, kind) == text

    async def until(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(WAIT):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()


def script(**keys: Any) -> list[Any]:
    return [acp.text_block(json.dumps(keys))]


async def in_editor(scenario: Callable[[], Awaitable[None]]) -> None:
    """Run an asyncio scenario to its end, from a trio test."""

    async def bounded() -> None:
        async with asyncio.timeout(WAIT * 3):
            await scenario()

    await trio.to_thread.run_sync(asyncio.run, bounded())


def bridge(editor: Editor, env: dict[str, str], cwd: Path, *extra: str) -> Any:
    # Editor has the two methods these tests need, not the whole Client protocol (files, terminals).
    client: Any = editor
    return acp.spawn_agent_process(
        client, ACP[0], *ACP[1:], *extra, env=env, cwd=cwd, transport_kwargs={"stderr": None}
    )


async def start(conn: Any, cwd: Path) -> str:
    await conn.initialize(protocol_version=1)
    session = await conn.new_session(cwd=str(cwd), mcp_servers=[])
    return str(session.session_id)


async def test_initialize_answers_version_1_and_capabilities(
    daemon: Daemon, env: dict[str, str], project: Path
) -> None:
    async def scenario() -> None:
        async with bridge(Editor(), env, project) as (conn, _):
            reply = await conn.initialize(protocol_version=1)
            assert reply.protocol_version == 1
            assert reply.agent_info.name == "agentd"
            caps = reply.agent_capabilities
            assert caps.load_session is True
            assert caps.prompt_capabilities.embedded_context is True and caps.prompt_capabilities.image is False
            assert caps.session_capabilities.list is not None
            # agentd runs stdio and streamable-HTTP MCP servers, not SSE ones.
            assert caps.mcp_capabilities.http is True and caps.mcp_capabilities.sse is False
            assert reply.auth_methods == []
            # A version we do not speak gets the one we do.
            assert (await conn.initialize(protocol_version=7)).protocol_version == 1

    await in_editor(scenario)


async def test_prompt_streams_text_and_ends_end_turn(daemon: Daemon, env: dict[str, str], project: Path) -> None:
    editor = Editor()

    async def scenario() -> None:
        async with bridge(editor, env, project) as (conn, _):
            await conn.initialize(protocol_version=1)
            session = await conn.new_session(cwd=str(project), mcp_servers=[])
            (option,) = session.config_options
            assert option.id == "model" and option.current_value == "scripted"
            assert {"echo", "scripted"} <= {o.value for o in option.options}
            reply = await conn.prompt(session_id=session.session_id, prompt=script(chunks=["Hello", ", world"]))
            assert reply.stop_reason == "end_turn"
            await editor.saw(session.session_id, "Hello, world")

    await in_editor(scenario)


async def test_run_error_is_an_error_response(daemon: Daemon, env: dict[str, str], project: Path) -> None:
    async def scenario() -> None:
        async with bridge(Editor(), env, project) as (conn, _):
            session_id = await start(conn, project)
            with pytest.raises(RequestError, match="boom"):
                await conn.prompt(session_id=session_id, prompt=script(chunks=["a"], error="boom"))

    await in_editor(scenario)


async def test_cancel_ends_the_prompt_cancelled(daemon: Daemon, env: dict[str, str], project: Path) -> None:
    editor = Editor()

    async def scenario() -> None:
        async with bridge(editor, env, project) as (conn, _):
            session_id = await start(conn, project)
            prompt = asyncio.create_task(conn.prompt(session_id=session_id, prompt=script(chunks=["a"], hang=True)))
            await editor.until(lambda: editor.texts(session_id) == "a")
            await conn.cancel(session_id=session_id)
            assert (await prompt).stop_reason == "cancelled"

    await in_editor(scenario)


async def test_model_config_option_switches_the_model(daemon: Daemon, env: dict[str, str], project: Path) -> None:
    editor = Editor()

    async def scenario() -> None:
        async with bridge(editor, env, project) as (conn, _):
            session_id = await start(conn, project)
            reply = await conn.set_config_option(config_id="model", session_id=session_id, value="echo")
            assert reply.config_options[0].current_value == "echo"
            await conn.prompt(session_id=session_id, prompt=[acp.text_block("plain words")])
            await editor.saw(session_id, "plain words")
            with pytest.raises(RequestError, match="no model 'nope'"):
                await conn.set_config_option(config_id="model", session_id=session_id, value="nope")

    await in_editor(scenario)


async def test_tool_call_permission_round_trip(daemon: Daemon, env: dict[str, str], project: Path) -> None:
    editor = Editor(answer="allow_once")
    (project / "notes.txt").write_text("seen\n")
    call = {"name": "bash", "arguments": {"command": "cat notes.txt"}}

    async def scenario() -> None:
        async with bridge(editor, env, project) as (conn, _):
            session_id = await start(conn, project)
            steps = [{"tool_calls": [call]}, {"chunks": ["done"]}]
            reply = await conn.prompt(session_id=session_id, prompt=script(steps=steps))
            assert reply.stop_reason == "end_turn"
            ((asked_session, tool_call, options),) = editor.asked
            assert asked_session == session_id and "cat notes.txt" in (tool_call.title or "")
            assert {o.kind for o in options} == {"allow_once", "allow_always", "reject_once", "reject_always"}

    await in_editor(scenario)
    async with daemon.client() as client:
        ws = await client.open_workspace(project)
        (session,) = await client.list_sessions(ws.id)
        messages = await client.call("session.messages", {"workspace_id": ws.id, "session_id": session.id})
    (result,) = [p for m in messages if m["role"] == "tool" for p in m["parts"]]
    assert result["status"] == "ok" and "seen" in result["output"]


async def test_an_edit_reaches_the_editor_as_a_tool_call_with_its_diff(
    daemon: Daemon, env: dict[str, str], project: Path
) -> None:
    editor = Editor(answer="allow_once")
    (project / "notes.txt").write_text("old line\n")
    call = {"name": "edit", "arguments": {"path": "notes.txt", "old_string": "old", "new_string": "new"}}

    def finished() -> list[Any]:
        return [u for _, u in editor.updates if u.session_update == "tool_call_update" and u.status == "completed"]

    async def scenario() -> None:
        async with bridge(editor, env, project) as (conn, _):
            session_id = await start(conn, project)
            reply = await conn.prompt(session_id=session_id, prompt=script(steps=[{"tool_calls": [call]}]))
            assert reply.stop_reason == "end_turn"
            await editor.until(lambda: bool(finished()))
        (started,) = [u for _, u in editor.updates if u.session_update == "tool_call"]
        assert (started.kind, started.status) == ("edit", "in_progress")
        assert [loc.path for loc in started.locations] == [str(project / "notes.txt")]
        # Each update's content replaces the call's whole content: the last one holds the diff too.
        diffs = [c for c in finished()[-1].content or [] if c.type == "diff"]
        assert [(d.path, d.old_text, d.new_text) for d in diffs] == [(str(project / "notes.txt"), "old", "new")]

    await in_editor(scenario)
    assert (project / "notes.txt").read_text() == "new line\n"


async def test_editor_cancelled_outcome_denies(daemon: Daemon, env: dict[str, str], project: Path) -> None:
    editor = Editor(answer=None)
    call = {"name": "bash", "arguments": {"command": "touch made"}}

    async def scenario() -> None:
        async with bridge(editor, env, project) as (conn, _):
            session_id = await start(conn, project)
            await conn.prompt(session_id=session_id, prompt=script(steps=[{"tool_calls": [call]}, {"chunks": ["x"]}]))
            assert len(editor.asked) == 1

    await in_editor(scenario)
    assert not (project / "made").exists()


async def test_load_replays_an_earlier_session_and_list_finds_it(
    daemon: Daemon, env: dict[str, str], project: Path
) -> None:
    first, second = Editor(), Editor()
    prompt = json.dumps({"chunks": ["Hello", ", world"]})

    async def scenario() -> None:
        async with bridge(first, env, project) as (conn, _):
            session_id = await start(conn, project)
            await conn.prompt(session_id=session_id, prompt=[acp.text_block(prompt)])
        async with bridge(second, env, project) as (conn, _):
            await conn.initialize(protocol_version=1)
            listed = await conn.list_sessions(cwd=str(project))
            assert [s.session_id for s in listed.sessions] == [session_id]
            assert listed.sessions[0].cwd == str(project)
            await conn.load_session(cwd=str(project), session_id=session_id, mcp_servers=[])
            await second.saw(session_id, prompt, "user_message_chunk")
            await second.saw(session_id, "Hello, world")
            # And live from there on.
            await conn.prompt(session_id=session_id, prompt=script(chunks=["more"]))
            await second.saw(session_id, "Hello, worldmore")

    await in_editor(scenario)


async def test_load_replays_tool_calls_in_their_final_state(daemon: Daemon, env: dict[str, str], project: Path) -> None:
    (project / "notes.txt").write_text("one\n")
    later = Editor()
    steps = [{"tool_calls": [{"name": "view", "arguments": {"path": "notes.txt"}}]}, {"chunks": ["read it"]}]

    async def scenario() -> None:
        async with bridge(Editor(), env, project) as (conn, _):
            session_id = await start(conn, project)
            assert (await conn.prompt(session_id=session_id, prompt=script(steps=steps))).stop_reason == "end_turn"
        async with bridge(later, env, project) as (conn, _):
            await conn.initialize(protocol_version=1)
            await conn.load_session(cwd=str(project), session_id=session_id, mcp_servers=[])
            await later.saw(session_id, "read it")
        calls = [u for _, u in later.updates if u.session_update in ("tool_call", "tool_call_update")]
        assert calls and all(u.tool_call_id == "call_1_1" for u in calls)
        # Told as it ended, never as running: the load replays the stored result.
        assert [u.status for u in calls][-1] == "completed" and "in_progress" not in [u.status for u in calls]
        assert calls[0].kind == "read" and [loc.path for loc in calls[0].locations] == [str(project / "notes.txt")]

    await in_editor(scenario)


async def test_two_bridges_on_one_session_see_each_others_runs(
    daemon: Daemon, env: dict[str, str], project: Path
) -> None:
    one, two = Editor(), Editor()

    async def scenario() -> None:
        async with bridge(one, env, project) as (conn1, _), bridge(two, env, project) as (conn2, _):
            session_id = await start(conn1, project)
            await conn2.initialize(protocol_version=1)
            await conn2.load_session(cwd=str(project), session_id=session_id, mcp_servers=[])
            await conn1.prompt(session_id=session_id, prompt=script(chunks=["from one"]))
            await two.until(lambda: two.texts(session_id) == "from one")
            await conn2.prompt(session_id=session_id, prompt=script(chunks=[" and two"]))
            await one.until(lambda: one.texts(session_id) == "from one and two")

    await in_editor(scenario)


async def test_bad_prompt_blocks_are_refused_naming_them(daemon: Daemon, env: dict[str, str], project: Path) -> None:
    async def scenario() -> None:
        async with bridge(Editor(), env, project) as (conn, _):
            session_id = await start(conn, project)
            with pytest.raises(RequestError, match=r"prompt\[1\]: image content is not supported"):
                await conn.prompt(
                    session_id=session_id, prompt=[acp.text_block("x"), acp.image_block("AAAA", "image/png")]
                )
            with pytest.raises(RequestError, match="sessionId: no session 'nope'"):
                await conn.prompt(session_id="nope", prompt=[acp.text_block("x")])

    await in_editor(scenario)


async def test_embedded_resources_become_context_with_their_uris(
    daemon: Daemon, env: dict[str, str], project: Path
) -> None:
    editor = Editor()

    async def scenario() -> None:
        async with bridge(editor, env, project, "--model", "echo") as (conn, _):
            session_id = await start(conn, project)
            blocks = [
                acp.text_block("look"),
                acp.resource_block(acp.embedded_text_resource("file:///a.py", "print(1)")),
                acp.resource_link_block("b.md", "file:///b.md"),
            ]
            await conn.prompt(session_id=session_id, prompt=blocks)
            await editor.until(lambda: "file:///b.md" in editor.texts(session_id))
            said = editor.texts(session_id)
            assert said.startswith("look") and "file:///a.py" in said and "print(1)" in said
            assert "file:///b.md" in said

    await in_editor(scenario)


def send_elsewhere(socket_path: Path, project: Path, session_id: str, prompt: dict[str, Any]) -> str:
    """agent.send from another client: what `agentctl run` or Neovim would do on the same session."""
    with BlockingClient.connect(socket_path) as client:
        ws = client.open_workspace(project)
        params = {"workspace_id": ws.id, "session_id": session_id, "prompt": json.dumps(prompt), "model": "scripted"}
        return str(client.call("agent.send", params)["run_id"])


async def test_another_clients_failing_run_does_not_end_our_prompt(
    daemon: Daemon, env: dict[str, str], project: Path
) -> None:
    editor = Editor()

    async def scenario() -> None:
        async with bridge(editor, env, project) as (conn, _):
            session_id = await start(conn, project)
            foreign = {"chunks": ["theirs "], "delay_ms": 200, "error": "their failure"}
            await asyncio.to_thread(send_elsewhere, daemon.socket_path, project, session_id, foreign)
            # Ours queues behind theirs in the session; their error is not our prompt's ending.
            reply = await conn.prompt(session_id=session_id, prompt=script(chunks=["ours"]))
            assert reply.stop_reason == "end_turn"
            # And their run streamed to this editor too.
            await editor.saw(session_id, "theirs ours")

    await in_editor(scenario)


async def test_daemon_gone_ends_the_prompt_with_an_error_and_the_bridge_lives(
    daemon: Daemon, env: dict[str, str], project: Path
) -> None:
    editor = Editor()

    async def scenario() -> None:
        async with bridge(editor, env, project) as (conn, _):
            session_id = await start(conn, project)
            prompt = asyncio.create_task(conn.prompt(session_id=session_id, prompt=script(chunks=["a"], hang=True)))
            await editor.until(lambda: editor.texts(session_id) == "a")
            daemon.proc.kill()
            with pytest.raises(RequestError, match="agentd connection lost .*: the prompt's run was interrupted"):
                await prompt
            assert (await conn.initialize(protocol_version=1)).protocol_version == 1

    await in_editor(scenario)
    daemon.proc.wait()


def bridge_with_stderr(editor: Editor, env: dict[str, str], cwd: Path) -> Any:
    client: Any = editor
    return acp.spawn_agent_process(
        client, ACP[0], *ACP[1:], env=env, cwd=cwd, transport_kwargs={"stderr": subprocess.PIPE}
    )


async def test_after_a_daemon_restart_the_same_session_prompts_again(
    start_daemon: DaemonFactory, env: dict[str, str], project: Path
) -> None:
    daemon = start_daemon()
    editor = Editor()
    stderr = b""

    async def scenario() -> None:
        nonlocal stderr
        async with bridge_with_stderr(editor, env, project) as (conn, process):
            session_id = await start(conn, project)
            reply = await conn.prompt(session_id=session_id, prompt=script(chunks=["before"]))
            assert reply.stop_reason == "end_turn"
            await editor.saw(session_id, "before")
            await asyncio.to_thread(daemon.terminate)
            await asyncio.to_thread(start_daemon)
            reply = await conn.prompt(session_id=session_id, prompt=script(chunks=[" after"]))
            assert reply.stop_reason == "end_turn"
            await editor.saw(session_id, "before after")
        assert process.stderr is not None
        stderr = await process.stderr.read()

    await in_editor(scenario)
    assert stderr.count(b"agentd connection lost") == 1, stderr
    assert stderr.count(b"reconnected to agentd") == 1, stderr


def run_elsewhere(socket_path: Path, project: Path, session_id: str, prompt: dict[str, Any]) -> None:
    """`send_elsewhere`, and wait for the run to end."""
    run_id = send_elsewhere(socket_path, project, session_id, prompt)
    with BlockingClient.connect(socket_path) as client:
        client.call("run.wait", {"run_id": run_id, "timeout": WAIT})


async def test_what_ran_while_the_bridge_was_away_is_replayed_at_its_return(
    start_daemon: DaemonFactory, env: dict[str, str], project: Path
) -> None:
    daemon = start_daemon()
    editor = Editor()

    async def scenario() -> None:
        async with bridge(editor, env, project) as (conn, _):
            session_id = await start(conn, project)
            await conn.prompt(session_id=session_id, prompt=script(chunks=["before "]))
            await asyncio.to_thread(daemon.terminate)
            again = await asyncio.to_thread(start_daemon)
            # Another client's run in the new daemon, before the bridge has reconnected.
            await asyncio.to_thread(run_elsewhere, again.socket_path, project, session_id, {"chunks": ["theirs "]})
            reply = await conn.prompt(session_id=session_id, prompt=script(chunks=["ours"]))
            assert reply.stop_reason == "end_turn"
            await editor.saw(session_id, "before theirs ours")

    await in_editor(scenario)


async def test_after_a_kill_the_interrupted_prompt_fails_and_the_next_one_works(
    start_daemon: DaemonFactory, env: dict[str, str], project: Path
) -> None:
    daemon = start_daemon()
    editor = Editor()
    stderr = b""

    async def scenario() -> None:
        nonlocal stderr
        async with bridge_with_stderr(editor, env, project) as (conn, process):
            session_id = await start(conn, project)
            prompt = asyncio.create_task(conn.prompt(session_id=session_id, prompt=script(chunks=["a"], hang=True)))
            await editor.until(lambda: editor.texts(session_id) == "a")
            daemon.proc.kill()
            with pytest.raises(RequestError, match="the prompt's run was interrupted"):
                await prompt
            await asyncio.to_thread(daemon.proc.wait)
            await asyncio.to_thread(start_daemon)
            reply = await conn.prompt(session_id=session_id, prompt=script(chunks=["b"]))
            assert reply.stop_reason == "end_turn"
            await editor.saw(session_id, "ab")
        assert process.stderr is not None
        stderr = await process.stderr.read()

    await in_editor(scenario)
    assert stderr.count(b"agentd connection lost") == 1, stderr
    assert stderr.count(b"reconnected to agentd") == 1, stderr


async def test_prompt_over_the_daemons_limit_is_refused_and_the_connection_lives(
    start_daemon: DaemonFactory, env: dict[str, str], project: Path
) -> None:
    start_daemon("--max-message-size", "65536")
    editor = Editor()

    async def scenario() -> None:
        async with bridge(editor, env, project) as (conn, _):
            session_id = await start(conn, project)
            with pytest.raises(RequestError, match=r"prompt: 70000 bytes, more than agentd takes \(61440\)"):
                await conn.prompt(session_id=session_id, prompt=[acp.text_block("x" * 70000)])
            reply = await conn.prompt(session_id=session_id, prompt=script(chunks=["still here"]))
            assert reply.stop_reason == "end_turn"

    await in_editor(scenario)


class SlowEditor(Editor):
    """An editor whose user answers the first request only once `release` is set, and no later one."""

    def __init__(self, answer: str) -> None:
        super().__init__(answer)
        self.release = asyncio.Event()
        self.first_asked = asyncio.Event()
        self._never = asyncio.Event()

    async def request_permission(self, session_id: str, tool_call: Any, options: list[Any], **kwargs: Any) -> Any:
        self.asked.append((session_id, tool_call, options))
        self._changed.set()
        self.first_asked.set()
        await (self.release if len(self.asked) == 1 else self._never).wait()
        return acp.RequestPermissionResponse(
            outcome=acp.schema.AllowedOutcome(outcome="selected", option_id=option_of_kind(options, str(self.answer)))
        )


class AfterEditor(Editor):
    """An editor that answers its first request only once `other` was asked it too: both see it, this one wins."""

    def __init__(self, answer: str, other: SlowEditor) -> None:
        super().__init__(answer)
        self.other = other

    async def request_permission(self, session_id: str, tool_call: Any, options: list[Any], **kwargs: Any) -> Any:
        if not self.asked:
            await self.other.first_asked.wait()
        return await super().request_permission(session_id, tool_call, options, **kwargs)


async def test_late_answer_after_another_client_answered_is_void(
    daemon: Daemon, env: dict[str, str], project: Path
) -> None:
    slow = SlowEditor(answer="reject_always")
    quick = AfterEditor("allow_once", slow)
    call = {"name": "bash", "arguments": {"command": "echo ran"}}
    steps = [{"tool_calls": [call]}, {"chunks": ["done"]}]

    async def scenario() -> None:
        async with bridge(quick, env, project) as (conn1, _), bridge(slow, env, project) as (conn2, _):
            session_id = await start(conn1, project)
            await conn2.initialize(protocol_version=1)
            await conn2.load_session(cwd=str(project), session_id=session_id, mcp_servers=[])
            assert (await conn1.prompt(session_id=session_id, prompt=script(steps=steps))).stop_reason == "end_turn"
            # The request is over; the slow user's "always reject" comes too late to count.
            slow.release.set()
            assert (await conn2.prompt(session_id=session_id, prompt=script(steps=steps))).stop_reason == "end_turn"
            # Asked again: the void "always reject" did not stick to the session.
            assert len(quick.asked) == 2

    await in_editor(scenario)
    async with daemon.client() as client:
        ws = await client.open_workspace(project)
        (session,) = await client.list_sessions(ws.id)
        messages = await client.call("session.messages", {"workspace_id": ws.id, "session_id": session.id})
    statuses = [p["status"] for m in messages if m["role"] == "tool" for p in m["parts"]]
    assert statuses == ["ok", "ok"]


# --- the editor's MCP servers

ECHO_SERVER = Path(__file__).parent / "mcp_servers" / "acp_echo.py"


def echo_server(name: str = "echo") -> acp.schema.McpServerStdio:
    """The fixture server with its one tool `echo`, as an editor's settings give it."""
    token = acp.schema.EnvVariable(name="ACP_ECHO_TOKEN", value="tok-never-shown")
    return acp.schema.McpServerStdio(name=name, command=sys.executable, args=[str(ECHO_SERVER)], env=[token])


def session_servers(
    socket_path: Path, project: Path, until: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]]:
    """mcp.list's session servers of the project's workspace, asked again (within START_WAIT) until `until` holds."""
    deadline = time.monotonic() + START_WAIT
    with BlockingClient.connect(socket_path) as client:
        ws = client.open_workspace(project)
        while True:
            listed = client.call("mcp.list", {"workspace_id": ws.id})["servers"]
            servers = [s for s in listed if s["source"] == "session"]
            if until(servers) or time.monotonic() > deadline:
                return servers
            time.sleep(0.05)


def ready(name: str, session_id: str) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda servers: any((s["name"], s["session_id"], s["state"]) == (name, session_id, "ready") for s in servers)


async def test_an_editors_stdio_mcp_server_runs_in_the_daemon_for_its_session(
    daemon: Daemon, env: dict[str, str], project: Path
) -> None:
    editor = Editor(answer="allow_once")
    call = {"name": "mcp__echo__echo", "arguments": {"text": "said through MCP"}}

    async def scenario() -> None:
        async with bridge(editor, env, project) as (conn, _):
            await conn.initialize(protocol_version=1)
            session = await conn.new_session(cwd=str(project), mcp_servers=[echo_server()])
            session_id = session.session_id
            servers = await asyncio.to_thread(session_servers, daemon.socket_path, project, ready("echo", session_id))
            (server,) = servers
            assert (server["name"], server["source"], server["transport"]) == ("echo", "session", "stdio")
            assert server["session_id"] == session_id and server["state"] == "ready", server
            assert server["tools"] == ["mcp__echo__echo"]
            steps = [{"tool_calls": [call]}, {"chunks": ["done"]}]
            assert (await conn.prompt(session_id=session_id, prompt=script(steps=steps))).stop_reason == "end_turn"

    await in_editor(scenario)
    async with daemon.client() as client:
        ws = await client.open_workspace(project)
        (session,) = await client.list_sessions(ws.id)
        messages = await client.call("session.messages", {"workspace_id": ws.id, "session_id": session.id})
    (result,) = [p for m in messages if m["role"] == "tool" for p in m["parts"]]
    assert result["status"] == "ok" and "said through MCP" in result["output"]


async def test_a_name_agentd_refuses_reaches_it_made_valid(daemon: Daemon, env: dict[str, str], project: Path) -> None:
    async def scenario() -> None:
        async with bridge(Editor(), env, project) as (conn, _):
            await conn.initialize(protocol_version=1)
            session = await conn.new_session(cwd=str(project), mcp_servers=[echo_server("Echo Tools!")])
            until = ready("Echo-Tools", session.session_id)
            servers = await asyncio.to_thread(session_servers, daemon.socket_path, project, until)
            assert [s["name"] for s in servers] == ["Echo-Tools"], servers

    await in_editor(scenario)


async def test_session_load_gives_the_loading_editors_list_and_an_empty_one_stops_them(
    daemon: Daemon, env: dict[str, str], project: Path
) -> None:
    async def scenario() -> None:
        async with bridge(Editor(), env, project) as (conn, _):
            await conn.initialize(protocol_version=1)
            session_id = (await conn.new_session(cwd=str(project), mcp_servers=[echo_server()])).session_id
            await asyncio.to_thread(session_servers, daemon.socket_path, project, ready("echo", session_id))
        async with bridge(Editor(), env, project) as (conn, _):
            await conn.initialize(protocol_version=1)
            await conn.load_session(cwd=str(project), session_id=session_id, mcp_servers=[])
            gone = await asyncio.to_thread(session_servers, daemon.socket_path, project, lambda s: not s)
            assert gone == []
            await conn.load_session(cwd=str(project), session_id=session_id, mcp_servers=[echo_server("again")])
            await asyncio.to_thread(session_servers, daemon.socket_path, project, ready("again", session_id))

    await in_editor(scenario)


async def test_after_a_daemon_restart_the_sessions_mcp_servers_are_given_again(
    start_daemon: DaemonFactory, env: dict[str, str], project: Path
) -> None:
    daemon = start_daemon()
    editor = Editor()

    async def scenario() -> None:
        async with bridge(editor, env, project) as (conn, _):
            await conn.initialize(protocol_version=1)
            session_id = (await conn.new_session(cwd=str(project), mcp_servers=[echo_server()])).session_id
            await asyncio.to_thread(session_servers, daemon.socket_path, project, ready("echo", session_id))
            await asyncio.to_thread(daemon.terminate)
            again = await asyncio.to_thread(start_daemon)
            # The next request connects again; the new daemon knew nothing of the session's servers.
            assert (await conn.prompt(session_id=session_id, prompt=script(chunks=["back"]))).stop_reason == "end_turn"
            servers = await asyncio.to_thread(session_servers, again.socket_path, project, ready("echo", session_id))
            assert [(s["name"], s["state"]) for s in servers] == [("echo", "ready")], servers

    await in_editor(scenario)


async def test_sse_servers_are_left_out_and_renames_told_once_on_stderr(
    daemon: Daemon, env: dict[str, str], project: Path
) -> None:
    stderr = b""
    sse = acp.schema.SseMcpServer(type="sse", name="events", url="https://127.0.0.1:9/sse", headers=[])
    servers: list[Any] = [sse, echo_server("my echo")]

    async def scenario() -> None:
        nonlocal stderr
        async with bridge_with_stderr(Editor(), env, project) as (conn, process):
            await conn.initialize(protocol_version=1)
            # An editor gives each of its sessions the same servers: what is said of them is said once.
            await conn.new_session(cwd=str(project), mcp_servers=servers)
            await conn.new_session(cwd=str(project), mcp_servers=servers)
        assert process.stderr is not None
        stderr = await process.stderr.read()

    await in_editor(scenario)
    assert stderr.count(b"MCP server 'events' left out: agentd speaks stdio and streamable HTTP") == 1, stderr
    assert stderr.count(b"MCP server 'my echo' is named 'my-echo' in agentd") == 1, stderr
    assert b"tok-never-shown" not in stderr


def told_refusal(editor: Editor, session_id: str) -> bool:
    return "did not take this session's MCP servers" in editor.texts(session_id)


async def test_a_refused_mcp_servers_call_is_told_and_the_session_goes_on(
    daemon: Daemon, env: dict[str, str], project: Path
) -> None:
    # A server agentd will not run (a URL it cannot speak to): the call is refused, not the session.
    secret = acp.schema.HttpHeader(name="Authorization", value="Bearer sk-never-shown")
    refused = acp.schema.HttpMcpServer(type="http", name="remote", url="ftp://127.0.0.1/mcp", headers=[secret])
    editor, later = Editor(), Editor()
    stderr = b""

    async def scenario() -> None:
        nonlocal stderr
        async with bridge_with_stderr(editor, env, project) as (conn, process):
            await conn.initialize(protocol_version=1)
            session_id = (await conn.new_session(cwd=str(project), mcp_servers=[refused])).session_id
            await editor.until(lambda: told_refusal(editor, session_id))
            reply = await conn.prompt(session_id=session_id, prompt=script(chunks=["on we go"]))
            assert reply.stop_reason == "end_turn"
            await editor.until(lambda: editor.texts(session_id).endswith("on we go"))
            # A load with the same servers is told too, after its replay.
            await conn.load_session(cwd=str(project), session_id=session_id, mcp_servers=[refused])
            await editor.until(lambda: editor.texts(session_id).count("did not take") == 2)
        assert process.stderr is not None
        stderr = await process.stderr.read()
        # A load with none misses nothing: whatever agentd says of an empty list, the editor is not told.
        async with bridge(later, env, project) as (conn, _):
            await conn.initialize(protocol_version=1)
            await conn.load_session(cwd=str(project), session_id=session_id, mcp_servers=[])
            # Its replay, then its own run: no note between them.
            await later.saw(session_id, "on we go")
            await conn.prompt(session_id=session_id, prompt=script(chunks=["!"]))
            await later.saw(session_id, "on we go!")

    await in_editor(scenario)
    assert stderr.count(b"agentd refused the MCP servers of session ses_") == 2, stderr
    assert b"(remote)" in stderr and b"sk-never-shown" not in stderr


# --- raw bytes on the bridge's stdin


async def test_malformed_json_and_unknown_method_get_errors_and_eof_exits_0(
    daemon: Daemon, env: dict[str, str], project: Path
) -> None:
    proc = await trio.lowlevel.open_process(ACP, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=project)
    try:
        with trio.fail_after(WAIT * 2):
            assert proc.stdin is not None and proc.stdout is not None
            buffer = b""

            async def line() -> dict[str, Any]:
                nonlocal buffer
                assert proc.stdout is not None
                while b"\n" not in buffer:
                    data = await proc.stdout.receive_some(65536)
                    assert data, "the bridge closed stdout"
                    buffer += data
                first, buffer = buffer.split(b"\n", 1)
                reply: dict[str, Any] = json.loads(first)
                return reply

            await proc.stdin.send_all(b"{not json\n")
            assert (await line()) == {
                "jsonrpc": "2.0",
                "id": None,
                "error": {
                    "code": -32700,
                    "message": (
                        "parse error: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"
                    ),
                },
            }
            await proc.stdin.send_all(b'{"jsonrpc":"2.0","id":1,"method":"nope/nope","params":{}}\n')
            error = (await line())["error"]
            assert error["code"] == -32601 and "nope/nope" in error["message"]
            await proc.stdin.send_all(b'{"jsonrpc":"2.0","id":2,"method":"initialize","params":{}}\n')
            error = (await line())["error"]
            assert error["code"] == -32602 and "protocolVersion" in error["message"]
            await proc.stdin.send_all(
                b'{"jsonrpc":"2.0","id":3,"method":"initialize","params":{"protocolVersion":1}}\n'
            )
            assert (await line())["result"]["protocolVersion"] == 1
            await proc.stdin.aclose()
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_requests_piped_in_are_all_answered_before_eof_exits(
    daemon: Daemon, env: dict[str, str], project: Path
) -> None:
    # The first initialize is answered before the bridge starts; what came in the same read waits for the bridge.
    lines = [
        {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {}},
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": 1}},
        {"jsonrpc": "2.0", "id": 2, "method": "session/new", "params": {"cwd": str(project), "mcpServers": []}},
    ]
    data = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    with trio.fail_after(WAIT * 2):
        done = await trio.run_process(ACP, stdin=data, capture_stdout=True, env=env, cwd=project, check=False)
    assert done.returncode == 0
    replies = [json.loads(line) for line in done.stdout.splitlines()]
    assert replies[0]["id"] == 0 and "protocolVersion: required" in replies[0]["error"]["message"]
    assert replies[1]["id"] == 1 and replies[1]["result"]["protocolVersion"] == 1
    # stdin ended right after it: what was asked is answered all the same, daemon and all.
    assert replies[2]["id"] == 2 and replies[2]["result"]["sessionId"].startswith("ses_")
    assert len(replies) == 3


async def test_a_prompt_answers_with_the_sessions_token_counts(
    start_daemon: DaemonFactory, env: dict[str, str], project: Path
) -> None:
    editor = Editor()

    async def scenario() -> tuple[Any, Any]:
        async with bridge(editor, env, project, "--model", "quick") as (conn, _):
            session_id = await start(conn, project)
            first = await conn.prompt(session_id=session_id, prompt=[acp.text_block("hello?")])
            second = await conn.prompt(session_id=session_id, prompt=[acp.text_block("again?")])
            await editor.saw(session_id, "Hello thereHello there")
            return first, second

    answers: list[tuple[Any, Any]] = []

    async def recorded() -> None:
        answers.append(await scenario())

    async with trio.open_nursery() as nursery:
        server = await start_loopback_server(nursery)
        configure_loopback(env, server.url, key_env="AGENTD_ACP_KEY", key="sk-acp-test-0001")
        start_daemon()
        # Each answer counts 12 prompt and 2 completion tokens: the usage is the session's, so far.
        server.script(Streamed([HELLO]), Streamed([HELLO]))
        await in_editor(recorded)
        nursery.cancel_scope.cancel()
    first, second = answers[0]
    assert first.stop_reason == second.stop_reason == "end_turn"
    assert (first.usage.input_tokens, first.usage.output_tokens, first.usage.total_tokens) == (12, 2, 14)
    assert (second.usage.input_tokens, second.usage.output_tokens, second.usage.total_tokens) == (24, 4, 28)


async def test_a_model_that_counts_no_tokens_gives_no_usage(daemon: Daemon, env: dict[str, str], project: Path) -> None:
    async def scenario() -> None:
        async with bridge(Editor(), env, project) as (conn, _):
            session_id = await start(conn, project)
            reply = await conn.prompt(session_id=session_id, prompt=script(chunks=["hi"]))
            assert reply.stop_reason == "end_turn" and reply.usage is None

    await in_editor(scenario)


async def test_a_malformed_mcp_server_refuses_session_new_naming_it_before_any_session_is_made(
    daemon: Daemon, env: dict[str, str], project: Path
) -> None:
    servers = [{"name": "files", "command": "/bin/files", "env": [{"name": "TOKEN", "value": 7}]}]
    lines = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": 1}},
        {"jsonrpc": "2.0", "id": 2, "method": "session/new", "params": {"cwd": str(project), "mcpServers": servers}},
    ]
    data = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    with trio.fail_after(WAIT * 2):
        done = await trio.run_process(ACP, stdin=data, capture_stdout=True, env=env, cwd=project, check=False)
    replies = [json.loads(line) for line in done.stdout.splitlines()]
    assert replies[1]["id"] == 2
    assert replies[1]["error"] == {"code": -32602, "message": "mcpServers[0].env[0].value: must be a string"}
    async with daemon.client() as client:
        ws = await client.open_workspace(project)
        assert await client.list_sessions(ws.id) == []
