"""Workspaces and sessions through the client library: opening, claims, idle close, session records."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import trio
from support import WAIT, Daemon, DaemonFactory, Events, Workspace, open_workspace

from agentctl.client import Client, RpcError

HANG = {"chunks": ["started"], "hang": True}

SESSION_FIELDS = {
    "id": str,
    "workspace_id": str,
    "title": str,
    "created_at": float,
    "updated_at": float,
    "message_count": int,
    "busy": bool,
    "prompt_tokens": int,
    "completion_tokens": int,
}
MESSAGE_FIELDS = {
    "id": str,
    "session_id": str,
    "role": str,
    "text": str,
    "run_id": str,
    "created_at": float,
    "parts": list,
    "finish_reason": str,
}


async def call_error(client: Client, method: str, params: dict[str, Any]) -> RpcError:
    with pytest.raises(RpcError) as info:
        await client.call(method, params)
    return info.value


def check_fields(record: dict[str, Any], fields: dict[str, type]) -> None:
    assert set(record) == set(fields), record
    for name, kind in fields.items():
        assert type(record[name]) is kind, (name, record[name])


async def start_hanging_run(ws: Workspace, session_id: str, **extra: Any) -> str:
    run_id = str((await ws.send(session_id, HANG, **extra))["run_id"])
    await ws.events.until(lambda e: e["type"] == "message.delta" and e["payload"]["run_id"] == run_id)
    return run_id


# --- opening ------------------------------------------------------------------------


async def test_same_directory_by_symlink_and_dotdot_from_two_connections_is_one_workspace(
    daemon: Daemon, project: Path, short_tmp: Path
) -> None:
    (project / "sub").mkdir()
    link = short_tmp / "link"
    link.symlink_to(project)
    async with daemon.client() as a, daemon.client() as b:
        by_link = await a.call("workspace.open", {"path": str(link)})
        by_dotdot = await b.call("workspace.open", {"path": f"{project}/sub/.."})
        assert by_link["id"] == by_dotdot["id"]
        assert by_link["path"] == by_dotdot["path"] == os.path.realpath(project)
        listed = await a.call("workspace.list")
        assert [(w["id"], w["path"], w["clients"]) for w in listed] == [(by_link["id"], os.path.realpath(project), 2)]


async def test_workspace_open_of_relative_path_gets_error_1(daemon: Daemon, project: Path) -> None:
    async with daemon.client() as client:
        for path in ("project", "./project", ""):
            err = await call_error(client, "workspace.open", {"path": path})
            assert err.code == 1 and "path" in err.message


async def test_workspace_open_of_missing_directory_gets_error_2(daemon: Daemon, short_tmp: Path) -> None:
    async with daemon.client() as client:
        err = await call_error(client, "workspace.open", {"path": str(short_tmp / "nowhere")})
        assert err.code == 2 and "path" in err.message


async def test_workspace_open_of_a_file_gets_error_1(daemon: Daemon, project: Path) -> None:
    a_file = project / "README"
    a_file.write_text("not a directory\n")
    async with daemon.client() as client:
        err = await call_error(client, "workspace.open", {"path": str(a_file)})
        assert err.code == 1 and "not a directory" in err.message
        assert await client.call("workspace.list") == []


async def test_workspace_open_of_a_path_the_daemon_cannot_use_gets_error_1_naming_why(
    daemon: Daemon, short_tmp: Path
) -> None:
    loop = short_tmp / "loop"
    loop.symlink_to(short_tmp / "loop")
    a_file = short_tmp / "file"
    a_file.write_text("x")
    cases = {
        str(loop): "Too many levels of symbolic links",
        str(a_file / "below"): "Not a directory",
        "/" + "x" * 5000: "File name too long",
    }
    async with daemon.client() as client:
        for path, why in cases.items():
            err = await call_error(client, "workspace.open", {"path": path})
            assert err.code == 1 and "cannot use" in err.message and why in err.message, (path[:40], err)
        assert await client.call("ping") == {}


async def test_workspace_open_through_a_symlink_to_a_path_that_is_not_utf8_gets_error_1(
    daemon: Daemon, short_tmp: Path
) -> None:
    # The path sent is UTF-8; the directory it resolves to is not, and could be
    # neither stored nor sent back.
    target = short_tmp / os.fsdecode(b"caf\xe9")
    target.mkdir()
    link = short_tmp / "link"
    link.symlink_to(target)
    async with daemon.client() as client:
        err = await call_error(client, "workspace.open", {"path": str(link)})
        assert err.code == 1
        assert err.message == (
            f"path: {link} resolves to {short_tmp}/caf\\xe9, which is not valid UTF-8"
            f" (byte 0xe9 at offset {len(str(short_tmp)) + 4}); agentd keeps paths as UTF-8"
        )
        assert await client.call("workspace.list") == []


async def test_a_workspace_being_opened_is_neither_listed_nor_found_until_it_serves(
    start_daemon: DaemonFactory, project: Path
) -> None:
    # Reopening takes a store round trip before the workspace serves; its id is
    # known from the last opening. Requests landing in that window must see a
    # workspace that is not open, not half of one (an internal error).
    daemon = start_daemon("--idle-grace", "0.001")
    async with daemon.client() as opener:
        workspace_id = (await opener.call("workspace.open", {"path": str(project)}))["id"]
        seen: list[int] = []

        async def look(client: Client, stop: trio.Event) -> None:
            while not stop.is_set():
                for listed in await client.call("workspace.list"):
                    assert listed["id"] == workspace_id and listed["active_runs"] == 0
                try:
                    await client.call("session.list", {"workspace_id": workspace_id})
                    seen.append(0)
                except RpcError as exc:
                    assert exc.code in (2, 3), exc
                    seen.append(exc.code)

        stop = trio.Event()
        async with daemon.client() as c1, daemon.client() as c2, daemon.client() as c3:
            with trio.fail_after(WAIT * 3):
                async with trio.open_nursery() as nursery:
                    for client in (c1, c2, c3):
                        nursery.start_soon(look, client, stop)
                    for _ in range(40):
                        assert await opener.call("workspace.close", {"workspace_id": workspace_id}) == {}
                        reopened = await opener.call("workspace.open", {"path": str(project)})
                        assert reopened["id"] == workspace_id
                    stop.set()
        assert 0 in seen  # the lookers saw it open, too


async def test_workspace_close_of_workspace_this_connection_did_not_open_gets_error_2(
    daemon: Daemon, ws: Workspace
) -> None:
    async with daemon.client() as other:
        err = await call_error(other, "workspace.close", {"workspace_id": ws.id})
        assert err.code == 2 and "workspace_id" in err.message
        err = await call_error(other, "workspace.close", {"workspace_id": "ws_nonexistent"})
        assert err.code == 2
    # The owner's claim is untouched, and closing twice is refused the same way.
    listed = await ws.client.call("workspace.list")
    assert [(w["id"], w["clients"]) for w in listed] == [(ws.id, 1)]
    assert await ws.client.call("workspace.close", {"workspace_id": ws.id}) == {}
    err = await call_error(ws.client, "workspace.close", {"workspace_id": ws.id})
    assert err.code == 2


async def test_session_operations_on_unknown_workspace_get_error_2(daemon: Daemon) -> None:
    unknown = "ws_0123456789abcdef"
    ref = {"workspace_id": unknown, "session_id": "ses_x"}
    calls: list[tuple[str, dict[str, Any]]] = [
        ("session.create", {"workspace_id": unknown, "title": "t"}),
        ("session.list", {"workspace_id": unknown}),
        ("session.get", ref),
        ("session.delete", ref),
        ("session.messages", ref),
        ("agent.send", {**ref, "prompt": "hello"}),
        ("agent.cancel", ref),
        ("agent.queue", ref),
        ("agent.queue_clear", ref),
        ("events.subscribe", {"workspace_id": unknown}),
    ]
    async with daemon.client() as client:
        for method, params in calls:
            err = await call_error(client, method, params)
            assert err.code == 2, (method, err)
            assert "workspace_id" in err.message, (method, err)


# --- sessions -------------------------------------------------------------------------


async def test_session_create_get_list_messages_delete_round_trip(ws: Workspace) -> None:
    client = ws.client
    created = await client.call("session.create", {"workspace_id": ws.id, "title": "first"})
    check_fields(created, SESSION_FIELDS)
    assert created["workspace_id"] == ws.id and created["title"] == "first"
    assert created["message_count"] == 0 and created["busy"] is False
    assert created["created_at"] <= created["updated_at"]
    untitled = await client.call("session.create", {"workspace_id": ws.id})
    assert untitled["title"] == "New session" and untitled["id"] != created["id"]

    ref = {"workspace_id": ws.id, "session_id": created["id"]}
    assert await client.call("session.get", ref) == created
    assert await client.call("session.messages", ref) == []

    run_id = (await ws.send(created["id"], "echo me back"))["run_id"]
    rc = await ws.events.until_complete(run_id)
    assert rc["text"] == "echo me back" and rc["cancelled"] is False and rc["error"] is None

    messages = await client.call("session.messages", ref)
    for message in messages:
        check_fields(message, MESSAGE_FIELDS)
    user, assistant = messages
    assert (user["role"], user["text"], user["run_id"], user["session_id"], user["finish_reason"]) == (
        "user",
        "echo me back",
        run_id,
        created["id"],
        "stop",
    )
    assert (assistant["role"], assistant["text"], assistant["run_id"], assistant["finish_reason"]) == (
        "assistant",
        "echo me back",
        run_id,
        "stop",
    )
    assert assistant["id"] == rc["message_id"] and user["id"] != assistant["id"]
    assert user["created_at"] <= assistant["created_at"]

    got = await client.call("session.get", ref)
    assert got["message_count"] == 2 and got["busy"] is False
    assert got["created_at"] == created["created_at"] and got["updated_at"] >= created["updated_at"]
    listed = await client.call("session.list", {"workspace_id": ws.id})
    assert [s["id"] for s in listed] == [created["id"], untitled["id"]]  # most recently updated first
    assert listed[0] == got

    deleted = await client.call("session.delete", ref)
    assert deleted["id"] == created["id"]
    for method in ("session.get", "session.messages", "session.delete"):
        err = await call_error(client, method, ref)
        assert err.code == 2 and "session_id" in err.message, method
    assert [s["id"] for s in await client.call("session.list", {"workspace_id": ws.id})] == [untitled["id"]]


async def test_session_created_and_deleted_events_reach_another_subscribed_client(
    daemon: Daemon, ws: Workspace, project: Path
) -> None:
    async with daemon.client() as other_client:
        other = await open_workspace(other_client, project)
        assert other.id == ws.id
        created = await ws.client.call("session.create", {"workspace_id": ws.id, "title": "shared"})
        await ws.client.call("session.delete", {"workspace_id": ws.id, "session_id": created["id"]})
        seen_created = await other.events.until(lambda e: e["type"] == "session.created")
        seen_deleted = await other.events.until(lambda e: e["type"] == "session.deleted")
        assert seen_created["payload"] == created
        assert seen_deleted["payload"]["id"] == created["id"]
        assert seen_created["workspace_id"] == seen_deleted["workspace_id"] == ws.id
        assert seen_created["seq"] < seen_deleted["seq"]


async def test_session_delete_of_busy_session_gets_error_3_and_session_survives(ws: Workspace) -> None:
    session_id = await ws.new_session()
    run_id = await start_hanging_run(ws, session_id)
    ref = {"workspace_id": ws.id, "session_id": session_id}
    err = await call_error(ws.client, "session.delete", ref)
    assert err.code == 3
    session = await ws.client.call("session.get", ref)
    assert session["busy"] is True and session["message_count"] == 2
    assert session_id in [s["id"] for s in await ws.client.call("session.list", {"workspace_id": ws.id})]
    # Once the run is over the same delete succeeds.
    await ws.cancel(session_id)
    assert (await ws.events.until_complete(run_id))["cancelled"] is True
    assert (await ws.client.call("session.delete", ref))["id"] == session_id


@pytest.mark.parametrize("prompt", ["", "   ", " \n\t "])
async def test_agent_send_with_blank_prompt_gets_error_1_and_creates_no_run(ws: Workspace, prompt: str) -> None:
    session_id = await ws.new_session()
    err = await call_error(
        ws.client,
        "agent.send",
        {"workspace_id": ws.id, "session_id": session_id, "prompt": prompt, "run_id": "blank-run"},
    )
    assert err.code == 1 and "prompt" in err.message
    with pytest.raises(RpcError) as info:
        await ws.client.call("run.wait", {"run_id": "blank-run", "timeout": 0})
    assert info.value.code == 2
    # Events come in publish order: had the blank prompt started a run, its
    # run.started would come before this one's.
    run_id = (await ws.send(session_id, "real prompt"))["run_id"]
    await ws.events.until_complete(run_id)
    assert [e["payload"]["run_id"] for e in ws.events.of_type("run.started")] == [run_id]
    messages = await ws.client.call("session.messages", {"workspace_id": ws.id, "session_id": session_id})
    assert [m["text"] for m in messages] == ["real prompt", "real prompt"]


async def test_agent_send_to_unknown_session_gets_error_2(ws: Workspace) -> None:
    err = await call_error(
        ws.client, "agent.send", {"workspace_id": ws.id, "session_id": "ses_nope", "prompt": "hello"}
    )
    assert err.code == 2 and "session_id" in err.message


async def test_agent_send_with_duplicate_run_id_gets_error_3(ws: Workspace) -> None:
    first = await ws.new_session()
    second = await ws.new_session()
    # A finished run's id stays taken...
    assert (await ws.send(first, "once", run_id="client-run-1"))["run_id"] == "client-run-1"
    await ws.events.until_complete("client-run-1")
    for session_id in (first, second):
        err = await call_error(
            ws.client,
            "agent.send",
            {"workspace_id": ws.id, "session_id": session_id, "prompt": "twice", "run_id": "client-run-1"},
        )
        assert err.code == 3 and "client-run-1" in err.message
    # ...and so does a running one's.
    await start_hanging_run(ws, first, run_id="client-run-2")
    err = await call_error(
        ws.client,
        "agent.send",
        {"workspace_id": ws.id, "session_id": second, "prompt": "again", "run_id": "client-run-2"},
    )
    assert err.code == 3
    assert (await ws.client.call("session.get", {"workspace_id": ws.id, "session_id": second}))["busy"] is False
    await ws.cancel(first)
    await ws.events.until_complete("client-run-2")


async def test_two_subscribers_see_the_same_events_with_the_same_seqs(
    daemon: Daemon, ws: Workspace, project: Path
) -> None:
    async with daemon.client() as other_client:
        other = await open_workspace(other_client, project)
        session_id = await ws.new_session()
        run_id = (await ws.send(session_id, {"chunks": ["one ", "two ", "three"], "delay_ms": 5}))["run_id"]
        mine = await ws.events.until_complete(run_id)
        theirs = await other.events.until_complete(run_id)
        assert mine == theirs and mine["text"] == "one two three"

        def stripped(events: Events) -> list[tuple[int, str, str, Any]]:
            return [(e["seq"], e["type"], e["workspace_id"], e["payload"]) for e in events.seen]

        assert stripped(ws.events) == stripped(other.events)
        types = [e["type"] for e in ws.events.seen]
        assert types[0] == "session.created" and types[-1] == "run.complete"
        assert types.count("message.delta") == 3
        seqs = [e["seq"] for e in ws.events.seen]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        assert {e["subscription_id"] for e in ws.events.seen} == {ws.events.subscription_id}
        assert {e["subscription_id"] for e in other.events.seen} == {other.events.subscription_id}
        assert ws.events.subscription_id != other.events.subscription_id


# --- claims and idle close --------------------------------------------------------------


# A run that outlasts a short grace many times over, and then ends by itself.
OUTLASTS_GRACE = {"chunks": ["a", "b", "c"], "delay_ms": 300}


async def test_a_released_workspace_stays_open_until_its_runs_end_then_closes_after_the_grace(
    start_daemon: DaemonFactory, project: Path
) -> None:
    # Its client gone (a closed terminal, `agentctl run --detach`), a run still finishes.
    daemon = start_daemon("--idle-grace", "0.1")
    async with daemon.client() as a, daemon.client() as b:
        ws = await open_workspace(a, project)
        session_id = await ws.new_session()
        run_id = (await ws.send(session_id, OUTLASTS_GRACE))["run_id"]
        waited: list[Any] = []
        async with trio.open_nursery() as nursery:

            async def wait_for_run() -> None:
                # b never opened the workspace: run.wait needs no claim.
                waited.append(await b.call("run.wait", {"run_id": run_id}))

            nursery.start_soon(wait_for_run)
            assert await a.call("workspace.close", {"workspace_id": ws.id}) == {}
            rc = await ws.events.until_complete(run_id)
            closed = await ws.events.until(lambda e: e["type"] == "workspace.closed")
        assert rc["cancelled"] is False and rc["error"] is None and rc["text"] == "abc"
        assert closed["payload"] == {"workspace_id": ws.id, "reason": "idle", "error": None}
        assert waited == [rc]
        assert await a.call("workspace.list") == []
        err = await call_error(a, "session.list", {"workspace_id": ws.id})
        assert err.code == 2


async def test_disconnect_of_last_client_leaves_its_run_going_then_closes_the_workspace(
    start_daemon: DaemonFactory, project: Path
) -> None:
    daemon = start_daemon("--idle-grace", "0.1")
    async with daemon.client() as watcher:
        async with daemon.client() as owner:
            ws = await open_workspace(owner, project)
            session_id = await ws.new_session()
            run_id = (await ws.send(session_id, OUTLASTS_GRACE))["run_id"]
            # The watcher subscribes without a claim: it does not keep the workspace open.
            sub = await watcher.call("events.subscribe", {"workspace_id": ws.id})
            events = Events(watcher, sub["subscription_id"])
        rc = await events.until_complete(run_id)
        closed = await events.until(lambda e: e["type"] == "workspace.closed")
        assert rc["cancelled"] is False and rc["text"] == "abc"
        assert closed["payload"]["reason"] == "idle"


@pytest.mark.parametrize("reclaimer", ["same-client", "another-client"])
async def test_reclaim_within_idle_grace_keeps_workspace_open_and_its_runs_going(
    start_daemon: DaemonFactory, project: Path, reclaimer: str
) -> None:
    daemon = start_daemon("--idle-grace", "0.3")
    async with daemon.client() as a, daemon.client() as b:
        ws = await open_workspace(a, project)
        session_id = await ws.new_session()
        # Five chunks 150 ms apart: the run outlasts the 0.3 s grace by far, so
        # an idle close that was not called off would cancel it.
        chunks = ["a", "b", "c", "d", "e"]
        run_id = (await ws.send(session_id, {"chunks": chunks, "delay_ms": 150}))["run_id"]
        await a.call("workspace.close", {"workspace_id": ws.id})
        again = await (a if reclaimer == "same-client" else b).call("workspace.open", {"path": str(project)})
        assert again["id"] == ws.id
        rc = await ws.events.until_complete(run_id)
        assert rc["cancelled"] is False and rc["error"] is None and rc["text"] == "abcde"
        assert ws.events.of_type("workspace.closed") == []
        # Well past the grace, the workspace still serves.
        assert [w["id"] for w in await a.call("workspace.list")] == [ws.id]
        assert (await ws.client.call("session.create", {"workspace_id": ws.id}))["workspace_id"] == ws.id


async def test_reopening_a_closed_workspace_gives_same_id_and_a_working_workspace(
    start_daemon: DaemonFactory, project: Path
) -> None:
    daemon = start_daemon("--idle-grace", "0.3")
    async with daemon.client() as client:
        first = await open_workspace(client, project)
        old_session = await first.new_session("before")
        await client.call("workspace.close", {"workspace_id": first.id})
        await first.events.until(lambda e: e["type"] == "workspace.closed")

        second = await open_workspace(client, project)
        assert second.id == first.id
        assert [w["id"] for w in await client.call("workspace.list")] == [first.id]
        session_id = await second.new_session("after")
        run_id = (await second.send(session_id, "alive again"))["run_id"]
        rc = await second.events.until_complete(run_id)
        assert rc["text"] == "alive again" and rc["cancelled"] is False
        sessions = await client.call("session.list", {"workspace_id": second.id})
        assert {s["id"] for s in sessions} == {old_session, session_id}
