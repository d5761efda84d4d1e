"""A workspace's board on a real broker: decided at once when a rule says so, else asked; resolved once."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from support import WAIT

from agentd.errors import InvalidRequest, NotFound
from agentd.permissions import PermissionAsk, Permissions, PermissionSettings
from agentd.pubsub import Broker, DropStats, Subscriber
from agentd.shutdown import Shutdown


class Board:
    """A board, its broker, one subscriber reading what it publishes, and settings a test can change."""

    def __init__(self) -> None:
        self.settings = PermissionSettings()
        self.broker = Broker("ws1", DropStats(), must_deliver_timeout=WAIT)
        self.sub: Subscriber = self.broker.subscribe("sub1", 64, lambda _sub: None)
        self.permissions = Permissions(self.broker, Shutdown(), lambda: self.settings)

    async def next_event(self) -> tuple[str, dict[str, Any]]:
        with trio.fail_after(WAIT):
            event = await self.sub.receive_channel.receive()
        return event.type, event.payload

    async def request(self) -> dict[str, Any]:
        kind, payload = await self.next_event()
        assert kind == "permission.request"
        return payload

    async def resolved(self) -> dict[str, Any]:
        kind, payload = await self.next_event()
        assert kind == "permission.resolved"
        return payload


def ask(
    tool: str = "bash",
    subject: str | None = "rm -rf build",
    *,
    kind: str = "execute",
    session_id: str = "ses_1",
    run_id: str = "run_1",
    run_rules: tuple[str, ...] = (),
) -> PermissionAsk:
    return PermissionAsk(
        session_id=session_id,
        run_id=run_id,
        call_id=f"call_{tool}",
        tool=tool,
        kind=kind,
        subject=subject,
        description=f"{tool}: {subject}",
        params={"command": subject},
        run_rules=run_rules,
    )


class Asking:
    """An authorize call running in the background, as a run's tool call would."""

    def __init__(self) -> None:
        self.outcome: str | None = None
        self.cancelled = False
        self.done = trio.Event()
        self.scope = trio.CancelScope()

    async def run(self, permissions: Permissions, question: PermissionAsk) -> None:
        try:
            with self.scope:
                self.outcome = await permissions.authorize(question)
            self.cancelled = self.scope.cancelled_caught
        finally:
            self.done.set()

    async def wait(self) -> str | None:
        with trio.fail_after(WAIT):
            await self.done.wait()
        return self.outcome


async def asking(nursery: trio.Nursery, board: Board, question: PermissionAsk) -> tuple[Asking, dict[str, Any]]:
    """Start asking, and the request it published."""
    call = Asking()
    nursery.start_soon(call.run, board.permissions, question)
    return call, await board.request()


@pytest.mark.parametrize(
    ("rules", "question"),
    [
        ((), ask("view", None, kind="read")),
        (("bash:git status",), ask(subject="git status --short")),
        (("edit",), ask("edit", None, kind="edit")),
        (("*",), ask("write", None, kind="edit")),
    ],
)
async def test_reads_and_configured_rules_allow_without_asking(rules: tuple[str, ...], question: PermissionAsk) -> None:
    board = Board()
    board.settings = PermissionSettings(allow=rules)
    assert await board.permissions.authorize(question) == "allow"
    assert board.broker.seq == 0


@pytest.mark.parametrize("rules", [("*",), ("bash:rm",), ("bash",)])
async def test_the_runs_own_rules_allow_without_asking(rules: tuple[str, ...]) -> None:
    board = Board()
    assert await board.permissions.authorize(ask(run_rules=rules)) == "allow"
    assert board.broker.seq == 0


async def test_a_call_no_rule_allows_is_asked_about_and_the_answer_decides() -> None:
    board = Board()
    board.settings = PermissionSettings(allow=("bash:git status",))
    async with trio.open_nursery() as nursery:
        call, request = await asking(nursery, board, ask(subject="git status; rm -rf ~", run_rules=("bash:ls",)))
        assert request["tool"] == "bash"
        assert request["description"] == "bash: git status; rm -rf ~"
        assert request["params"] == {"command": "git status; rm -rf ~"}
        assert (request["session_id"], request["run_id"], request["call_id"]) == ("ses_1", "run_1", "call_bash")
        assert [r.request_id for r in board.permissions.pending()] == [request["request_id"]]
        assert board.permissions.grant(request["request_id"], "deny", "nvim") is True
        assert await call.wait() == "deny"
    assert await board.resolved() == {
        "request_id": request["request_id"],
        "session_id": "ses_1",
        "run_id": "run_1",
        "outcome": "deny",
        "by": "nvim",
    }
    assert board.permissions.pending() == []


async def test_the_first_answer_wins_and_later_ones_are_told_so() -> None:
    board = Board()
    async with trio.open_nursery() as nursery:
        call, request = await asking(nursery, board, ask())
        rid = request["request_id"]
        assert board.permissions.grant(rid, "allow", "one") is True
        assert board.permissions.grant(rid, "deny", "two") is False
        assert await call.wait() == "allow"
    assert (await board.resolved())["by"] == "one"
    # Still false once it is long over.
    assert board.permissions.grant(rid, "deny_session", "two") is False
    assert board.permissions.decide(ask()) is None


async def test_allow_session_allows_that_tool_in_that_session_from_then_on() -> None:
    board = Board()
    async with trio.open_nursery() as nursery:
        call, request = await asking(nursery, board, ask())
        board.permissions.grant(request["request_id"], "allow_session", "agentctl")
        assert await call.wait() == "allow_session"
    await board.resolved()
    seq = board.broker.seq
    assert await board.permissions.authorize(ask(subject="anything at all", run_id="run_2")) == "allow_session"
    assert board.broker.seq == seq
    assert board.permissions.decide(ask("write", None, kind="edit")) is None
    assert board.permissions.decide(ask(session_id="ses_2")) is None


async def test_deny_session_denies_that_tool_in_that_session_over_every_rule() -> None:
    board = Board()
    async with trio.open_nursery() as nursery:
        call, request = await asking(nursery, board, ask())
        board.permissions.grant(request["request_id"], "deny_session", "agentctl")
        assert await call.wait() == "deny_session"
    await board.resolved()
    board.settings = PermissionSettings(allow=("bash",))
    assert await board.permissions.authorize(ask(run_rules=("*",))) == "deny_session"
    assert board.permissions.decide(ask(session_id="ses_2")) == "allow"


async def test_a_request_nobody_answers_times_out() -> None:
    board = Board()
    board.settings = PermissionSettings(timeout=0.05)
    async with trio.open_nursery() as nursery:
        call, request = await asking(nursery, board, ask())
        assert await call.wait() == "timeout"
    assert request["expires_at"] > 0
    resolved = await board.resolved()
    assert (resolved["outcome"], resolved["by"]) == ("timeout", "timeout")
    assert board.permissions.grant(request["request_id"], "allow", "late") is False


async def test_a_cancelled_wait_resolves_as_cancelled_and_raises() -> None:
    board = Board()
    async with trio.open_nursery() as nursery:
        call, request = await asking(nursery, board, ask())
        call.scope.cancel()
        assert await call.wait() is None
    assert call.cancelled
    resolved = await board.resolved()
    assert (resolved["request_id"], resolved["outcome"], resolved["by"]) == (request["request_id"], "cancelled", "run")
    assert board.permissions.pending() == []


async def test_cancel_run_resolves_only_that_runs_requests() -> None:
    board = Board()
    async with trio.open_nursery() as nursery:
        mine, _ = await asking(nursery, board, ask(run_id="run_1"))
        other, theirs = await asking(nursery, board, ask(run_id="run_2", session_id="ses_2"))
        board.permissions.cancel_run("run_1")
        assert await mine.wait() == "cancelled"
        # A waiting request blocks only its own run: the other still waits, and can be answered.
        assert [r.run_id for r in board.permissions.pending()] == ["run_2"]
        board.permissions.grant(theirs["request_id"], "allow", "x")
        assert await other.wait() == "allow"


async def test_closing_cancels_every_pending_request_and_asks_no_more() -> None:
    board = Board()
    async with trio.open_nursery() as nursery:
        call, _ = await asking(nursery, board, ask())
        board.permissions.close()
        assert await call.wait() == "cancelled"
    assert (await board.resolved())["outcome"] == "cancelled"
    seq = board.broker.seq
    assert await board.permissions.authorize(ask()) == "cancelled"
    assert board.broker.seq == seq


async def test_pending_events_are_those_published_by_then_with_their_seq() -> None:
    board = Board()
    async with trio.open_nursery() as nursery:
        first, request = await asking(nursery, board, ask())
        through = board.broker.seq
        second, _ = await asking(nursery, board, ask(run_id="run_2", session_id="ses_2"))
        events = board.permissions.pending_events(through)
        assert [(e.seq, e.type, e.payload["request_id"]) for e in events] == [
            (through, "permission.request", request["request_id"])
        ]
        assert len(board.permissions.pending_events(board.broker.seq)) == 2
        board.permissions.close()
        await first.wait()
        await second.wait()
    assert board.permissions.pending_events(board.broker.seq) == []


async def test_an_unknown_action_or_request_is_refused_by_name() -> None:
    board = Board()
    with pytest.raises(InvalidRequest, match="action: must be one of allow, allow_session, deny, deny_session, not"):
        board.permissions.grant("perm_x", "yes", "c")
    with pytest.raises(NotFound, match="request_id: no permission request 'perm_x' in this workspace"):
        board.permissions.grant("perm_x", "allow", "c")
