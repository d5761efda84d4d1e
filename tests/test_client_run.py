"""The client library's run() and subscribe(), on the trio client and its blocking twin, against a real agentd.

Prompts go to the `scripted` model, so each test decides what the run does:
its text, its failure, a hang to cancel, a tool call that asks for permission.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel
from support import WAIT, Daemon, DaemonFactory, Workspace

from agentctl.blocking import BlockingClient
from agentctl.client import ConnectionLost, PermissionRequest, RpcError, RunResult, open_client


def script(**script: Any) -> str:
    return json.dumps(script)


WRITE_THEN_DONE = script(
    steps=[
        {"tool_calls": [{"name": "write", "arguments": {"path": "out.txt", "content": "written\n"}}]},
        {"chunks": ["done"]},
    ]
)


async def in_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """A blocking client's work, bounded: abandoned on cancel, or the bound could not end a thread that hangs."""
    with trio.fail_after(WAIT * 2):
        return await trio.to_thread.run_sync(lambda: fn(*args, **kwargs), abandon_on_cancel=True)


# --- trio: run()


async def test_run_streams_the_text_and_returns_the_run_complete(ws: Workspace) -> None:
    session = await ws.new_session()
    streamed: list[str] = []
    with trio.fail_after(WAIT):
        result = await ws.client.run(
            ws.id, session, script(chunks=["Hel", "lo", " world"]), model="scripted", on_text=streamed.append
        )
    assert isinstance(result, RunResult)
    assert result.ok and result.error is None and not result.cancelled
    assert result.text == "Hello world" and result.stop_reason == "stop" and result.changes == 0
    assert result.session_id == session and result.workspace_id == ws.id and result.message_id is not None
    # The text as it is, with no line end added for a terminal.
    assert "".join(streamed) == "Hello world" and len(streamed) == 3


async def test_run_returns_the_models_error(ws: Workspace) -> None:
    session = await ws.new_session()
    with trio.fail_after(WAIT):
        result = await ws.client.run(ws.id, session, script(chunks=["so far"], error="boom"), model="scripted")
    assert not result.ok and not result.cancelled
    assert result.error is not None and "boom" in result.error
    assert result.text == "so far" and result.stop_reason == "error"


async def test_a_refused_prompt_raises_and_starts_no_run(ws: Workspace) -> None:
    session = await ws.new_session()
    with trio.fail_after(WAIT), pytest.raises(RpcError) as refused:
        await ws.client.run(ws.id, session, "hi", model="no-such-model", run_id="refused-run")
    assert refused.value.code == 1 and "no-such-model" in str(refused.value)
    with pytest.raises(RpcError):
        await ws.client.call("run.get", {"run_id": "refused-run"})


async def test_allow_rules_given_as_one_string_are_refused_before_anything_is_sent(ws: Workspace) -> None:
    session = await ws.new_session()
    with pytest.raises(TypeError, match=r"\['write'\]"):
        await ws.client.run(ws.id, session, "hi", allow="write", run_id="never-sent")
    with pytest.raises(RpcError):
        await ws.client.call("run.get", {"run_id": "never-sent"})


async def test_foreign_run_error_does_not_end_our_run(daemon: Daemon, ws: Workspace) -> None:
    ours, theirs = await ws.new_session("ours"), await ws.new_session("theirs")
    asked, go = trio.Event(), trio.Event()
    results: list[RunResult] = []

    async def allow_when_told(request: PermissionRequest) -> str:
        asked.set()
        await go.wait()
        return "allow"

    async def run_ours() -> None:
        async with daemon.client() as client:
            results.append(
                await client.run(ws.id, ours, WRITE_THEN_DONE, model="scripted", on_permission=allow_when_told)
            )

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_ours)
            # Ours waits for its permission while another session's run fails, in the same workspace.
            await asked.wait()
            failed = await ws.send(theirs, {"error": "not yours"})
            assert (await ws.events.until_complete(failed["run_id"]))["error"] == "not yours"
            await ws.events.until(lambda e: e["type"] == "agent.error")
            go.set()
    [result] = results
    assert result.ok and result.error is None and result.text == "done" and result.session_id == ours


async def test_a_run_cancelled_elsewhere_returns_cancelled(daemon: Daemon, ws: Workspace) -> None:
    session = await ws.new_session()
    started = trio.Event()
    results: list[RunResult] = []

    async def run_ours() -> None:
        prompt = script(chunks=["a"], hang=True)
        results.append(await ws.client.run(ws.id, session, prompt, model="scripted", on_text=lambda _: started.set()))

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_ours)
            await started.wait()
            await ws.cancel(session)
    [result] = results
    assert result.cancelled and result.error is None and result.text == "a" and result.stop_reason == "cancelled"


async def test_cancelling_the_callers_scope_cancels_the_run_in_the_daemon(daemon: Daemon, ws: Workspace) -> None:
    session = await ws.new_session()
    with trio.fail_after(WAIT):
        async with daemon.client() as client:
            with trio.CancelScope() as scope:

                def cancel_on_text(_text: str) -> None:
                    scope.cancel()

                await client.run(
                    ws.id,
                    session,
                    script(chunks=["a"], hang=True),
                    model="scripted",
                    run_id="left",
                    on_text=cancel_on_text,
                )
            assert scope.cancelled_caught
        complete = await ws.client.wait_run("left", WAIT)
    assert complete.cancelled and complete.run_id == "left"


async def test_run_raises_connection_lost_when_the_daemon_goes_first(daemon: Daemon, ws: Workspace) -> None:
    session = await ws.new_session()
    with trio.fail_after(WAIT), pytest.raises(ConnectionLost):
        async with daemon.client() as client:
            await client.run(
                ws.id, session, script(chunks=["a"], hang=True), model="scripted", on_text=lambda _: daemon.proc.kill()
            )


async def test_permission_is_asked_of_the_callback_while_the_run_waits(ws: Workspace, project: Path) -> None:
    session = await ws.new_session()
    asked: list[PermissionRequest] = []

    async def allow(request: PermissionRequest) -> str:
        asked.append(request)
        await trio.lowlevel.checkpoint()
        return "allow"

    with trio.fail_after(WAIT):
        result = await ws.client.run(ws.id, session, WRITE_THEN_DONE, model="scripted", on_permission=allow)
    assert result.ok and result.text == "done" and result.changes == 1
    [request] = asked
    assert request.tool == "write" and request.run_id == result.run_id and request.params["path"] == "out.txt"
    assert (project / "out.txt").read_text() == "written\n"


async def test_without_a_callback_permission_is_denied(ws: Workspace, project: Path) -> None:
    session = await ws.new_session()
    with trio.fail_after(WAIT):
        result = await ws.client.run(ws.id, session, WRITE_THEN_DONE, model="scripted")
    assert result.ok and result.changes == 0
    assert not (project / "out.txt").exists()
    [resolved] = ws.events.of_type("permission.resolved") or [
        await ws.events.until(lambda e: e["type"] == "permission.resolved")
    ]
    assert resolved["payload"]["outcome"] == "deny"


async def test_the_allow_list_lets_the_call_go_without_asking(ws: Workspace, project: Path) -> None:
    session = await ws.new_session()

    def never(request: PermissionRequest) -> str:
        raise AssertionError(f"asked about {request.description}")

    with trio.fail_after(WAIT):
        result = await ws.client.run(
            ws.id, session, WRITE_THEN_DONE, model="scripted", allow=["write"], on_permission=never
        )
    assert result.ok and result.changes == 1
    assert (project / "out.txt").read_text() == "written\n"


async def test_a_request_answered_elsewhere_is_withdrawn_from_the_callback(daemon: Daemon, ws: Workspace) -> None:
    session = await ws.new_session()
    happened: list[str] = []

    async def wait_for_a_person(request: PermissionRequest) -> str:
        try:
            await trio.sleep_forever()
        finally:
            happened.append("withdrawn")
        raise AssertionError("unreachable")

    async def answer_elsewhere() -> None:
        request = await ws.events.until(lambda e: e["type"] == "permission.request")
        params = {"workspace_id": ws.id, "request_id": request["payload"]["request_id"], "action": "allow"}
        assert (await ws.client.call("permission.grant", params))["resolved"] is True

    with trio.fail_after(WAIT):
        async with daemon.client() as client, trio.open_nursery() as nursery:
            nursery.start_soon(answer_elsewhere)
            result = await client.run(
                ws.id,
                session,
                WRITE_THEN_DONE,
                model="scripted",
                on_permission=wait_for_a_person,
                on_text=happened.append,
            )
    # Withdrawn when the answer came, not only when the run ended.
    assert happened == ["withdrawn", "done"]
    assert result.ok and result.changes == 1


async def test_a_bad_answer_from_the_callback_is_an_error_naming_it(ws: Workspace) -> None:
    session = await ws.new_session()
    with trio.fail_after(WAIT), pytest.raises(ValueError, match="'yes please'"):
        await ws.client.run(
            ws.id, session, WRITE_THEN_DONE, model="scripted", run_id="bad-answer", on_permission=lambda r: "yes please"
        )
    # Leaving with the error cancelled the run.
    complete = await ws.client.call("run.wait", {"run_id": "bad-answer", "timeout": WAIT})
    assert complete["cancelled"] is True


# --- trio: subscribe()


async def test_subscribe_yields_live_events_and_replays_from_since(daemon: Daemon, project: Path) -> None:
    with trio.fail_after(WAIT):
        async with open_client(daemon.socket_path) as client:
            ws = await client.open_workspace(project)
            session = await client.create_session(ws.id)
            async with client.subscribe(ws.id) as live:
                result = await client.run(ws.id, session.id, "hello")
                seen = []
                async for event in live:
                    seen.append(event)
                    if event.type == "run.complete":
                        break
            assert seen[-1].payload["run_id"] == result.run_id and seen[-1].payload["text"] == "hello"
            assert [e.seq for e in seen] == sorted(e.seq for e in seen) and live.last_seq == seen[-1].seq
            # From a seq seen before the run: its logged events come again, then the live ones.
            first = next(e for e in seen if e.type == "message.created")
            async with client.subscribe(ws.id, since=first.seq - 1) as replay:
                assert replay.replayed > 0
                again = [await replay.__anext__() for _ in range(replay.replayed)]
    assert again[0].seq == first.seq and again[0].type == "message.created"
    assert [e.payload["run_id"] for e in again if e.type == "run.complete"] == [result.run_id]
    assert "message.delta" not in {e.type for e in again}  # deltas are not logged


async def test_subscribe_from_a_seq_the_workspace_never_reached_yields_a_gap(ws: Workspace) -> None:
    with trio.fail_after(WAIT):
        async with ws.client.subscribe(ws.id, since=10**9) as events:
            gap = await events.__anext__()
    assert gap.type == "events.gap" and gap.payload == {"reason": "too_old"}
    assert events.gaps == 1 and events.last_seq == events.seq  # a gap is not a position to resume from


async def test_the_subscription_ends_with_the_workspaces_close(start_daemon: DaemonFactory, project: Path) -> None:
    daemon = start_daemon("--idle-grace", "0.1")
    with trio.fail_after(WAIT):
        async with open_client(daemon.socket_path) as client:
            ws = await client.open_workspace(project)
            async with client.subscribe(ws.id) as events:
                await client.call("workspace.close", {"workspace_id": ws.id})
                types = [event.type async for event in events]
    assert types[-1] == "workspace.closed"


async def test_a_subscription_raises_connection_lost_when_the_daemon_goes(daemon: Daemon, project: Path) -> None:
    with trio.fail_after(WAIT):
        async with open_client(daemon.socket_path) as client:
            ws = await client.open_workspace(project)
            async with client.subscribe(ws.id) as events:
                # Killed: no workspace.closed ends the subscription first.
                daemon.proc.kill()
                with pytest.raises(ConnectionLost):
                    async for _event in events:
                        pass


async def test_events_of_a_subscribe_are_not_left_in_notifications(daemon: Daemon, project: Path) -> None:
    with trio.fail_after(WAIT):
        async with open_client(daemon.socket_path) as client:
            ws = await client.open_workspace(project)
            session = await client.create_session(ws.id)
            for prompt in ("one", "two"):
                assert (await client.run(ws.id, session.id, prompt)).text == prompt
            # run()'s subscription's events went to run() alone: none is left where nobody reads.
            await client.call("session.get", {"workspace_id": ws.id, "session_id": session.id})
            with pytest.raises(trio.WouldBlock):
                client.notifications.receive_nowait()


async def test_open_client_finds_the_users_daemon_and_starts_one(
    short_tmp: Path, env: dict[str, str], project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AGENTD_SOCKET", "XDG_RUNTIME_DIR", "XDG_STATE_HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.setenv(name, env[name])
    with pytest.raises(OSError):
        async with open_client():
            pass
    with trio.fail_after(WAIT * 2):
        async with open_client(start_daemon=True) as client:
            status = await client.call("server.status")
            await client.call("server.shutdown")
    assert status["pid"] > 0


# --- the blocking twin


def blocking_run(
    socket: Path, workspace_id: str, session_id: str, prompt: str, **options: Any
) -> tuple[Any, list[str]]:
    streamed: list[str] = []
    with BlockingClient.connect(socket) as client:
        result = client.run(workspace_id, session_id, prompt, model="scripted", on_text=streamed.append, **options)
    return result, streamed


async def test_blocking_run_streams_the_text_and_returns_the_run_complete(daemon: Daemon, ws: Workspace) -> None:
    session = await ws.new_session()
    result, streamed = await in_thread(blocking_run, daemon.socket_path, ws.id, session, script(chunks=["a", "b"]))
    assert isinstance(result, RunResult) and result.ok and result.text == "ab" and streamed == ["a", "b"]


async def test_blocking_run_returns_the_models_error(daemon: Daemon, ws: Workspace) -> None:
    session = await ws.new_session()
    result, _ = await in_thread(blocking_run, daemon.socket_path, ws.id, session, script(error="boom"))
    assert not result.ok and result.error is not None and "boom" in result.error


async def test_blocking_run_is_not_ended_by_a_foreign_error(daemon: Daemon, ws: Workspace) -> None:
    ours, theirs = await ws.new_session("ours"), await ws.new_session("theirs")
    go = threading.Event()

    def allow_when_told(request: PermissionRequest) -> str:
        assert go.wait(WAIT)
        return "allow"

    async def run_ours() -> None:
        result, _ = await in_thread(
            blocking_run, daemon.socket_path, ws.id, ours, WRITE_THEN_DONE, on_permission=allow_when_told
        )
        results.append(result)

    results: list[RunResult] = []
    with trio.fail_after(WAIT * 2):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_ours)
            await ws.events.until(lambda e: e["type"] == "permission.request")
            failed = await ws.send(theirs, {"error": "not yours"})
            await ws.events.until_complete(failed["run_id"])
            await ws.events.until(lambda e: e["type"] == "agent.error")
            go.set()
    [result] = results
    assert result.ok and result.error is None and result.text == "done"


async def test_blocking_run_cancelled_elsewhere_returns_cancelled(daemon: Daemon, ws: Workspace) -> None:
    session = await ws.new_session()
    results: list[RunResult] = []

    async def run_ours() -> None:
        result, _ = await in_thread(blocking_run, daemon.socket_path, ws.id, session, script(chunks=["a"], hang=True))
        results.append(result)

    with trio.fail_after(WAIT * 2):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_ours)
            await ws.events.until(lambda e: e["type"] == "message.delta")
            await ws.cancel(session)
    [result] = results
    assert result.cancelled and result.error is None and result.text == "a" and result.stop_reason == "cancelled"


async def test_blocking_run_past_its_timeout_cancels_the_run(daemon: Daemon, ws: Workspace) -> None:
    session = await ws.new_session()

    def run() -> None:
        blocking_run(daemon.socket_path, ws.id, session, script(hang=True), run_id="slow", timeout=0.5)

    with pytest.raises(TimeoutError):
        await in_thread(run)
    complete = await ws.client.call("run.wait", {"run_id": "slow", "timeout": WAIT})
    assert complete["cancelled"] is True


async def test_blocking_run_asks_the_callback_and_takes_the_allow_list(
    daemon: Daemon, ws: Workspace, project: Path
) -> None:
    asked: list[PermissionRequest] = []

    def allow(request: PermissionRequest) -> str:
        asked.append(request)
        return "allow"

    first, second = await ws.new_session("callback"), await ws.new_session("allow list")
    by_callback, _ = await in_thread(
        blocking_run, daemon.socket_path, ws.id, first, WRITE_THEN_DONE, on_permission=allow
    )
    assert by_callback.ok and by_callback.changes == 1 and [r.tool for r in asked] == ["write"]
    (project / "out.txt").unlink()
    by_rule, _ = await in_thread(
        blocking_run, daemon.socket_path, ws.id, second, WRITE_THEN_DONE, allow=["write"], on_permission=allow
    )
    assert by_rule.ok and by_rule.changes == 1 and len(asked) == 1
    assert (project / "out.txt").read_text() == "written\n"
    denied, _ = await in_thread(blocking_run, daemon.socket_path, ws.id, await ws.new_session(), WRITE_THEN_DONE)
    assert denied.ok and denied.changes == 0


def blocking_subscribe(socket: Path, project: Path) -> tuple[list[Any], list[Any], Any]:
    with BlockingClient.connect(socket) as client:
        ws = client.open_workspace(project)
        session = client.create_session(ws.id)
        with client.subscribe(ws.id) as live:
            result = client.run(ws.id, session.id, "hello")
            seen = []
            for event in live:
                seen.append(event)
                if event.type == "run.complete":
                    break
        assert [s.id for s in client.list_sessions(ws.id)] == [session.id]
        assert client.wait_run(result.run_id, 0).text == "hello"
        first = next(e for e in seen if e.type == "message.created")
        with client.subscribe(ws.id, since=first.seq - 1) as replay:
            again = [replay.get(WAIT) for _ in range(replay.replayed)]
        with client.subscribe(ws.id, since=10**9) as too_far:
            gap = too_far.get(WAIT)
            assert too_far.gaps == 1 and too_far.last_seq == too_far.seq
        with client.subscribe(ws.id) as closing:
            client.call("workspace.close", {"workspace_id": ws.id})
            types = [event.type for event in closing]
        assert types[-1] == "workspace.closed" and closing.get(0) is None
        assert result.text == "hello"
        return seen, again, gap


async def test_blocking_subscribe_yields_live_events_replays_from_since_and_gaps(
    start_daemon: DaemonFactory, project: Path
) -> None:
    daemon = start_daemon("--idle-grace", "0.1")
    seen, again, gap = await in_thread(blocking_subscribe, daemon.socket_path, project)
    assert seen[-1].payload["text"] == "hello"
    assert again[0].type == "message.created" and "run.complete" in [e.type for e in again]
    assert gap.type == "events.gap" and gap.payload == {"reason": "too_old"}


async def test_blocking_connect_finds_the_users_daemon_and_starts_one(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AGENTD_SOCKET", "XDG_RUNTIME_DIR", "XDG_STATE_HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.setenv(name, env[name])

    def connect() -> int:
        with pytest.raises(OSError):
            BlockingClient.connect()
        with BlockingClient.connect(start_daemon=True) as client:
            pid = int(client.call("server.status")["pid"])
            client.call("server.shutdown")
        return pid

    assert await in_thread(connect) > 0
