"""The Ledger's checks on hand-made event sequences: each kind of broken promise is told, and a kept one is not.

The Ledger (bench/_stress/_ledger.py) is what the lifecycle schedule and the
soak trust to see a broken promise; a check of it that never fires would pass
every schedule. Each test here breaks the promise one way.
"""

from __future__ import annotations

from typing import Any

import trio
from support import WAIT, Workspace

from bench._stress._ledger import Ledger

WS = "ws-1"


def event(seq: int, kind: str, **payload: Any) -> dict[str, Any]:
    return {"workspace_id": WS, "seq": seq, "type": kind, "payload": payload}


def complete(seq: int, run_id: str, *, session_id: str = "s1", error: str | None = None, **rest: Any) -> dict[str, Any]:
    fields = {"session_id": session_id, "error": error, "cancelled": False, **rest}
    return event(seq, "run.complete", run_id=run_id, **fields)


def started(seq: int, run_id: str, session_id: str = "s1") -> dict[str, Any]:
    return event(seq, "run.started", run_id=run_id, session_id=session_id)


def fed(*events: dict[str, Any], accepted: tuple[str, ...] = ()) -> Ledger:
    ledger = Ledger(how_to_reproduce="seed 5")
    for run_id in accepted:
        ledger.accepted(WS, run_id, session_id="s1")
    for envelope in events:
        ledger.observe(envelope)
    return ledger


def test_a_kept_promise_has_no_violation() -> None:
    ledger = fed(
        started(1, "r1"),
        event(2, "message.delta", run_id="r1", text="hi"),
        complete(3, "r1"),
        started(4, "r2"),
        event(5, "permission.request", request_id="q1", run_id="r2"),
        event(6, "permission.resolved", request_id="q1", run_id="r2", outcome="allow"),
        complete(7, "r2", error="boom"),
        event(8, "agent.error", run_id="r2", session_id="s1", message="boom"),
        accepted=("r1", "r2"),
    )
    assert ledger.violations() == []
    assert ledger.counts["run_completes"] == 2


def test_a_second_run_complete_is_told_with_how_to_reproduce() -> None:
    [violation] = fed(started(1, "r1"), complete(2, "r1"), complete(3, "r1"), accepted=("r1",)).violations()
    assert "second run.complete" in violation and "seq 2 and 3" in violation
    assert violation.endswith("(seed 5)")


def test_the_same_event_seen_twice_counts_once() -> None:
    # Live on an old subscription and replayed on a new one: the same (workspace, seq).
    ledger = fed(started(1, "r1"), complete(2, "r1"), complete(2, "r1"), accepted=("r1",))
    assert ledger.violations() == []
    assert ledger.counts["events"] == 2


def test_an_event_of_a_run_after_its_run_complete_is_told() -> None:
    [violation] = fed(
        started(1, "r1"), complete(2, "r1"), event(3, "message.delta", run_id="r1"), accepted=("r1",)
    ).violations()
    assert "message.delta (seq 3) after its run.complete (seq 2)" in violation


def test_an_event_published_after_the_run_complete_but_seen_before_it_is_told() -> None:
    # Two subscriptions' events can arrive interleaved: the seq decides.
    [violation] = fed(
        started(1, "r1"), event(5, "message.delta", run_id="r1"), complete(4, "r1"), accepted=("r1",)
    ).violations()
    assert "seq 5" in violation and "after its run.complete (seq 4)" in violation


def test_an_agent_error_after_the_run_complete_must_carry_its_message() -> None:
    kept = fed(started(1, "r1"), complete(2, "r1", error="boom"), event(3, "agent.error", run_id="r1", message="boom"))
    assert kept.violations() == []
    [violation] = fed(
        started(1, "r1"), complete(2, "r1", error="boom"), event(3, "agent.error", run_id="r1", message="other")
    ).violations()
    assert "'other'" in violation and "'boom'" in violation


def test_two_runs_of_one_session_at_once_are_told() -> None:
    [violation] = fed(started(1, "r1"), started(2, "r2"), complete(3, "r1"), complete(4, "r2")).violations()
    assert "run r2 started (seq 2) while run r1 of the same session s1 ran (seq 1 to 3)" in violation


def test_runs_of_other_sessions_may_overlap() -> None:
    ledger = fed(started(1, "r1", "s1"), started(2, "r2", "s2"), complete(3, "r1"), complete(4, "r2", session_id="s2"))
    assert ledger.violations() == []


def test_queued_runs_started_out_of_order_are_told() -> None:
    [violation] = fed(
        started(1, "r2"), complete(2, "r2"), started(3, "r1"), complete(4, "r1"), accepted=("r1", "r2")
    ).violations()
    assert "run r1 of session s1 was accepted before run r2 but started after it" in violation


def test_a_run_complete_that_is_cancelled_and_failed_is_told() -> None:
    [violation] = fed(
        started(1, "r1"), event(2, "run.complete", run_id="r1", session_id="s1", cancelled=True, error="x")
    ).violations()
    assert "cancelled and has an error" in violation


def test_a_permission_request_resolved_twice_is_told() -> None:
    [violation] = fed(
        event(1, "permission.request", request_id="q1", run_id="r1"),
        event(2, "permission.resolved", request_id="q1", run_id="r1", outcome="allow"),
        event(3, "permission.resolved", request_id="q1", run_id="r1", outcome="deny"),
    ).violations()
    assert "resolved 2 times" in violation


def test_a_gap_of_dropped_lossy_events_is_counted_and_a_replay_gap_is_told() -> None:
    ledger = fed(event(1, "events.gap", dropped=7))
    assert ledger.violations() == [] and ledger.counts["observer_dropped"] == 7
    [violation] = fed(event(1, "events.gap", lost_through=4)).violations()
    assert "opens with a gap" in violation


def test_a_run_complete_of_a_run_never_accepted_is_only_counted() -> None:
    ledger = fed(started(1, "elsewhere"), complete(2, "elsewhere"))
    assert ledger.violations() == []
    assert ledger.counts["run_completes_not_accepted_here"] == 1


# --- settle(): against a real daemon -------------------------------------------------------------------------


async def test_settle_tells_an_accepted_run_without_run_complete_and_an_unresolved_request(ws: Workspace) -> None:
    ledger = fed(event(1, "permission.request", request_id="q1", run_id="r-x"), accepted=("never",))
    with trio.fail_after(WAIT):
        violations = await ledger.settle(ws.client, 0.2)
    assert any("accepted run never" in v and "has no run.complete" in v for v in violations), violations
    assert any("permission request q1 of run r-x was never resolved" in v for v in violations), violations


async def test_settle_tells_a_run_complete_that_run_wait_disagrees_with(ws: Workspace) -> None:
    session_id = await ws.new_session()
    reply = await ws.send(session_id, "the real text")
    real = await ws.events.until_complete(reply["run_id"])
    ledger = Ledger()
    ledger.accepted(ws.id, reply["run_id"], session_id=session_id)
    forged = {**real, "text": "another text"}
    ledger.observe({"workspace_id": ws.id, "seq": 10**6, "type": "run.complete", "payload": forged})
    with trio.fail_after(WAIT):
        [violation] = await ledger.settle(ws.client, WAIT)
    assert "run.wait disagrees" in violation and "'the real text', 'another text'" in violation


async def test_settle_of_a_kept_promise_finds_nothing(ws: Workspace) -> None:
    session_id = await ws.new_session()
    reply = await ws.send(session_id, "fine")
    real = await ws.events.until_complete(reply["run_id"])
    ledger = Ledger()
    ledger.accepted(ws.id, reply["run_id"], session_id=session_id)
    ledger.observe({"workspace_id": ws.id, "seq": 10**6, "type": "run.complete", "payload": real})
    with trio.fail_after(WAIT):
        assert await ledger.settle(ws.client, WAIT) == []
