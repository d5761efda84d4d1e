"""agentctl's answers to its run's permission requests, on the blocking client over a real socket pair.

The terminal is a pipe here (its read end is what agentctl reads answers
from); the daemon's side of the socket is read by the test, which sees each
`permission.grant` as agentctl wrote it.
"""

from __future__ import annotations

import os
import select
import socket
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest

from agentctl._permissions import Answers, parse_answer
from agentctl.blocking import BlockingClient

RUN = "run_ours"
WS = "ws_1"


class Harness:
    def __init__(self, *, ask: bool, mid_line: bool = False) -> None:
        ours, self.daemon_side = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.client = BlockingClient(ours)
        self.terminal_read, self.terminal = os.pipe()
        self.err: list[str] = []
        self.answers = Answers(
            RUN,
            ask=ask,
            write_err=self.err.append,
            mid_line=lambda: mid_line,
            open_terminal=lambda: self.terminal_read,
        )
        self._unpacker = msgpack.Unpacker(raw=False)

    def close(self) -> None:
        self.answers.close()
        self.client.close()
        self.daemon_side.close()
        os.close(self.terminal)

    def event(self, kind: str, **payload: Any) -> None:
        self.answers.handle(self.client, WS, {"type": kind, "payload": payload})

    def request(self, request_id: str, run_id: str = RUN, command: str = "rm -rf build") -> None:
        self.event(
            "permission.request",
            request_id=request_id,
            run_id=run_id,
            tool="bash",
            description=f"bash: {command}",
            params={"command": command},
        )

    def resolved(self, request_id: str, outcome: str, by: str) -> None:
        self.event("permission.resolved", request_id=request_id, run_id=RUN, outcome=outcome, by=by)

    def type(self, text: str) -> None:
        os.write(self.terminal, text.encode())
        self.answers.poll(self.client, WS)

    def grants(self) -> list[tuple[str, str]]:
        """The (request_id, action) of every permission.grant written so far."""
        found = []
        while select.select([self.daemon_side], [], [], 0)[0]:
            data = self.daemon_side.recv(65536)
            if not data:
                break
            self._unpacker.feed(data)
        for message in self._unpacker:
            method, params = message[-2], message[-1]
            assert method == "permission.grant"
            assert params[0]["workspace_id"] == WS
            found.append((params[0]["request_id"], params[0]["action"]))
        return found


@pytest.fixture
def terminal() -> Iterator[Harness]:
    harness = Harness(ask=True)
    yield harness
    harness.close()


@pytest.fixture
def no_terminal() -> Iterator[Harness]:
    harness = Harness(ask=False)
    yield harness
    harness.close()


@pytest.mark.parametrize(
    ("line", "action"),
    [("o", "allow"), (" Once\n", "allow"), ("y", "allow"), ("s", "allow_session"), ("d", "deny"), ("no", "deny")],
)
def test_typed_answers_mean_their_action(line: str, action: str) -> None:
    assert parse_answer(line) == action


@pytest.mark.parametrize("line", ["", "maybe", "always", "x"])
def test_anything_else_means_no_answer_yet(line: str) -> None:
    assert parse_answer(line) is None


def test_without_a_terminal_each_request_is_denied_and_said(no_terminal: Harness) -> None:
    no_terminal.request("perm_1")
    assert no_terminal.grants() == [("perm_1", "deny")]
    assert no_terminal.err == [
        "agentctl run: denied bash: rm -rf build (no terminal to ask on; --allow bash[:PREFIX] or --yolo allows it)\n"
    ]


def test_requests_of_other_runs_are_left_alone(no_terminal: Harness, terminal: Harness) -> None:
    for harness in (no_terminal, terminal):
        harness.request("perm_theirs", run_id="run_theirs")
        assert harness.grants() == []
        assert harness.err == []
        assert harness.answers.asking is None


def test_a_request_given_again_is_answered_once_more_only_with_the_same_answer(no_terminal: Harness) -> None:
    no_terminal.request("perm_1")
    no_terminal.request("perm_1")  # a resubscribe delivers what is still pending
    assert no_terminal.grants() == [("perm_1", "deny"), ("perm_1", "deny")]
    assert len(no_terminal.err) == 1
    no_terminal.resolved("perm_1", "deny", "agentctl")
    no_terminal.request("perm_1")
    assert no_terminal.grants() == []


def test_on_a_terminal_it_asks_and_sends_the_answer(terminal: Harness) -> None:
    terminal.request("perm_1")
    assert terminal.err == [
        "agentctl run: permission needed: bash: rm -rf build\n  allow [o]nce, for the [s]ession, or [d]eny? "
    ]
    assert terminal.answers.asking == "perm_1"
    terminal.type("s")  # no answer until the line ends
    assert terminal.grants() == []
    terminal.type("\n")
    assert terminal.grants() == [("perm_1", "allow_session")]
    assert terminal.answers.asking is None


def test_a_line_that_is_no_answer_asks_again(terminal: Harness) -> None:
    terminal.request("perm_1")
    terminal.type("perhaps\n")
    assert terminal.err[-1] == "  answer o (once), s (for the session) or d (deny): "
    assert terminal.grants() == []
    terminal.type("d\n")
    assert terminal.grants() == [("perm_1", "deny")]


def test_the_question_starts_on_its_own_line_when_the_text_is_mid_line() -> None:
    harness = Harness(ask=True, mid_line=True)
    try:
        harness.request("perm_1")
        assert harness.err[0].startswith("\nagentctl run: permission needed: ")
    finally:
        harness.close()


def test_requests_are_asked_one_at_a_time_in_order(terminal: Harness) -> None:
    terminal.request("perm_1", command="first")
    terminal.request("perm_2", command="second")
    assert len(terminal.err) == 1
    terminal.type("o\n")
    assert terminal.answers.asking == "perm_2"
    assert "bash: second" in terminal.err[-1]
    terminal.type("d\n")
    assert terminal.grants() == [("perm_1", "allow"), ("perm_2", "deny")]


def test_a_request_resolved_elsewhere_closes_its_question(terminal: Harness) -> None:
    terminal.request("perm_1")
    terminal.resolved("perm_1", "allow", "nvim")
    assert terminal.answers.asking is None
    assert terminal.err[-1] == "\nagentctl run: answered elsewhere: allow (by nvim)\n"
    # What was typed for it answers nothing.
    terminal.type("d\n")
    assert terminal.grants() == []


def test_a_question_nobody_answered_in_time_says_so(terminal: Harness) -> None:
    terminal.request("perm_1")
    terminal.resolved("perm_1", "timeout", "timeout")
    assert terminal.err[-1] == "\nagentctl run: nobody answered in time\n"


def test_a_waiting_question_resolved_elsewhere_is_never_asked(terminal: Harness) -> None:
    terminal.request("perm_1")
    terminal.request("perm_2")
    terminal.resolved("perm_2", "deny", "nvim")
    terminal.type("o\n")
    assert terminal.answers.asking is None
    assert terminal.grants() == [("perm_1", "allow")]


def test_end_of_input_on_the_terminal_is_a_denial(terminal: Harness) -> None:
    terminal.request("perm_1")
    os.close(terminal.terminal)
    terminal.terminal = os.open(os.devnull, os.O_WRONLY)  # closed once, at teardown
    terminal.answers.poll(terminal.client, WS)
    assert terminal.grants() == [("perm_1", "deny")]
