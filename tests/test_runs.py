"""The run lifecycle through a real daemon: exactly one RunComplete per accepted run, whatever ends it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from support import Daemon, DaemonFactory, Workspace, open_workspace

HANG: dict[str, Any] = {"chunks": ["started "], "hang": True}


def completes_for(ws: Workspace, run_id: str) -> list[dict[str, Any]]:
    return [e["payload"] for e in ws.events.of_type("run.complete") if e["payload"]["run_id"] == run_id]


def errors_for(ws: Workspace, run_id: str) -> list[dict[str, Any]]:
    return [e["payload"] for e in ws.events.of_type("agent.error") if e["payload"]["run_id"] == run_id]


async def barrier(ws: Workspace) -> None:
    """Run one more prompt to its end: events are ordered, so anything the
    earlier runs were going to publish has been seen once this completes."""
    session_id = await ws.new_session("barrier")
    reply = await ws.send(session_id, "barrier")
    await ws.events.until_complete(reply["run_id"])


def write_config(env: dict[str, str], *, with_alias: bool) -> None:
    path = Path(env["XDG_CONFIG_HOME"]) / "agentd" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    alias = '[models.soon-gone]\nprovider = "loop"\nmodel = "m"\n' if with_alias else ""
    path.write_text(
        f'[providers.loop]\ntype = "openai"\nbase_url = "http://127.0.0.1:9"\napi_key_env = "LOOP_KEY"\n{alias}'
    )
    env["LOOP_KEY"] = "k"


async def test_pre_run_error_publishes_one_errored_run_complete_with_run_and_session(
    start_daemon: DaemonFactory, project: Path, env: dict[str, str]
) -> None:
    # agent.send refuses a model it cannot resolve; one that goes away while
    # its run waits in the queue fails when the run starts, before the model is reached.
    write_config(env, with_alias=True)
    daemon = start_daemon()
    async with daemon.client() as client:
        ws = await open_workspace(client, project)
        session_id = await ws.new_session()
        ahead = await ws.send(session_id, HANG)
        reply = await ws.send(session_id, "hi", model="soon-gone", run_id="run-1")
        assert reply == {"run_id": "run-1", "queued": True, "state": "queued", "ahead": 1}
        write_config(env, with_alias=False)
        assert "soon-gone" not in {m["name"] for m in (await client.call("models.list"))["models"]}
        params = {"workspace_id": ws.id, "session_id": session_id, "run_id": ahead["run_id"]}
        await client.call("agent.cancel", params)
        rc = await ws.events.until_complete("run-1")
        assert rc["session_id"] == session_id
        assert rc["run_id"] == "run-1"
        assert rc["cancelled"] is False
        assert "soon-gone" in rc["error"]
        assert rc["message_id"] is None
        await barrier(ws)
        assert len(completes_for(ws, "run-1")) == 1
        # The error is attributed on the wire: run_id and session_id survive.
        [error] = errors_for(ws, "run-1")
        assert error["session_id"] == session_id
        assert "soon-gone" in error["message"]


async def test_no_fallback_when_coordinator_already_published(ws: Workspace) -> None:
    session_id = await ws.new_session()
    reply = await ws.send(session_id, {"chunks": ["partial ", "text"], "error": "model exploded"})
    rc = await ws.events.until_complete(reply["run_id"])
    assert rc["error"] == "model exploded"
    assert rc["text"] == "partial text"
    assert rc["message_id"] is not None
    await barrier(ws)
    assert len(completes_for(ws, reply["run_id"])) == 1
    # The dispatcher still reports the failure, after the authoritative terminal.
    [error] = errors_for(ws, reply["run_id"])
    assert error["message"] == "model exploded"
    types = [e["type"] for e in ws.events.seen if e["payload"].get("run_id") == reply["run_id"]]
    assert types.index("run.complete") < types.index("agent.error")


async def test_cancellation_publishes_one_cancelled_terminal_and_no_error(ws: Workspace) -> None:
    session_id = await ws.new_session()
    reply = await ws.send(session_id, HANG)
    await ws.events.until(lambda e: e["type"] == "message.delta" and e["payload"]["run_id"] == reply["run_id"])
    result = await ws.cancel(session_id)
    assert result == {"cancelled": True, "run_id": reply["run_id"], "cleared": 0}
    rc = await ws.events.until_complete(reply["run_id"])
    assert rc["cancelled"] is True
    assert rc["error"] is None
    assert rc["text"] == "started "
    await barrier(ws)
    assert len(completes_for(ws, reply["run_id"])) == 1
    assert errors_for(ws, reply["run_id"]) == []


async def test_cancel_right_after_accept_ends_cancelled_and_keeps_the_user_message(ws: Workspace) -> None:
    session_id = await ws.new_session()
    reply = await ws.send(session_id, HANG)
    # No waiting for the run to start: the accept reservation makes the cancel land.
    result = await ws.cancel(session_id)
    assert result["cancelled"] is True
    rc = await ws.events.until_complete(reply["run_id"])
    assert rc["cancelled"] is True and rc["error"] is None
    messages = await ws.client.call("session.messages", {"workspace_id": ws.id, "session_id": session_id})
    user = [m for m in messages if m["role"] == "user"]
    assert [m["text"] for m in user] == [HANG_PROMPT]
    assert user[0]["run_id"] == reply["run_id"]


HANG_PROMPT = '{"chunks": ["started "], "hang": true}'


async def test_idle_cancel_does_not_poison_the_next_prompt(ws: Workspace) -> None:
    session_id = await ws.new_session()
    assert await ws.cancel(session_id) == {"cancelled": False, "run_id": None, "cleared": 0}
    reply = await ws.send(session_id, "still works")
    rc = await ws.events.until_complete(reply["run_id"])
    messages = await ws.client.call("session.messages", {"workspace_id": ws.id, "session_id": session_id})
    (answer,) = [m for m in messages if m["role"] == "assistant" and m["run_id"] == reply["run_id"]]
    assert rc == {
        "session_id": session_id,
        "run_id": reply["run_id"],
        "message_id": answer["id"],
        "text": "still works",
        "error": None,
        "cancelled": False,
        "changes": 0,
        "stop_reason": "stop",
    }


async def test_prompts_for_a_busy_session_queue_and_each_completes_in_order(ws: Workspace) -> None:
    session_id = await ws.new_session()
    first = await ws.send(session_id, {"chunks": ["one"], "delay_ms": 200})
    second = await ws.send(session_id, "two")
    third = await ws.send(session_id, "three")
    assert first["queued"] is False
    assert second["queued"] is True and third["queued"] is True
    queue = await ws.client.call("agent.queue", {"workspace_id": ws.id, "session_id": session_id})
    assert queue == [
        {"run_id": second["run_id"], "prompt": "two"},
        {"run_id": third["run_id"], "prompt": "three"},
    ]
    texts = []
    for reply in (first, second, third):
        rc = await ws.events.until_complete(reply["run_id"])
        assert rc["error"] is None and not rc["cancelled"]
        texts.append(rc["text"])
    assert texts == ["one", "two", "three"]
    messages = await ws.client.call("session.messages", {"workspace_id": ws.id, "session_id": session_id})
    assert [(m["role"], m["text"]) for m in messages][2:] == [
        ("user", "two"),
        ("assistant", "two"),
        ("user", "three"),
        ("assistant", "three"),
    ]


async def test_queue_clear_gives_each_cleared_run_a_cancelled_run_complete(ws: Workspace) -> None:
    session_id = await ws.new_session()
    active = await ws.send(session_id, HANG)
    queued = [await ws.send(session_id, f"queued {i}") for i in range(2)]
    cleared = await ws.client.call("agent.queue_clear", {"workspace_id": ws.id, "session_id": session_id})
    assert cleared == {"cleared": 2}
    for reply in queued:
        rc = await ws.events.until_complete(reply["run_id"])
        assert rc["cancelled"] is True and rc["error"] is None and rc["message_id"] is None
    assert await ws.client.call("agent.queue", {"workspace_id": ws.id, "session_id": session_id}) == []
    # The active run is untouched by a queue clear.
    session = await ws.client.call("session.get", {"workspace_id": ws.id, "session_id": session_id})
    assert session["busy"] is True
    await ws.cancel(session_id)
    assert (await ws.events.until_complete(active["run_id"]))["cancelled"] is True


async def test_cancel_cancels_the_active_run_and_clears_the_queue(ws: Workspace) -> None:
    session_id = await ws.new_session()
    active = await ws.send(session_id, HANG)
    queued = await ws.send(session_id, "never runs")
    result = await ws.cancel(session_id)
    assert result == {"cancelled": True, "run_id": active["run_id"], "cleared": 1}
    for reply in (active, queued):
        rc = await ws.events.until_complete(reply["run_id"])
        assert rc["cancelled"] is True
    await barrier(ws)
    assert len(completes_for(ws, queued["run_id"])) == 1
    assert not any(e["payload"].get("run_id") == queued["run_id"] for e in ws.events.of_type("run.started"))


async def test_an_error_in_another_session_does_not_disturb_a_run(ws: Workspace) -> None:
    mine = await ws.new_session("mine")
    theirs = await ws.new_session("theirs")
    my_run = await ws.send(mine, {"chunks": ["a", "b", "c"], "delay_ms": 50})
    their_run = await ws.send(theirs, {"chunks": [], "error": "their failure"})
    their_rc = await ws.events.until_complete(their_run["run_id"])
    assert their_rc["error"] == "their failure"
    my_rc = await ws.events.until_complete(my_run["run_id"])
    assert my_rc["error"] is None and my_rc["cancelled"] is False and my_rc["text"] == "abc"


async def test_bad_script_is_an_errored_run_complete_with_a_clear_message(ws: Workspace) -> None:
    session_id = await ws.new_session()
    reply = await ws.send(session_id, "this is not json", model="scripted")
    rc = await ws.events.until_complete(reply["run_id"])
    assert "not JSON" in rc["error"]
    reply = await ws.send(session_id, '{"chunks": "abc"}', model="scripted")
    rc = await ws.events.until_complete(reply["run_id"])
    assert "script.chunks" in rc["error"]


async def test_run_wait_answers_pending_and_finished_runs(daemon: Daemon, ws: Workspace) -> None:
    session_id = await ws.new_session()
    reply = await ws.send(session_id, {"chunks": ["x"], "delay_ms": 100})
    async with daemon.client() as other:
        waited = await other.call("run.wait", {"run_id": reply["run_id"]})
        assert waited["text"] == "x" and waited["run_id"] == reply["run_id"]
        again = await other.call("run.wait", {"run_id": reply["run_id"], "timeout": 0})
        assert again == waited


async def test_two_clients_on_one_workspace_see_the_same_run(daemon: Daemon, ws: Workspace, project: Any) -> None:
    async with daemon.client() as other_client:
        other = await open_workspace(other_client, project)
        assert other.id == ws.id
        session_id = await ws.new_session()
        reply = await ws.send(session_id, "seen by both")
        mine = await ws.events.until_complete(reply["run_id"])
        theirs = await other.events.until_complete(reply["run_id"])
        assert mine == theirs

        def run_events(w: Workspace) -> list[tuple[int, str]]:
            return [(e["seq"], e["type"]) for e in w.events.seen if e["payload"].get("run_id") == reply["run_id"]]

        assert run_events(ws) == run_events(other)


async def test_scripted_stamp_prefixes_each_chunk_with_the_monotonic_clock(ws: Workspace) -> None:
    import time

    before = time.monotonic_ns()
    session_id = await ws.new_session()
    reply = await ws.send(session_id, {"chunks": ["a", "b"], "stamp": True})
    rc = await ws.events.until_complete(reply["run_id"])
    deltas = [e["payload"]["text"] for e in ws.events.of_type("message.delta")]
    stamps = [int(d.split("|")[0]) for d in deltas]
    assert [d.split("|", 1)[1] for d in deltas] == ["a", "b"]
    assert before <= stamps[0] <= stamps[1] <= time.monotonic_ns()
    assert rc["text"] == "".join(deltas)
