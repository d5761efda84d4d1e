"""What `agentctl acp` tells an editor about a session: a real daemon's events and stored messages as ACP updates.

Every update made here is checked against the official ACP SDK's schema, and
must come back from it unchanged: a field the schema does not know, or a value
it would quietly replace, fails the test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from acp.schema import RequestPermissionRequest, SessionNotification
from support import Workspace

from agentctl.acp._updates import SessionView, grant_action, permission_params, replay, stop_reason


def acp_checked(session_id: str, updates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for update in updates:
        notification = SessionNotification.model_validate({"sessionId": session_id, "update": update})
        assert notification.model_dump(mode="json", by_alias=True, exclude_unset=True)["update"] == update
    return updates


def run_events(ws: Workspace, run_id: str) -> list[dict[str, Any]]:
    """The envelopes of one run, in the order the subscription saw them."""
    return [e for e in ws.events.seen if e["payload"].get("run_id") == run_id]


def feed(view: SessionView, session_id: str, envelopes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    updates: list[dict[str, Any]] = []
    for envelope in envelopes:
        updates += view.take(envelope)
    return acp_checked(session_id, updates)


def chunks(updates: list[dict[str, Any]], kind: str = "agent_message_chunk") -> list[str]:
    return [u["content"]["text"] for u in updates if u["sessionUpdate"] == kind]


async def streamed_run(ws: Workspace, session_id: str, script: dict[str, Any], **extra: Any) -> list[dict[str, Any]]:
    reply = await ws.send(session_id, script, **extra)
    await ws.events.until_complete(reply["run_id"])
    return run_events(ws, reply["run_id"])


async def test_streamed_text_is_told_once_when_deltas_overlap_and_a_lost_delta_comes_with_the_finished_text(
    ws: Workspace, project: Path
) -> None:
    session_id = await ws.new_session()
    envelopes = await streamed_run(ws, session_id, {"chunks": ["Hel", "lo", ", world"]})
    deltas = [e for e in envelopes if e["type"] == "message.delta"]
    assert [d["payload"]["text"] for d in deltas] == ["Hel", "lo", ", world"]
    message_id = deltas[0]["payload"]["message_id"]

    updates = feed(SessionView(session_id, str(project)), session_id, envelopes)
    assert chunks(updates) == ["Hel", "lo", ", world"]
    assert {u["messageId"] for u in updates if u["sessionUpdate"] == "agent_message_chunk"} == {message_id}

    # A subscriber that fell behind gets deltas merged: one repeats text already sent.
    first, second, third = deltas
    merged = {**second, "payload": {**second["payload"], "text": "lo, world"}}
    overlapping = [e for e in envelopes if e["type"] != "message.delta"]
    at = envelopes.index(first)
    overlapping[at:at] = [first, merged, third]
    assert chunks(feed(SessionView(session_id, str(project)), session_id, overlapping)) == ["Hel", "lo, world"]

    # A lost delta leaves a hole: nothing past it streams, the finished message fills it once.
    lossy = [e for e in envelopes if e is not second]
    told = chunks(feed(SessionView(session_id, str(project)), session_id, lossy))
    assert told == ["Hel", "lo, world"]


async def test_a_prompt_is_shown_unless_this_bridge_sent_it(ws: Workspace, project: Path) -> None:
    session_id = await ws.new_session()
    script = json.dumps({"chunks": ["ok"]})
    theirs = await streamed_run(ws, session_id, {"chunks": ["ok"]})
    view = SessionView(session_id, str(project))
    updates = feed(view, session_id, theirs)
    assert chunks(updates, "user_message_chunk") == [script]
    [user] = [e["payload"] for e in theirs if e["type"] == "message.created" and e["payload"]["role"] == "user"]
    assert [u["messageId"] for u in updates if u["sessionUpdate"] == "user_message_chunk"] == [user["id"]]

    run_id = "0123456789abcdef0123456789abcdef"
    view.started(run_id)
    ours = await streamed_run(ws, session_id, {"chunks": ["ok"]}, run_id=run_id)
    assert chunks(feed(view, session_id, ours), "user_message_chunk") == []


async def test_events_of_another_session_tell_nothing(ws: Workspace, project: Path) -> None:
    session_id, other = await ws.new_session(), await ws.new_session()
    envelopes = await streamed_run(ws, other, {"chunks": ["elsewhere"]})
    assert envelopes and feed(SessionView(session_id, str(project)), session_id, envelopes) == []


async def test_tool_calls_have_kind_locations_input_and_their_results_an_edit_its_diff(
    ws: Workspace, project: Path
) -> None:
    (project / "a.txt").write_text("one\ntwo\nthree\n")
    session_id = await ws.new_session()
    calls = [
        {"name": "view", "arguments": {"path": "a.txt", "offset": 2}, "id": "v"},
        {"name": "grep", "arguments": {"pattern": "t", "path": "."}, "id": "g"},
        {"name": "edit", "arguments": {"path": "a.txt", "old_string": "two", "new_string": "2"}, "id": "e"},
        {"name": "write", "arguments": {"path": "sub/b.txt", "content": "bee\n"}, "id": "w"},
        # A timeout above the limit: the tool refuses, an error result.
        {"name": "bash", "arguments": {"command": "echo hi", "timeout": 1e9}, "id": "b"},
    ]
    envelopes = await streamed_run(
        ws, session_id, {"steps": [{"tool_calls": calls}, {"chunks": ["done"]}]}, allow=["*"]
    )
    updates = feed(SessionView(session_id, str(project)), session_id, envelopes)
    root = str(project)

    started = {u["toolCallId"]: u for u in updates if u["sessionUpdate"] == "tool_call"}
    assert {k: (u["kind"], u["status"], u["locations"]) for k, u in started.items()} == {
        "v": ("read", "in_progress", [{"path": f"{root}/a.txt", "line": 2}]),
        "g": ("search", "in_progress", [{"path": root}]),
        "e": ("edit", "in_progress", [{"path": f"{root}/a.txt"}]),
        "w": ("edit", "in_progress", [{"path": f"{root}/sub/b.txt"}]),
        "b": ("execute", "in_progress", []),
    }
    assert started["v"]["title"] == "view a.txt" and started["b"]["title"] == "bash: echo hi"
    assert started["e"]["rawInput"] == calls[2]["arguments"]

    # tool.finished says each call's summary; the tool message then its full output.
    finals: dict[str, dict[str, Any]] = {}
    for u in updates:
        if u["sessionUpdate"] == "tool_call_update":
            finals[u["toolCallId"]] = u
    assert {k: u["status"] for k, u in finals.items()} == {
        "v": "completed",
        "g": "completed",
        "e": "completed",
        "w": "completed",
        "b": "failed",
    }
    texts = {k: [c["content"]["text"] for c in u["content"] if c["type"] == "content"] for k, u in finals.items()}
    # The view's output from its line 2, not tool.finished's summary.
    assert "two" in texts["v"][0] and "three" in texts["v"][0] and "one" not in texts["v"][0]
    assert "timeout must be at most" in texts["b"][0]
    diffs = {k: [c for c in u["content"] if c["type"] == "diff"] for k, u in finals.items()}
    assert diffs["e"] == [{"type": "diff", "path": f"{root}/a.txt", "oldText": "two", "newText": "2"}]
    assert diffs["w"] == [{"type": "diff", "path": f"{root}/sub/b.txt", "oldText": None, "newText": "bee\n"}]
    assert diffs["v"] == diffs["b"] == []
    assert chunks(updates) == ["done"]


async def test_a_denied_call_fails_and_the_editors_answer_maps_onto_permission_grant(
    ws: Workspace, project: Path
) -> None:
    session_id = await ws.new_session()
    call = {"name": "bash", "arguments": {"command": "touch never"}, "id": "b"}
    reply = await ws.send(session_id, {"steps": [{"tool_calls": [call]}, {"chunks": ["told no"]}]})
    request = await ws.events.until(lambda e: e["type"] == "permission.request")
    params = permission_params(request["payload"], str(project))
    asked = RequestPermissionRequest.model_validate(params)
    assert asked.model_dump(mode="json", by_alias=True, exclude_unset=True) == params
    assert params["sessionId"] == session_id
    assert params["toolCall"] == {
        "toolCallId": "b",
        "title": "bash: touch never",
        "kind": "execute",
        "status": "pending",
        "locations": [],
        # The arguments as the tool took them, its defaults filled in.
        "rawInput": {"command": "touch never", "timeout": None},
    }
    assert [(o["optionId"], o["kind"]) for o in params["options"]] == [
        ("allow_once", "allow_once"),
        ("allow_always", "allow_always"),
        ("reject_once", "reject_once"),
        ("reject_always", "reject_always"),
    ]

    action = grant_action({"outcome": "selected", "optionId": "reject_once"})
    await ws.client.call(
        "permission.grant",
        {"workspace_id": ws.id, "request_id": request["payload"]["request_id"], "action": action},
    )
    rc = await ws.events.until_complete(reply["run_id"])
    assert rc["text"] == "told no"
    resolved = [e["payload"]["outcome"] for e in ws.events.of_type("permission.resolved")]
    assert resolved == ["deny"]
    assert not (project / "never").exists()

    updates = feed(SessionView(session_id, str(project)), session_id, run_events(ws, reply["run_id"]))
    finished = [u for u in updates if u["sessionUpdate"] == "tool_call_update"]
    assert finished and {u["status"] for u in finished} == {"failed"}


def test_each_answer_of_the_editor_is_its_grant_and_anything_else_denies() -> None:
    def selected(option_id: object) -> dict[str, object]:
        return {"outcome": "selected", "optionId": option_id}

    assert [grant_action(selected(o)) for o in ("allow_once", "allow_always", "reject_once", "reject_always")] == [
        "allow",
        "allow_session",
        "deny",
        "deny_session",
    ]
    assert grant_action({"outcome": "cancelled"}) == "deny"
    malformed: list[object] = [None, "allow_once", {}, {"outcome": "selected"}, [], selected("allow")]
    malformed += [selected(1), selected(None), {"outcome": "chosen", "optionId": "allow_once"}]
    for outcome in malformed:
        assert grant_action(outcome) == "deny", outcome


async def test_a_stored_session_replays_its_prompts_answers_and_calls_in_their_final_state(
    ws: Workspace, project: Path
) -> None:
    (project / "a.txt").write_text("old\n")
    session_id = await ws.new_session()
    calls = [
        {"name": "edit", "arguments": {"path": "a.txt", "old_string": "old", "new_string": "new"}, "id": "e"},
        {"name": "frobnicate", "arguments": {}, "id": "x"},
    ]
    script = {"steps": [{"chunks": ["editing"], "tool_calls": calls}, {"chunks": ["done"]}]}
    await streamed_run(ws, session_id, script, allow=["*"])
    await streamed_run(ws, session_id, {"chunks": ["again"]})
    messages = await ws.client.call("session.messages", {"workspace_id": ws.id, "session_id": session_id})

    updates = acp_checked(session_id, replay(messages, str(project)))
    root = str(project)
    assert [(u["sessionUpdate"], u.get("toolCallId")) for u in updates] == [
        ("user_message_chunk", None),
        ("agent_message_chunk", None),
        ("tool_call", "e"),
        ("tool_call", "x"),
        ("agent_message_chunk", None),
        ("user_message_chunk", None),
        ("agent_message_chunk", None),
    ]
    assert chunks(updates) == ["editing", "done", "again"]
    assert chunks(updates, "user_message_chunk") == [json.dumps(script), json.dumps({"chunks": ["again"]})]
    edit, unknown = updates[2], updates[3]
    assert (edit["kind"], edit["status"], edit["title"], edit["locations"]) == (
        "edit",
        "completed",
        "edit a.txt",
        [{"path": f"{root}/a.txt"}],
    )
    assert edit["content"][0] == {"type": "diff", "path": f"{root}/a.txt", "oldText": "old", "newText": "new"}
    assert (unknown["kind"], unknown["status"]) == ("other", "failed")
    assert "unknown tool" in unknown["content"][0]["content"]["text"]


async def test_a_load_during_a_run_goes_on_streaming_from_where_the_stored_text_stops(
    ws: Workspace, project: Path
) -> None:
    session_id = await ws.new_session()
    envelopes = await streamed_run(ws, session_id, {"chunks": ["Hel", "lo"]})
    messages = await ws.client.call("session.messages", {"workspace_id": ws.id, "session_id": session_id})
    # As if loaded while "Hel" was saved: the stored text so far, the message unfinished.
    messages[-1] = {**messages[-1], "text": "Hel", "finish_reason": None}
    view = SessionView(session_id, str(project))
    assert chunks(acp_checked(session_id, view.replay(messages))) == ["Hel"]
    live = [e for e in envelopes if e["type"] in ("message.delta", "message.updated", "run.complete")]
    assert chunks(feed(view, session_id, live)) == ["lo"]


async def test_stop_reasons_of_real_runs(ws: Workspace) -> None:
    session_id = await ws.new_session()
    reply = await ws.send(session_id, {"chunks": ["fine"]})
    assert stop_reason(await ws.events.until_complete(reply["run_id"])) == "end_turn"

    reply = await ws.send(session_id, {"error": "boom"})
    failed = await ws.events.until_complete(reply["run_id"])
    assert failed["error"] == "boom" and stop_reason(failed) is None

    reply = await ws.send(session_id, {"steps": [{"tool_calls": [{"name": "frobnicate"}]} for _ in range(51)]})
    limited = await ws.events.until_complete(reply["run_id"])
    assert limited["stop_reason"] == "step_limit" and limited["error"]
    assert stop_reason(limited) == "max_turn_requests"

    reply = await ws.send(session_id, {"hang": True})
    await ws.events.until(lambda e: e["type"] == "run.started" and e["payload"]["run_id"] == reply["run_id"])
    await ws.cancel(session_id)
    assert stop_reason(await ws.events.until_complete(reply["run_id"])) == "cancelled"

    # The scripted model neither refuses nor runs out of tokens; the providers' runs end so.
    ended = await ws.events.until_complete(reply["run_id"])
    assert stop_reason({**ended, "cancelled": False, "stop_reason": "refusal"}) == "refusal"
    assert stop_reason({**ended, "cancelled": False, "stop_reason": "length"}) == "max_tokens"


async def test_events_of_what_a_load_told_already_are_not_told_again(ws: Workspace, project: Path) -> None:
    session_id = await ws.new_session()
    envelopes = await streamed_run(ws, session_id, {"chunks": ["Hel", "lo"]})
    messages = await ws.client.call("session.messages", {"workspace_id": ws.id, "session_id": session_id})
    view = SessionView(session_id, str(project))
    assert chunks(acp_checked(session_id, view.replay(messages))) == ["Hello"]
    # Subscribed before the messages were read: the run's events come after the replay.
    assert feed(view, session_id, envelopes) == []


async def test_a_call_a_load_told_is_not_made_again_by_its_live_events(ws: Workspace, project: Path) -> None:
    (project / "a.txt").write_text("a\n")
    session_id = await ws.new_session()
    calls = [{"name": "view", "arguments": {"path": "a.txt"}, "id": "v"}]
    envelopes = await streamed_run(ws, session_id, {"steps": [{"tool_calls": calls}, {"chunks": ["done"]}]})
    messages = await ws.client.call("session.messages", {"workspace_id": ws.id, "session_id": session_id})
    tool_events = [e for e in envelopes if e["type"] in ("tool.started", "tool.finished")]
    assert [e["type"] for e in tool_events] == ["tool.started", "tool.finished"]

    # Loaded once the call was over: its late events do not set it running again.
    done = SessionView(session_id, str(project))
    [told] = [u for u in acp_checked(session_id, done.replay(messages)) if u["sessionUpdate"] == "tool_call"]
    assert told["status"] == "completed"
    assert feed(done, session_id, tool_events) == []

    # Loaded while it ran (no result stored yet): its start updates the call the replay made.
    running = SessionView(session_id, str(project))
    stored = [m for m in messages if m["role"] != "tool"]
    [told] = [u for u in acp_checked(session_id, running.replay(stored)) if u["sessionUpdate"] == "tool_call"]
    assert told["status"] == "in_progress"
    updates = feed(running, session_id, tool_events)
    assert [(u["sessionUpdate"], u["status"]) for u in updates] == [
        ("tool_call_update", "in_progress"),
        ("tool_call_update", "completed"),
    ]
