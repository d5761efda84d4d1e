"""`agentctl show | rm | sessions` and session references: real processes, a real daemon, nothing mocked."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio
from support import WAIT, Daemon, Workspace, run_agentctl

from agentctl._sessions import resolve_session
from agentctl.blocking import BlockingClient
from agentctl.errors import ErrorCode, RpcError

# --- helpers ---------------------------------------------------------------------------


def ok(result: subprocess.CompletedProcess[bytes]) -> str:
    assert b"Traceback" not in result.stderr, result.stderr.decode()
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def failed(result: subprocess.CompletedProcess[bytes]) -> str:
    """The error message of a command that had to exit 1."""
    assert b"Traceback" not in result.stderr, result.stderr.decode()
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stdout == b""
    # Errors name the command that met them.
    assert result.stderr.startswith(f"agentctl {result.args[1]}: ".encode()), result.stderr
    return result.stderr.decode()


async def listed(ws: Workspace) -> list[dict[str, Any]]:
    return await ws.client.call("session.list", {"workspace_id": ws.id})  # type: ignore[no-any-return]


async def run_in_new_session(ws: Workspace, project: Path, env: dict[str, str], *prompt: str) -> str:
    """Run `prompt` with `agentctl run` (a new session) and return that session's id."""
    before = {s["id"] for s in await listed(ws)}
    ok(await run_agentctl("run", *prompt, env=env, cwd=project))
    (session_id,) = {str(s["id"]) for s in await listed(ws)} - before
    return session_id


async def two_sharing_a_first_digit(ws: Workspace) -> tuple[str, list[str]]:
    """Create sessions until two ids share their first hex digit: that digit, and every id.

    Sixteen digits, so the seventeenth session at the latest makes a pair.
    """
    by_digit: dict[str, str] = {}
    for _ in range(17):
        session_id = await ws.new_session()
        digit = session_id.removeprefix("ses_")[0]
        if digit in by_digit:
            return digit, [s["id"] for s in await listed(ws)]
        by_digit[digit] = session_id
    raise AssertionError("17 session ids with 17 different first hex digits")


async def start_hanging_run(ws: Workspace) -> tuple[str, str]:
    """A session with a run that has streamed its one chunk and hangs: (session id, run id).

    Its chunk, not its run.started: cancelled before the chunk, the run may have no assistant message yet.
    """
    session_id = await ws.new_session("busy one")
    reply = await ws.send(session_id, {"chunks": ["x"], "hang": True})
    await ws.events.until(lambda e: e["type"] == "message.delta" and e["payload"]["run_id"] == reply["run_id"])
    return session_id, reply["run_id"]


async def cancel_and_wait_idle(ws: Workspace, session_id: str, run_id: str) -> dict[str, Any]:
    """Cancel the session's run; its RunComplete, once the session is idle again."""
    await ws.cancel(session_id)
    complete = await ws.events.until_complete(run_id)

    def idle(e: dict[str, Any]) -> bool:
        return e["type"] == "session.updated" and e["payload"]["id"] == session_id and e["payload"]["busy"] is False

    # It follows the run's RunComplete, which may already have been read past.
    ended = next(i for i, e in enumerate(ws.events.seen) if e["type"] == "run.complete" and e["payload"] is complete)
    if not any(idle(e) for e in ws.events.seen[ended:]):
        await ws.events.until(idle)
    return complete


async def resolve(daemon: Daemon, workspace_id: str, ref: str) -> str:
    """`resolve_session` on a blocking client of its own, in a thread (it blocks)."""

    def blocking() -> str:
        with BlockingClient.connect(daemon.socket_path) as client:
            return resolve_session(client, workspace_id, ref)

    with trio.fail_after(WAIT):
        # Abandoned on cancel: otherwise the bound could not end a thread that hangs.
        return await trio.to_thread.run_sync(blocking, abandon_on_cancel=True)


# --- resolving a reference -------------------------------------------------------------------


async def test_resolve_session_takes_a_full_id_or_a_prefix_with_or_without_ses(daemon: Daemon, ws: Workspace) -> None:
    session_id = await ws.new_session()
    hex_part = session_id.removeprefix("ses_")
    assert session_id.startswith("ses_") and len(hex_part) == 32
    for ref in (session_id, session_id[:8], hex_part, hex_part[:4]):
        assert await resolve(daemon, ws.id, ref) == session_id, ref


async def test_resolve_session_raises_not_found_for_an_unknown_reference(daemon: Daemon, ws: Workspace) -> None:
    session_id = await ws.new_session()
    other_digit = "0" if session_id[4] != "0" else "1"
    for ref in (other_digit, "ses_" + other_digit, "", "not-a-session"):
        with pytest.raises(RpcError) as caught:
            await resolve(daemon, ws.id, ref)
        assert caught.value.code == ErrorCode.NOT_FOUND
        assert caught.value.message == f"session: no session matches {ref!r}"


async def test_resolve_session_raises_conflict_naming_the_candidates_newest_first(
    daemon: Daemon, ws: Workspace
) -> None:
    digit, ids = await two_sharing_a_first_digit(ws)
    candidates = [i for i in ids if i.startswith("ses_" + digit)]  # session.list order: most recent first
    assert len(candidates) == 2
    for ref in (digit, "ses_" + digit):
        with pytest.raises(RpcError) as caught:
            await resolve(daemon, ws.id, ref)
        assert caught.value.code == ErrorCode.CONFLICT
        assert caught.value.message == (
            f"session: {ref!r} matches 2 sessions: {candidates[0]}, {candidates[1]}; give more characters"
        )
    # One more character than they share settles it.
    shared = 0
    while candidates[0][shared] == candidates[1][shared]:
        shared += 1
    for session_id in candidates:
        assert await resolve(daemon, ws.id, session_id[: shared + 1]) == session_id


async def test_resolve_session_lists_at_most_five_candidates(daemon: Daemon, ws: Workspace) -> None:
    for _ in range(7):
        await ws.new_session()
    ids = [s["id"] for s in await listed(ws)]
    with pytest.raises(RpcError) as caught:
        await resolve(daemon, ws.id, "ses_")
    assert caught.value.code == ErrorCode.CONFLICT
    assert caught.value.message == (
        f"session: 'ses_' matches 7 sessions: {', '.join(ids[:5])}, ...; give more characters"
    )


async def test_resolve_session_prefers_an_exact_id(daemon: Daemon, ws: Workspace) -> None:
    # Ids all have one length, so an exact id is never a prefix of another; what this
    # can check is that the exact id wins over the same characters read as a prefix.
    first = await ws.new_session()
    await ws.new_session()
    assert await resolve(daemon, ws.id, first) == first
    assert await resolve(daemon, ws.id, first.removeprefix("ses_")) == first


async def test_resolve_session_only_sees_the_sessions_of_its_workspace(
    daemon: Daemon, ws: Workspace, short_tmp: Path
) -> None:
    elsewhere = short_tmp / "elsewhere"
    elsewhere.mkdir()
    other = await ws.client.call("workspace.open", {"path": str(elsewhere)})
    session_id = await ws.new_session()
    with pytest.raises(RpcError) as caught:
        await resolve(daemon, other["id"], session_id)
    assert caught.value.code == ErrorCode.NOT_FOUND


# --- show ------------------------------------------------------------------------------------


async def test_show_prints_the_conversation_of_a_session_given_by_prefix(
    ws: Workspace, project: Path, env: dict[str, str]
) -> None:
    session_id = await run_in_new_session(ws, project, env, "hello", "world")
    hex_part = session_id.removeprefix("ses_")
    expected = f"# hello world ({session_id}, 2 messages)\n\n## user\nhello world\n\n## assistant\nhello world\n"
    for ref in (session_id, session_id[:10], hex_part[:6]):
        assert ok(await run_agentctl("show", ref, env=env, cwd=project)) == expected, ref


async def test_show_lists_the_tool_calls_and_their_results(ws: Workspace, project: Path, env: dict[str, str]) -> None:
    (project / "notes.txt").write_text("one\ntwo\n")
    script = {
        "steps": [
            {"chunks": ["reading"], "tool_calls": [{"name": "view", "arguments": {"path": "notes.txt"}}]},
            {"tool_calls": [{"name": "nope", "arguments": {}}]},
            {"chunks": ["two lines"]},
        ]
    }
    session_id = await run_in_new_session(ws, project, env, "-m", "scripted", json.dumps(script))
    shown = ok(await run_agentctl("show", session_id, env=env, cwd=project))
    assert (
        '## assistant (tool_calls)\nreading\n> view {"path": "notes.txt"}\n\n## tool\n< view: lines 1-2\n\n'
        "## assistant (tool_calls)\n> nope {}\n\n## tool\n< nope: error: unknown tool 'nope'"
    ) in shown
    assert shown.endswith("## assistant\ntwo lines\n")


async def test_show_json_prints_the_messages(ws: Workspace, project: Path, env: dict[str, str]) -> None:
    session_id = await run_in_new_session(ws, project, env, "hello", "world")
    elsewhere = project.parent  # --cwd names the workspace, not the process's directory
    out = ok(await run_agentctl("show", "--json", "--cwd", str(project), session_id[:8], env=env, cwd=elsewhere))
    messages = json.loads(out)
    assert messages == await ws.client.call("session.messages", {"workspace_id": ws.id, "session_id": session_id})
    assert [(m["role"], m["text"], m["finish_reason"]) for m in messages] == [
        ("user", "hello world", "stop"),
        ("assistant", "hello world", "stop"),
    ]
    assert all(m["session_id"] == session_id for m in messages)


async def test_show_prints_a_conversation_longer_than_the_daemons_request_limit(
    daemon: Daemon, project: Path, env: dict[str, str]
) -> None:
    # The daemon's 16 MiB limit is on what clients send; what it sends back is
    # not limited by it, and a long conversation is one session.messages reply.
    prompt = b"x" * (9 * 1024 * 1024)
    run = await run_agentctl("run", "--quiet", env=env, cwd=project, stdin=prompt)
    assert run.returncode == 0, run.stderr
    assert run.stdout == prompt + b"\n"
    sessions = ok(await run_agentctl("sessions", env=env, cwd=project))
    session_id = sessions.split()[0]
    out = (await run_agentctl("show", session_id, env=env, cwd=project)).stdout
    assert len(out) > 18 * 1024 * 1024
    assert out.count(prompt) == 2


async def test_show_notes_a_finish_reason_other_than_stop(ws: Workspace, project: Path, env: dict[str, str]) -> None:
    session_id, run_id = await start_hanging_run(ws)
    complete = await cancel_and_wait_idle(ws, session_id, run_id)
    assert complete["cancelled"] is True
    out = ok(await run_agentctl("show", session_id, env=env, cwd=project))
    assert out.startswith(f"# busy one ({session_id}, 2 messages)\n"), out
    assert "\n## user\n" in out
    assert "\n## assistant (cancelled)\n" in out


async def test_show_of_an_unknown_session_exits_1_with_not_found(
    daemon: Daemon, ws: Workspace, project: Path, env: dict[str, str]
) -> None:
    await ws.new_session()
    err = failed(await run_agentctl("show", "ses_nope", env=env, cwd=project))
    assert "no session matches 'ses_nope'" in err


async def test_show_of_an_ambiguous_prefix_exits_1_listing_the_candidates(
    ws: Workspace, project: Path, env: dict[str, str]
) -> None:
    digit, ids = await two_sharing_a_first_digit(ws)
    candidates = [i for i in ids if i.startswith("ses_" + digit)]
    err = failed(await run_agentctl("show", digit, env=env, cwd=project))
    assert f"'{digit}' matches 2 sessions: {candidates[0]}, {candidates[1]}; give more characters" in err


async def test_show_starts_the_daemon_when_none_runs(project: Path, env: dict[str, str]) -> None:
    try:
        err = failed(await run_agentctl("show", "abc", env=env, cwd=project))
        assert "no session matches 'abc'" in err  # the daemon answered
    finally:
        await run_agentctl("stop", env=env)


# --- rm --------------------------------------------------------------------------------------


async def test_rm_removes_the_session(ws: Workspace, project: Path, env: dict[str, str]) -> None:
    session_id = await run_in_new_session(ws, project, env, "hello", "world")
    kept = await ws.new_session("kept")
    out = ok(await run_agentctl("rm", session_id.removeprefix("ses_")[:8], env=env, cwd=project))
    assert out == f"removed {session_id} (hello world)\n"
    remaining = json.loads(ok(await run_agentctl("sessions", "--json", env=env, cwd=project)))
    assert [s["id"] for s in remaining] == [kept]
    err = failed(await run_agentctl("rm", session_id, env=env, cwd=project))
    assert f"no session matches '{session_id}'" in err


async def test_rm_refuses_a_busy_session(ws: Workspace, project: Path, env: dict[str, str]) -> None:
    session_id, run_id = await start_hanging_run(ws)
    try:
        err = failed(await run_agentctl("rm", session_id[:12], env=env, cwd=project))
        # Said with the command to type, not the protocol's words.
        assert err == (
            f"agentctl rm: session {session_id} is running a prompt;"
            f" cancel it first: agentctl cancel --session {session_id}\n"
        )
        assert session_id in {s["id"] for s in await listed(ws)}
    finally:
        await cancel_and_wait_idle(ws, session_id, run_id)
    # Idle again, it can go.
    assert ok(await run_agentctl("rm", session_id, env=env, cwd=project)) == f"removed {session_id} (busy one)\n"


async def test_rm_of_an_unknown_session_exits_1(
    daemon: Daemon, ws: Workspace, project: Path, env: dict[str, str]
) -> None:
    err = failed(await run_agentctl("rm", "0123", env=env, cwd=project))
    assert "no session matches '0123'" in err


# --- sessions --------------------------------------------------------------------------------


async def test_sessions_shows_full_ids_and_readable_titles(ws: Workspace, project: Path, env: dict[str, str]) -> None:
    untitled = (await ws.client.call("session.create", {"workspace_id": ws.id}))["id"]
    titled = await ws.new_session("a title")
    lines = ok(await run_agentctl("sessions", env=env, cwd=project)).splitlines()
    assert len(lines) == 2
    by_id = {line.split()[0]: line for line in lines}
    assert set(by_id) == {untitled, titled}  # the full ids
    assert by_id[untitled].endswith("  New session")
    assert by_id[titled].endswith("  a title")
    as_json = json.loads(ok(await run_agentctl("sessions", "--json", env=env, cwd=project)))
    assert {s["id"]: s["title"] for s in as_json} == {untitled: "New session", titled: "a title"}


async def test_run_continues_a_session_given_by_prefix(ws: Workspace, project: Path, env: dict[str, str]) -> None:
    session_id = await ws.new_session()
    result = await run_agentctl("run", "--session", session_id[4:12], "hello", "again", env=env, cwd=project)
    assert result.returncode == 0, result.stderr
    messages = await ws.client.call("session.messages", {"workspace_id": ws.id, "session_id": session_id})
    assert [m["text"] for m in messages] == ["hello again", "hello again"]
    unknown = await run_agentctl("run", "--session", "ffffffffffff", "hi", env=env, cwd=project)
    assert unknown.returncode == 1
    assert b"no session matches" in unknown.stderr
