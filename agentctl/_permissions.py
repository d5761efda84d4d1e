"""`agentctl run`'s answers to its own run's permission requests: asked on the terminal, else denied.

On a terminal (stdin and stderr both are) a request is asked about on stderr,
one at a time, and the answer is read from the terminal a line at a time,
between the loop's reads of the socket, so the run's text keeps streaming
around it. Without one, each request is denied and the denial said on stderr.
A request that ends elsewhere (another client's answer, the timeout, a
cancel) closes its question. Requests of other runs are not ours to answer.
"""

from __future__ import annotations

import os
import select
from collections import deque

from agentd import event_types as events

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from agentctl.blocking import BlockingClient

__all__ = ["Answers", "parse_answer"]

_QUESTION = "  allow [o]nce, for the [s]ession, or [d]eny? "
_AGAIN = "  answer o (once), s (for the session) or d (deny): "
_ANSWERS = {
    "o": "allow",
    "once": "allow",
    "y": "allow",
    "yes": "allow",
    "allow": "allow",
    "s": "allow_session",
    "session": "allow_session",
    "d": "deny",
    "deny": "deny",
    "n": "deny",
    "no": "deny",
}


def parse_answer(line: str) -> str | None:
    """The action a typed line means, or None when it means none of them."""
    return _ANSWERS.get(line.strip().lower())


class Answers:
    def __init__(
        self,
        run_id: str,
        *,
        ask: bool,
        write_err: Callable[[str], None],
        mid_line: Callable[[], bool],
        open_terminal: Callable[[], int] | None = None,
    ) -> None:
        self.run_id = run_id
        # Whether a person can be asked (stdin and stderr are terminals); else every request is denied.
        self.ask = ask
        self._write_err = write_err
        # Whether stdout's text stops mid-line on the same terminal: the question goes on a line of its own.
        self._mid_line = mid_line
        self._open_terminal = open_terminal or _open_tty
        self._tty: int | None = None
        self._typed = b""
        self._seen: set[str] = set()
        self._waiting: deque[dict[str, Any]] = deque()
        # The request being asked about now.
        self._asking: dict[str, Any] | None = None
        # What we answered, by request id: a resolution that says otherwise is told.
        self._answered: dict[str, str] = {}

    @property
    def asking(self) -> str | None:
        """The request id being asked about now, if any."""
        return None if self._asking is None else str(self._asking["request_id"])

    def handle(self, client: BlockingClient, workspace_id: str, event: dict[str, Any]) -> None:
        """Take one event of our run."""
        kind = event.get("type")
        payload = event.get("payload")
        if not isinstance(payload, dict) or payload.get("run_id") != self.run_id:
            return
        request_id = payload.get("request_id")
        if not isinstance(request_id, str):
            return
        if kind == events.PERMISSION_REQUEST:
            # A resubscribe gives pending requests again: each is asked about once,
            # and one still pending after our answer (lost with the connection) is answered again.
            if request_id in self._seen:
                answered = self._answered.get(request_id)
                if answered is not None:
                    self._grant(client, workspace_id, request_id, answered)
                return
            self._seen.add(request_id)
            if self.ask:
                self._waiting.append(payload)
                self._next_question()
            else:
                self._grant(client, workspace_id, request_id, "deny")
                self._write_err(
                    f"agentctl run: denied {payload.get('description')} (no terminal to ask on;"
                    f" --allow {payload.get('tool')}[:PREFIX] or --yolo allows it)\n"
                )
        elif kind == events.PERMISSION_RESOLVED:
            self._seen.add(request_id)
            self._resolved(request_id, payload)

    def poll(self, client: BlockingClient, workspace_id: str) -> None:
        """Read what was typed since the last call, without waiting; answer when a line is complete."""
        if self._asking is None or self._tty is None:
            return
        while select.select([self._tty], [], [], 0)[0]:
            try:
                chunk = os.read(self._tty, 1024)
            except OSError:
                chunk = b""
            if not chunk:
                # End of input (Ctrl-D): no answer is a no.
                self._answer(client, workspace_id, "deny")
                return
            self._typed += chunk
            while b"\n" in self._typed and self._asking is not None:
                line, _, self._typed = self._typed.partition(b"\n")
                action = parse_answer(line.decode("utf-8", "replace"))
                if action is None:
                    self._write_err(_AGAIN)
                else:
                    self._answer(client, workspace_id, action)

    def close(self) -> None:
        if self._tty is not None:
            os.close(self._tty)
            self._tty = None

    # --- inside

    def _next_question(self) -> None:
        if self._asking is not None or not self._waiting:
            return
        if self._tty is None:
            try:
                self._tty = self._open_terminal()
            except OSError:
                self.ask = False
                self._write_err("agentctl run: cannot read the terminal; denying what the run asks\n")
                return
        request = self._asking = self._waiting.popleft()
        self._typed = b""
        lead = "\n" if self._mid_line() else ""
        self._write_err(f"{lead}agentctl run: permission needed: {request.get('description')}\n{_QUESTION}")

    def _answer(self, client: BlockingClient, workspace_id: str, action: str) -> None:
        request = self._asking
        assert request is not None
        self._asking = None
        self._grant(client, workspace_id, str(request["request_id"]), action)
        self._next_question()

    def _grant(self, client: BlockingClient, workspace_id: str, request_id: str, action: str) -> None:
        self._answered[request_id] = action
        params = {"workspace_id": workspace_id, "request_id": request_id, "action": action}
        # Its reply adds nothing: the request's permission.resolved says how it ended.
        client.request("permission.grant", params, want_reply=False)

    def _resolved(self, request_id: str, payload: dict[str, Any]) -> None:
        outcome = payload.get("outcome")
        ours = self._answered.pop(request_id, None)
        if self._asking is not None and self._asking.get("request_id") == request_id:
            self._asking = None
            self._discard_typed()
            how = {"timeout": "nobody answered in time", "cancelled": "the run was cancelled"}.get(str(outcome))
            said = how or f"answered elsewhere: {outcome} (by {payload.get('by')})"
            self._write_err(f"\nagentctl run: {said}\n")
            self._next_question()
        elif ours is not None and outcome != ours and outcome in ("timeout", "cancelled"):
            self._write_err(f"agentctl run: the request had ended before the answer ({outcome})\n")
        else:
            self._waiting = deque(r for r in self._waiting if r.get("request_id") != request_id)

    def _discard_typed(self) -> None:
        """Drop a half-typed answer to a question that is gone: it must not answer the next one."""
        self._typed = b""
        if self._tty is not None:
            import termios

            try:
                termios.tcflush(self._tty, termios.TCIFLUSH)
            except termios.error:
                pass


def _open_tty() -> int:
    return os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
