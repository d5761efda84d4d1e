"""Permissions through a real daemon: permission.grant and permission.list, agent.send's allow, and what clients see."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from support import WAIT, DaemonFactory, Events, Workspace, agentctl_command, open_workspace, run_agentctl, write_config

from agentctl.client import Client, RpcError
from agentd.models._scripted import Script
from agentd.tools import TOOLS


async def call_error(client: Client, method: str, params: dict[str, Any]) -> RpcError:
    with pytest.raises(RpcError) as info:
        await client.call(method, params)
    return info.value


# --- the methods' checks ---------------------------------------------------------------------------------


async def test_a_workspace_with_no_request_waiting_lists_none(ws: Workspace) -> None:
    assert await ws.client.call("permission.list", {"workspace_id": ws.id}) == []


async def test_granting_a_request_the_workspace_never_asked_is_not_found(ws: Workspace) -> None:
    error = await call_error(
        ws.client, "permission.grant", {"workspace_id": ws.id, "request_id": "perm_nope", "action": "allow"}
    )
    assert (error.code, error.message) == (2, "request_id: no permission request 'perm_nope' in this workspace")


async def test_an_unknown_action_is_refused_by_name(ws: Workspace) -> None:
    error = await call_error(
        ws.client, "permission.grant", {"workspace_id": ws.id, "request_id": "perm_nope", "action": "always"}
    )
    assert error.code == 1
    assert error.message == "action: must be one of allow, allow_session, deny, deny_session, not 'always'"


@pytest.mark.parametrize("method", ["permission.grant", "permission.list"])
async def test_the_permission_methods_need_an_open_workspace(ws: Workspace, method: str) -> None:
    params = {"workspace_id": "ws_nope", "request_id": "perm_x", "action": "allow"}
    if method == "permission.list":
        params = {"workspace_id": "ws_nope"}
    error = await call_error(ws.client, method, params)
    assert error.code == 2
    assert "no open workspace 'ws_nope'" in error.message


async def test_grant_params_are_checked_for_type(ws: Workspace) -> None:
    error = await call_error(ws.client, "permission.grant", {"workspace_id": ws.id, "request_id": 7, "action": "allow"})
    assert error.code == 1
    assert "request_id" in error.message


@pytest.mark.parametrize(
    ("allow", "words"),
    [
        (["edit", "bash:"], "allow[1]: 'bash:' is not a usable rule: has an empty prefix after 'bash:'"),
        (["*:rm"], "allow[0]: '*:rm' is not a usable rule: '*' allows every call and takes no prefix"),
        ("edit", "expected an array, got str @ params.allow"),
        ([3], "params.allow[0]"),
    ],
)
async def test_a_send_with_a_rule_that_cannot_be_read_is_refused_and_starts_nothing(
    ws: Workspace, allow: object, words: str
) -> None:
    session_id = await ws.new_session()
    params = {"workspace_id": ws.id, "session_id": session_id, "prompt": "hi", "allow": allow}
    error = await call_error(ws.client, "agent.send", params)
    assert error.code == 1
    assert words in error.message
    messages = await ws.client.call("session.messages", {"workspace_id": ws.id, "session_id": session_id})
    assert messages == []


async def test_a_send_with_rules_is_accepted(ws: Workspace) -> None:
    session_id = await ws.new_session()
    reply = await ws.send(session_id, "hi", allow=["*"], model="echo")
    rc = await ws.events.until_complete(reply["run_id"])
    assert rc["text"] == "hi"


# --- requests, answers and their ends (these need the agent loop: scripted `steps` with tool calls) ---------

needs_loop = pytest.mark.skipif(
    "steps" not in attrs.fields_dict(Script) or "bash" not in TOOLS,
    reason="needs the agent loop (scripted steps with tool calls) and the bash tool",
)


def bash_steps(*commands: str, then: str = "done") -> str:
    """A scripted prompt: one bash call per step, then a last answer."""
    steps: list[dict[str, Any]] = [
        {"tool_calls": [{"name": "bash", "arguments": {"command": command}}]} for command in commands
    ]
    steps.append({"chunks": [then]})
    return json.dumps({"steps": steps})


def configure(env: dict[str, str], text: str) -> None:
    write_config(env, text)


async def hello(client: Client, name: str) -> None:
    await client.call("initialize", {"client_name": name})


def is_request_of(run_id: str) -> Any:
    return lambda e: e["type"] == "permission.request" and e["payload"]["run_id"] == run_id


def is_resolved(request_id: str) -> Any:
    return lambda e: e["type"] == "permission.resolved" and e["payload"]["request_id"] == request_id


async def tool_results(ws: Workspace, session_id: str) -> list[dict[str, Any]]:
    messages = await ws.client.call("session.messages", {"workspace_id": ws.id, "session_id": session_id})
    return [part for m in messages if m["role"] == "tool" for part in m["parts"] if part["type"] == "tool_result"]


async def grant(ws: Workspace, request_id: str, action: str) -> dict[str, Any]:
    params = {"workspace_id": ws.id, "request_id": request_id, "action": action}
    return await ws.client.call("permission.grant", params)  # type: ignore[no-any-return]


@needs_loop
@pytest.mark.parametrize(("action", "status"), [("allow", "ok"), ("deny", "denied")])
async def test_a_call_no_rule_allows_waits_for_the_answer_and_the_model_goes_on(
    ws: Workspace, project: Path, action: str, status: str
) -> None:
    await hello(ws.client, "tester")
    session_id = await ws.new_session()
    run_id = (await ws.send(session_id, bash_steps("touch made.txt"), model="scripted"))["run_id"]
    request = (await ws.events.until(is_request_of(run_id)))["payload"]
    assert (request["tool"], request["session_id"], request["params"]) == (
        "bash",
        session_id,
        # As the tool takes them: its defaults filled in.
        {"command": "touch made.txt", "timeout": None},
    )
    assert "touch made.txt" in request["description"]
    listed = await ws.client.call("permission.list", {"workspace_id": ws.id})
    assert listed == [request]
    assert not (project / "made.txt").exists()
    assert await grant(ws, request["request_id"], action) == {"resolved": True}
    resolved = (await ws.events.until(is_resolved(request["request_id"])))["payload"]
    assert resolved == {
        "request_id": request["request_id"],
        "session_id": session_id,
        "run_id": run_id,
        "outcome": action,
        "by": "tester",
    }
    rc = await ws.events.until_complete(run_id)
    assert (rc["error"], rc["text"]) == (None, "done")
    assert [r["status"] for r in await tool_results(ws, session_id)] == [status]
    assert (project / "made.txt").exists() is (action == "allow")
    assert await ws.client.call("permission.list", {"workspace_id": ws.id}) == []


@needs_loop
async def test_a_request_nobody_answers_times_out_as_its_own_outcome(
    start_daemon: DaemonFactory, env: dict[str, str], project: Path
) -> None:
    configure(env, "[permissions]\ntimeout = 0.3\n")
    async with start_daemon().client() as client:
        ws = await open_workspace(client, project)
        session_id = await ws.new_session()
        run_id = (await ws.send(session_id, bash_steps("touch late.txt"), model="scripted"))["run_id"]
        request = (await ws.events.until(is_request_of(run_id)))["payload"]
        resolved = (await ws.events.until(is_resolved(request["request_id"])))["payload"]
        assert (resolved["outcome"], resolved["by"]) == ("timeout", "timeout")
        rc = await ws.events.until_complete(run_id)
        assert rc["error"] is None
        assert [r["status"] for r in await tool_results(ws, session_id)] == ["timeout"]
        assert await grant(ws, request["request_id"], "allow") == {"resolved": False}
    assert not (project / "late.txt").exists()


@needs_loop
async def test_the_first_answer_wins_across_two_clients_and_both_hear_how_it_ended(daemon: Any, project: Path) -> None:
    async with daemon.client() as one, daemon.client() as two:
        await hello(one, "one")
        await hello(two, "two")
        first = await open_workspace(one, project)
        second = await open_workspace(two, project)
        session_id = await first.new_session()
        run_id = (await first.send(session_id, bash_steps("touch both.txt"), model="scripted"))["run_id"]
        request = (await first.events.until(is_request_of(run_id)))["payload"]
        assert (await second.events.until(is_request_of(run_id)))["payload"] == request
        assert await grant(second, request["request_id"], "deny") == {"resolved": True}
        assert await grant(first, request["request_id"], "allow") == {"resolved": False}
        for ws in (first, second):
            resolved = (await ws.events.until(is_resolved(request["request_id"])))["payload"]
            assert (resolved["outcome"], resolved["by"]) == ("deny", "two")
        await first.events.until_complete(run_id)
    assert not (project / "both.txt").exists()


@needs_loop
async def test_a_client_that_comes_while_a_request_waits_sees_it_once(daemon: Any, project: Path) -> None:
    async with daemon.client() as client:
        ws = await open_workspace(client, project)
        session_id = await ws.new_session()
        before = (await client.call("events.subscribe", {"workspace_id": ws.id}))["seq"]
        run_id = (await ws.send(session_id, bash_steps("touch seen.txt"), model="scripted"))["run_id"]
        request = (await ws.events.until(is_request_of(run_id)))["payload"]
        async with daemon.client() as late:
            ws_id = (await late.call("workspace.open", {"path": str(project)}))["id"]
            # Without since: the pending request, though it went out before this subscription.
            plain = await late.call("events.subscribe", {"workspace_id": ws_id})
            # With since: it is in the replay, and comes once.
            replaying = await late.call("events.subscribe", {"workspace_id": ws_id, "since": before})
            # Either way it is counted with what comes before the live events.
            for sub, expect_replayed in ((plain, 1), (replaying, None)):
                events = Events(late, sub["subscription_id"])
                got = await events.until(is_request_of(run_id))
                assert got["payload"] == request
                assert got["seq"] <= sub["seq"]
                if expect_replayed is not None:
                    assert sub["replayed"] == expect_replayed
            await late.call(
                "permission.grant", {"workspace_id": ws_id, "request_id": request["request_id"], "action": "allow"}
            )
            again = Events(late, replaying["subscription_id"])
            tail = await again.until(is_resolved(request["request_id"]))
            assert [e for e in again.seen if e["type"] == "permission.request"] == []
            assert tail["payload"]["outcome"] == "allow"
        await ws.events.until_complete(run_id)


@needs_loop
async def test_cancelling_a_run_while_it_waits_resolves_the_request_as_cancelled(ws: Workspace) -> None:
    session_id = await ws.new_session()
    run_id = (await ws.send(session_id, bash_steps("touch never.txt"), model="scripted"))["run_id"]
    request = (await ws.events.until(is_request_of(run_id)))["payload"]
    await ws.cancel(session_id)
    resolved = (await ws.events.until(is_resolved(request["request_id"])))["payload"]
    assert (resolved["outcome"], resolved["by"]) == ("cancelled", "run")
    rc = await ws.events.until_complete(run_id)
    assert rc["cancelled"] is True
    # The session goes on, and the cancelled run had exactly one RunComplete.
    after = (await ws.send(session_id, "next", model="echo"))["run_id"]
    await ws.events.until_complete(after)
    completes = [e for e in ws.events.of_type("run.complete") if e["payload"]["run_id"] == run_id]
    assert len(completes) == 1
    assert await ws.client.call("permission.list", {"workspace_id": ws.id}) == []


@needs_loop
async def test_allow_session_lets_later_calls_of_the_tool_in_the_session_go(ws: Workspace, project: Path) -> None:
    session_id = await ws.new_session()
    run_id = (await ws.send(session_id, bash_steps("touch one.txt", "touch two.txt"), model="scripted"))["run_id"]
    request = (await ws.events.until(is_request_of(run_id)))["payload"]
    await grant(ws, request["request_id"], "allow_session")
    await ws.events.until_complete(run_id)
    assert [e["payload"]["request_id"] for e in ws.events.of_type("permission.request")] == [request["request_id"]]
    assert (project / "one.txt").exists() and (project / "two.txt").exists()


@needs_loop
async def test_configured_rules_and_the_runs_own_rules_allow_without_asking(
    start_daemon: DaemonFactory, env: dict[str, str], project: Path
) -> None:
    configure(env, '[permissions]\nallow = ["bash:touch a.txt"]\n')
    async with start_daemon().client() as client:
        ws = await open_workspace(client, project)
        session_id = await ws.new_session()
        prompt = bash_steps("touch a.txt", "touch b.txt", "touch c.txt")
        run_id = (await ws.send(session_id, prompt, model="scripted", allow=["bash:touch b.txt"]))["run_id"]
        request = (await ws.events.until(is_request_of(run_id)))["payload"]
        assert request["params"] == {"command": "touch c.txt", "timeout": None}
        await grant(ws, request["request_id"], "deny")
        await ws.events.until_complete(run_id)
        assert [r["status"] for r in await tool_results(ws, session_id)] == ["ok", "ok", "denied"]
    assert [(project / name).exists() for name in ("a.txt", "b.txt", "c.txt")] == [True, True, False]


# --- agentctl run ------------------------------------------------------------------------------------------


@needs_loop
async def test_agentctl_run_without_a_terminal_denies_and_says_what(
    daemon: Any, env: dict[str, str], project: Path
) -> None:
    done = await run_agentctl("run", "-m", "scripted", bash_steps("touch no.txt"), env=env, cwd=project)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().endswith("done\n")
    stderr = done.stderr.decode()
    assert "denied bash" in stderr and "touch no.txt" in stderr
    assert not (project / "no.txt").exists()


@needs_loop
async def test_agentctl_run_yolo_allows_every_call(daemon: Any, env: dict[str, str], project: Path) -> None:
    done = await run_agentctl("run", "--yolo", "-m", "scripted", bash_steps("touch yes.txt"), env=env, cwd=project)
    assert done.returncode == 0, done.stderr
    assert "denied" not in done.stderr.decode()
    assert (project / "yes.txt").exists()


@needs_loop
async def test_agentctl_run_allow_lets_only_matching_calls_go(daemon: Any, env: dict[str, str], project: Path) -> None:
    prompt = bash_steps("echo allowed", "touch refused.txt")
    done = await run_agentctl("run", "--allow", "bash:echo", "-m", "scripted", prompt, env=env, cwd=project)
    assert done.returncode == 0, done.stderr
    stderr = done.stderr.decode()
    assert "touch refused.txt" in stderr and "echo allowed" not in stderr
    assert not (project / "refused.txt").exists()


@needs_loop
async def test_agentctl_run_on_a_terminal_asks_and_takes_the_answer(
    daemon: Any, env: dict[str, str], project: Path
) -> None:
    import fcntl
    import pty
    import termios

    master, slave = pty.openpty()

    def controlling_terminal() -> None:
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    prompt = json.dumps(
        {
            "steps": [
                {"chunks": ["thinking"], "tool_calls": [{"name": "bash", "arguments": {"command": "touch tty.txt"}}]},
                {"chunks": ["done"]},
            ]
        }
    )
    proc = await trio.lowlevel.open_process(
        [*agentctl_command(), "run", "-m", "scripted", prompt],
        env=env,
        cwd=project,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        preexec_fn=controlling_terminal,  # noqa: PLW1509 -- the child needs the pty as its terminal for /dev/tty
    )
    os.close(slave)
    seen = b""

    async def read_until(marker: bytes) -> None:
        nonlocal seen
        with trio.fail_after(WAIT):
            while marker not in seen:
                await trio.lowlevel.wait_readable(master)
                try:
                    seen += os.read(master, 4096)
                except OSError:
                    raise AssertionError(f"the terminal closed before {marker!r}: {seen!r}") from None

    try:
        await read_until(b"allow [o]nce")
        # The streamed text keeps its place: the question starts on a line of its own.
        assert b"thinking\r\nagentctl run: permission needed: " in seen
        os.write(master, b"o\n")
        await read_until(b"done")
        # The call, once it ended, on a line of its own.
        assert "\u25b8 bash: touch tty.txt (exit 0)\r\n".encode() in seen
        with trio.fail_after(WAIT):
            code = await proc.wait()
        assert code == 0, seen
    finally:
        if proc.poll() is None:
            proc.kill()
            with trio.fail_after(WAIT):
                await proc.wait()
        os.close(master)
    assert (project / "tty.txt").exists()


# --- [agent] max_steps -------------------------------------------------------------------------------------


async def test_the_configured_step_limit_ends_a_run_that_keeps_calling_tools(
    start_daemon: DaemonFactory, env: dict[str, str], project: Path
) -> None:
    configure(env, "[agent]\nmax_steps = 2\n")
    step = {"tool_calls": [{"name": "no_such_tool", "arguments": {}}]}
    prompt = json.dumps({"steps": [step, step, {"chunks": ["never"]}]})
    async with start_daemon().client() as client:
        ws = await open_workspace(client, project)
        session_id = await ws.new_session()
        run_id = (await ws.send(session_id, prompt, model="scripted"))["run_id"]
        rc = await ws.events.until_complete(run_id)
    assert rc["stop_reason"] == "step_limit"
    assert "stopped after 2 model turns" in rc["error"]
