"""RunStream, sans-io: which text `agentctl run` prints for each event, and when the run is over."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from agentctl.runstream import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_RUN_ERROR,
    Outcome,
    RunFollower,
    RunStream,
    SubscriptionPosition,
)

SESSION = "ses_ours"
OTHER_SESSION = "ses_other"
RUN = "run_ours"
OTHER_RUN = "run_other"
MESSAGE = "msg_ours"

_seq = itertools.count(1)


def envelope(kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "subscription_id": "sub_1",
        "workspace_id": "ws_1",
        "seq": next(_seq),
        "type": kind,
        "payload": payload,
    }


def delta(text: str, offset: int, *, run_id: str = RUN, message_id: str = MESSAGE) -> dict[str, Any]:
    return envelope(
        "message.delta",
        {"session_id": SESSION, "run_id": run_id, "message_id": message_id, "offset": offset, "text": text},
    )


def updated(text: str, *, run_id: str = RUN, message_id: str = MESSAGE, role: str = "assistant") -> dict[str, Any]:
    return envelope(
        "message.updated",
        {
            "id": message_id,
            "session_id": SESSION,
            "role": role,
            "text": text,
            "run_id": run_id,
            "created_at": 0.0,
            "finish_reason": "stop",
        },
    )


def complete(
    text: str,
    *,
    run_id: str = RUN,
    message_id: str | None = MESSAGE,
    error: str | None = None,
    cancelled: bool = False,
    session_id: str = SESSION,
) -> dict[str, Any]:
    return envelope(
        "run.complete",
        {
            "session_id": session_id,
            "run_id": run_id,
            "message_id": message_id,
            "text": text,
            "error": error,
            "cancelled": cancelled,
        },
    )


def agent_error(**payload: Any) -> dict[str, Any]:
    payload.setdefault("message", "it broke")
    return envelope("agent.error", payload)


def feed(stream: RunStream, events: list[dict[str, Any]]) -> tuple[str, Outcome | None]:
    """Everything printed for `events`, and the outcome; no event may follow the one that ends the run."""
    printed = []
    outcome: Outcome | None = None
    for event in events:
        assert outcome is None, f"an event after the run ended: {event}"
        text, outcome = stream.handle(event)
        printed.append(text)
    return "".join(printed), outcome


# --- agent.error attribution --------------------------------------------------------


@pytest.mark.parametrize(
    "session",
    [SESSION, OTHER_SESSION, None],
    ids=["our_session", "other_session", "missing_session"],
)
def test_agent_error_with_foreign_run_id_is_ignored_whatever_its_session(session: str | None) -> None:
    stream = RunStream(SESSION, RUN)
    payload: dict[str, Any] = {"run_id": OTHER_RUN}
    if session is not None:
        payload["session_id"] = session
    assert stream.handle(agent_error(**payload)) == ("", None)
    # The run goes on: our own deltas still print, our RunComplete still ends it.
    assert feed(stream, [delta("still here", 0)])[0] == "still here"
    _, outcome = stream.handle(complete("still here"))
    assert outcome is not None and outcome.exit_code == EXIT_OK


@pytest.mark.parametrize(
    "session", [SESSION, OTHER_SESSION, None], ids=["our_session", "other_session", "missing_session"]
)
def test_agent_error_with_our_run_id_fails_the_run_at_its_run_complete(session: str | None) -> None:
    stream = RunStream(SESSION, RUN)
    payload: dict[str, Any] = {"run_id": RUN, "message": "model exploded"}
    if session is not None:
        payload["session_id"] = session
    # Not the end: `--json` prints the run.complete that follows.
    assert stream.handle(agent_error(**payload)) == ("", None)
    _, outcome = stream.handle(complete("", message_id=None))
    assert outcome is not None
    assert outcome.exit_code == EXIT_RUN_ERROR
    assert outcome.error is not None and "model exploded" in outcome.error


def test_the_run_completes_error_is_preferred_to_the_agent_errors() -> None:
    stream = RunStream(SESSION, RUN)
    stream.handle(agent_error(run_id=RUN, message="agent says"))
    _, outcome = stream.handle(complete("", error="the run says"))
    assert outcome is not None and outcome.exit_code == EXIT_RUN_ERROR and outcome.error == "the run says"


@pytest.mark.parametrize("run_id", ["absent", None, ""], ids=["run_id_absent", "run_id_null", "run_id_empty"])
def test_agent_error_without_run_id_for_another_session_is_ignored(run_id: str | None) -> None:
    stream = RunStream(SESSION, RUN)
    payload: dict[str, Any] = {"session_id": OTHER_SESSION}
    if run_id != "absent":
        payload["run_id"] = run_id
    assert stream.handle(agent_error(**payload)) == ("", None)


@pytest.mark.parametrize(
    "session",
    ["absent", None, ""],
    ids=["session_absent", "session_null", "session_empty"],
)
def test_agent_error_without_run_id_and_without_session_is_ignored(session: str | None) -> None:
    stream = RunStream(SESSION, RUN)
    payload: dict[str, Any] = {"run_id": None}
    if session != "absent":
        payload["session_id"] = session
    assert stream.handle(agent_error(**payload)) == ("", None)


@pytest.mark.parametrize("run_id", ["absent", None, ""], ids=["run_id_absent", "run_id_null", "run_id_empty"])
def test_agent_error_without_run_id_for_our_session_fails_the_run(run_id: str | None) -> None:
    stream = RunStream(SESSION, RUN)
    payload: dict[str, Any] = {"session_id": SESSION, "message": "lane died"}
    if run_id != "absent":
        payload["run_id"] = run_id
    assert stream.handle(agent_error(**payload)) == ("", None)
    _, outcome = stream.handle(complete("", message_id=None))
    assert outcome is not None and outcome.exit_code == EXIT_RUN_ERROR
    assert outcome.error is not None and "lane died" in outcome.error


def test_agent_error_attribution_is_also_exposed_as_agent_error_is_ours() -> None:
    stream = RunStream(SESSION, RUN)
    assert stream.agent_error_is_ours({"run_id": RUN, "session_id": OTHER_SESSION})
    assert not stream.agent_error_is_ours({"run_id": OTHER_RUN, "session_id": SESSION})
    assert stream.agent_error_is_ours({"session_id": SESSION})
    assert not stream.agent_error_is_ours({"session_id": OTHER_SESSION})
    assert not stream.agent_error_is_ours({})


# --- deltas --------------------------------------------------------------------------


def test_deltas_are_printed_in_order() -> None:
    stream = RunStream(SESSION, RUN)
    printed = [stream.handle(e)[0] for e in (delta("hello", 0), delta(" brave", 5), delta(" world", 11))]
    assert printed == ["hello", " brave", " world"]


def test_overlapping_delta_prints_only_its_new_part() -> None:
    stream = RunStream(SESSION, RUN)
    text, _ = feed(stream, [delta("hello", 0), delta("llo wor", 2), delta("world", 6)])
    assert text == "hello world"


def test_duplicate_delta_prints_nothing() -> None:
    stream = RunStream(SESSION, RUN)
    assert stream.handle(delta("hello", 0))[0] == "hello"
    assert stream.handle(delta("hello", 0)) == ("", None)
    assert stream.handle(delta("ll", 2)) == ("", None)
    assert stream.handle(delta(" there", 5))[0] == " there"


def test_delta_after_a_hole_prints_nothing_and_run_complete_fills_in_the_rest_once() -> None:
    stream = RunStream(SESSION, RUN)
    assert stream.handle(delta("one", 0))[0] == "one"
    # " two" (offset 3) was lost: nothing past the hole may print.
    assert stream.handle(delta(" three", 7)) == ("", None)
    assert stream.handle(delta(" four", 13)) == ("", None)
    assert stream.gaps == 2
    text, outcome = stream.handle(complete("one two three four"))
    assert text == " two three four\n"
    assert outcome is not None and outcome.exit_code == EXIT_OK
    # The whole answer was printed exactly once.
    assert "one" + text == "one two three four\n"


def test_hole_is_filled_by_message_updated_and_run_complete_adds_nothing_more() -> None:
    stream = RunStream(SESSION, RUN)
    printed, outcome = feed(
        stream,
        [
            delta("alpha", 0),
            delta(" gamma", 10),  # " beta" lost
            updated("alpha beta gamma\n"),
            complete("alpha beta gamma\n"),
        ],
    )
    assert printed == "alpha beta gamma\n"
    assert outcome is not None and outcome.exit_code == EXIT_OK


def test_message_updated_reconciles_printed_text_with_the_final_text() -> None:
    stream = RunStream(SESSION, RUN)
    assert stream.handle(delta("partial", 0))[0] == "partial"
    assert stream.handle(updated("partial and the rest")) == (" and the rest", None)
    # Nothing is printed twice.
    assert stream.handle(updated("partial and the rest")) == ("", None)


def test_message_updated_of_another_run_or_of_the_user_is_ignored() -> None:
    stream = RunStream(SESSION, RUN)
    assert stream.handle(updated("not ours", run_id=OTHER_RUN)) == ("", None)
    assert stream.handle(updated("the prompt", role="user", message_id="msg_user")) == ("", None)
    assert stream.handle(delta("mine", 0))[0] == "mine"


def test_deltas_of_other_runs_are_not_printed() -> None:
    stream = RunStream(SESSION, RUN)
    printed, outcome = feed(
        stream,
        [
            delta("theirs ", 0, run_id=OTHER_RUN, message_id="msg_theirs"),
            delta("mine", 0),
            delta("more of theirs", 7, run_id=OTHER_RUN, message_id="msg_theirs"),
            delta(" too", 4),
            complete("mine too"),
        ],
    )
    assert printed == "mine too\n"
    assert outcome is not None and outcome.exit_code == EXIT_OK


def test_delta_of_another_run_does_not_disturb_our_offsets() -> None:
    stream = RunStream(SESSION, RUN)
    stream.handle(delta("abc", 0))
    stream.handle(delta("a much longer foreign text", 0, run_id=OTHER_RUN, message_id="msg_theirs"))
    assert stream.handle(delta("def", 3))[0] == "def"
    assert stream.gaps == 0


def test_events_without_a_payload_map_are_ignored() -> None:
    stream = RunStream(SESSION, RUN)
    assert stream.handle({"type": "run.complete", "payload": None}) == ("", None)
    assert stream.handle({"type": "message.delta"}) == ("", None)
    assert stream.handle(envelope("session.updated", {"id": SESSION})) == ("", None)


def test_events_gap_is_counted() -> None:
    stream = RunStream(SESSION, RUN)
    assert stream.handle(envelope("events.gap", {"dropped": 3})) == ("", None)
    assert stream.gaps == 1


# --- run.complete ----------------------------------------------------------------------


def test_run_complete_for_another_run_is_ignored() -> None:
    stream = RunStream(SESSION, RUN)
    stream.handle(delta("mine", 0))
    assert stream.handle(complete("theirs", run_id=OTHER_RUN, message_id="msg_theirs")) == ("", None)
    assert stream.handle(complete("theirs", run_id=OTHER_RUN, error="boom")) == ("", None)
    text, outcome = stream.handle(complete("mine"))
    assert text == "\n"
    assert outcome is not None and outcome.exit_code == EXIT_OK


def test_run_complete_with_error_exits_1_with_the_message() -> None:
    stream = RunStream(SESSION, RUN)
    printed, outcome = feed(stream, [delta("half", 0), complete("half", error="the model fell over")])
    assert printed == "half\n"
    assert outcome is not None
    assert outcome.exit_code == EXIT_RUN_ERROR
    assert outcome.error == "the model fell over"
    assert not outcome.cancelled


def test_run_complete_with_error_and_no_message_prints_nothing() -> None:
    stream = RunStream(SESSION, RUN)
    text, outcome = stream.handle(complete("", message_id=None, error="unknown model 'x'"))
    assert text == ""
    assert outcome is not None and outcome.exit_code == EXIT_RUN_ERROR
    assert outcome.error == "unknown model 'x'"


def test_cancelled_run_exits_1_when_we_did_not_ask_to_cancel() -> None:
    stream = RunStream(SESSION, RUN)
    _, outcome = feed(stream, [delta("x", 0), complete("x", cancelled=True)])
    assert outcome is not None
    assert outcome.exit_code == EXIT_RUN_ERROR
    assert outcome.cancelled
    assert outcome.error is not None and "cancelled" in outcome.error


def test_cancelled_run_exits_130_when_cancel_was_requested() -> None:
    stream = RunStream(SESSION, RUN)
    stream.handle(delta("x", 0))
    stream.cancel_requested = True
    _, outcome = stream.handle(complete("x", cancelled=True))
    assert outcome is not None
    assert outcome.exit_code == EXIT_INTERRUPTED
    assert outcome.cancelled


def test_run_that_completed_despite_cancel_request_exits_0() -> None:
    stream = RunStream(SESSION, RUN)
    stream.cancel_requested = True
    _, outcome = stream.handle(complete("done"))
    assert outcome is not None and outcome.exit_code == EXIT_OK


def test_trailing_newline_is_added_when_the_text_does_not_end_with_one() -> None:
    stream = RunStream(SESSION, RUN)
    printed, _ = feed(stream, [delta("no newline", 0), complete("no newline")])
    assert printed == "no newline\n"


def test_no_extra_newline_when_the_text_ends_with_one() -> None:
    stream = RunStream(SESSION, RUN)
    printed, _ = feed(stream, [delta("line\n", 0), complete("line\n")])
    assert printed == "line\n"


def test_empty_answer_prints_nothing() -> None:
    stream = RunStream(SESSION, RUN)
    printed, outcome = feed(stream, [complete("")])
    assert printed == ""
    assert outcome is not None and outcome.exit_code == EXIT_OK


def test_run_complete_alone_prints_the_whole_text() -> None:
    # What `run.wait` answers after a lost connection goes through `complete` directly.
    stream = RunStream(SESSION, RUN)
    text, outcome = stream.complete(complete("all of it")["payload"])
    assert text == "all of it\n"
    assert outcome.exit_code == EXIT_OK


def test_complete_after_partial_stream_prints_only_the_rest() -> None:
    stream = RunStream(SESSION, RUN)
    stream.handle(delta("first half", 0))
    text, outcome = stream.complete(complete("first half, second half")["payload"])
    assert text == ", second half\n"
    assert outcome.exit_code == EXIT_OK


# --- attached mid-answer ------------------------------------------------------------------


def test_attached_deltas_past_the_saved_text_wait_and_fill_prints_them_once() -> None:
    stream = RunStream(SESSION, RUN)
    stream.keep_ahead = True
    assert stream.fill(MESSAGE, "one ") == "one "
    # Said after the save, before the subscription: never seen as deltas.
    assert feed(stream, [delta("three ", 8), delta("four", 14)]) == ("", None)
    assert stream.behind
    # The next save covers what was missed and more: nothing twice.
    assert stream.fill(MESSAGE, "one two three") == "two three four"
    assert not stream.behind
    assert feed(stream, [delta("four", 14), delta(" five", 18)]) == (" five", None)
    _, outcome = stream.handle(complete("one two three four five"))
    assert outcome is not None and outcome.exit_code == EXIT_OK


def test_deltas_past_a_hole_are_not_kept_unless_attached() -> None:
    stream = RunStream(SESSION, RUN)
    assert feed(stream, [delta("a", 0), delta("c", 2)]) == ("a", None)
    assert not stream.behind and stream.gaps == 1


# --- a program's stream, and RunFollower -----------------------------------------------


def test_a_programs_stream_gets_the_text_as_it_is_with_no_line_end_added() -> None:
    stream = RunStream(SESSION, RUN, end_line=False)
    assert feed(stream, [delta("no newline", 0)]) == ("no newline", None)
    text, outcome = stream.handle(complete("no newline, then the rest"))
    assert text == ", then the rest" and outcome is not None and outcome.exit_code == EXIT_OK


def permission(kind: str, request_id: str, run_id: str = RUN) -> dict[str, Any]:
    return envelope(kind, {"request_id": request_id, "session_id": SESSION, "run_id": run_id})


def test_the_follower_takes_its_subscriptions_events_only() -> None:
    follower = RunFollower(RunStream(SESSION, RUN), "sub_1", seq=5)
    elsewhere = {**delta("not ours", 0), "subscription_id": "sub_2"}
    assert follower.take("event", [elsewhere]) == (None, "", None)
    assert follower.take("not_an_event", [delta("x", 0)]) == (None, "", None)
    event, text, outcome = follower.take("event", [delta("ours", 0)])
    assert event is not None and text == "ours" and outcome is None
    assert follower.last_seq == event["seq"] and follower.complete is None
    done = complete("ours")
    assert follower.take_event(done)[2] is not None and follower.complete == done["payload"]


def test_the_follower_does_not_resume_from_a_gaps_seq() -> None:
    follower = RunFollower(RunStream(SESSION, RUN), "sub_1", seq=5)
    follower.take_event({**envelope("events.gap", {"reason": "too_old"}), "seq": 10**9})
    assert follower.last_seq == 5


def test_each_permission_request_of_our_run_is_answered_once_and_others_are_not_ours() -> None:
    follower = RunFollower(RunStream(SESSION, RUN), "sub_1")
    first = permission("permission.request", "req_1")
    assert follower.permission_request(first) == first["payload"]
    # A resubscribe hands a pending request out again.
    assert follower.permission_request(permission("permission.request", "req_1")) is None
    assert follower.permission_request(permission("permission.request", "req_2", run_id=OTHER_RUN)) is None
    assert follower.permission_request(delta("x", 0)) is None and follower.permission_request(None) is None
    assert follower.permission_resolved(permission("permission.resolved", "req_1")) == "req_1"
    assert follower.permission_resolved(permission("permission.resolved", "req_2", run_id=OTHER_RUN)) is None


def test_a_subscription_ends_at_a_live_workspace_closed_only() -> None:
    position = SubscriptionPosition({"subscription_id": "sub_1", "seq": 50, "replayed": 2})
    position.note({**envelope("events.gap", {"reason": "lost"}), "seq": 10})
    assert position.gaps == 1 and position.last_seq == 50
    # Replayed from an earlier opening of the workspace: the subscription goes on.
    position.note({**envelope("workspace.closed", {"workspace_id": "ws_1", "reason": "idle"}), "seq": 20})
    assert not position.over and position.last_seq == 50
    position.note({**envelope("workspace.closed", {"workspace_id": "ws_1", "reason": "shutdown"}), "seq": 51})
    assert position.over and position.last_seq == 51
