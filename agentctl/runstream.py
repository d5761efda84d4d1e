"""What `agentctl run` makes of its events: which text to print, and when it is over.

No I/O here: `RunStream.handle` takes one event envelope and returns the text to
write (if any) and the outcome (once the run is over), so every rule is a unit
test.
"""

from __future__ import annotations

from agentd import event_types as events

# typing costs milliseconds to import, and agentctl's start-up is measured in them;
# annotations are strings here, so only type checkers need these names.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_LOST",
    "EXIT_OK",
    "EXIT_RUN_ERROR",
    "EXIT_USAGE",
    "Outcome",
    "RunStream",
    "event_params",
]

EXIT_OK = 0
EXIT_RUN_ERROR = 1
EXIT_USAGE = 2
EXIT_LOST = 3
EXIT_INTERRUPTED = 130


def event_params(params: Any) -> dict[str, Any] | None:
    """The envelope map of an `event` notification's params, or None if it is not one."""
    if isinstance(params, list) and len(params) == 1 and isinstance(params[0], dict):
        return params[0]
    return None


class Outcome:
    __slots__ = ("cancelled", "error", "exit_code")

    def __init__(self, exit_code: int, error: str | None = None, cancelled: bool = False) -> None:
        self.exit_code = exit_code
        self.error = error
        self.cancelled = cancelled

    def __repr__(self) -> str:
        return f"Outcome({self.exit_code}, {self.error!r}, cancelled={self.cancelled})"


class RunStream:
    def __init__(self, session_id: str, run_id: str) -> None:
        self.session_id = session_id
        self.run_id = run_id
        #: Set when the user asked to cancel: a cancelled ending is then theirs (130).
        self.cancel_requested = False
        self._message_id: str | None = None
        self._printed = 0  # characters of the current message already written
        self._ends_with_newline = True
        self.gaps = 0
        #: Our run's agent.error, when one came: the RunComplete that follows ends the run.
        self.agent_error: str | None = None
        #: Set by `agentctl attach`, which starts from the text saved so far: deltas
        #: past what is printed wait in `_pending` until `fill` closes the hole.
        self.keep_ahead = False
        self._pending: list[tuple[int, str]] = []

    def is_ours(self, event: dict[str, Any]) -> bool:
        payload = event.get("payload")
        return isinstance(payload, dict) and payload.get("run_id") == self.run_id

    def handle(self, event: dict[str, Any]) -> tuple[str, Outcome | None]:
        """Text to write now, and the outcome when this event ends the run."""
        kind = event.get("type")
        payload = event.get("payload")
        if not isinstance(payload, dict):
            return "", None
        if kind == events.MESSAGE_DELTA:
            if payload.get("run_id") != self.run_id:
                return "", None
            return self._delta(payload), None
        if kind == events.MESSAGE_UPDATED:
            if payload.get("run_id") != self.run_id or payload.get("role") != "assistant":
                return "", None
            return self._reconcile(payload.get("id"), payload.get("text")), None
        if kind == events.RUN_COMPLETE:
            if payload.get("run_id") != self.run_id:
                return "", None
            return self.complete(payload)
        if kind == events.AGENT_ERROR:
            # Not the end: every accepted run ends with its run.complete, which
            # `--json` must print, and which comes right after.
            if self.agent_error_is_ours(payload):
                self.agent_error = f"agent error: {payload.get('message')}"
            return "", None
        if kind == events.EVENTS_GAP:
            self.gaps += 1
        return "", None

    def agent_error_is_ours(self, payload: dict[str, Any]) -> bool:
        """Async errors of other runs share the workspace's stream; a foreign failure must not abort us.

        A run_id, when present, is the authoritative correlator and must be ours;
        without one, the session must be present and ours.
        """
        run_id = payload.get("run_id")
        if run_id:
            return bool(run_id == self.run_id)
        session_id = payload.get("session_id")
        return bool(session_id) and session_id == self.session_id

    def complete(self, rc: dict[str, Any]) -> tuple[str, Outcome]:
        """The RunComplete, from the stream or from `run.wait`: print what is missing, then end."""
        text = self._reconcile(rc.get("message_id"), rc.get("text"))
        self._pending = []
        if not self._ends_with_newline:
            text += "\n"
            self._ends_with_newline = True
        if rc.get("cancelled"):
            code = EXIT_INTERRUPTED if self.cancel_requested else EXIT_RUN_ERROR
            return text, Outcome(code, "run cancelled", cancelled=True)
        error = rc.get("error")
        if error:
            return text, Outcome(EXIT_RUN_ERROR, str(error))
        if self.agent_error is not None:
            return text, Outcome(EXIT_RUN_ERROR, self.agent_error)
        return text, Outcome(EXIT_OK)

    @property
    def at_line_start(self) -> bool:
        """Whether what was written so far ends a line (or nothing was written)."""
        return self._ends_with_newline

    @property
    def behind(self) -> bool:
        """Whether deltas wait for a hole before them to be filled (see `fill`)."""
        return bool(self._pending)

    def fill(self, message_id: Any, text: Any) -> str:
        """Text to write from a snapshot of the answer so far (the stored text), then the deltas it lets through."""
        if not isinstance(text, str):
            return ""
        out = self._switch_message(message_id)
        if len(text) > self._printed:
            out += self._emit(text[self._printed :])
        pending, self._pending = self._pending, []
        for offset, delta in sorted(pending):
            out += self._after(offset, delta)
        return out

    def _switch_message(self, message_id: Any) -> str:
        if message_id is None or message_id == self._message_id:
            return ""
        self._pending = []
        separator = "" if self._message_id is None or self._ends_with_newline else "\n"
        self._message_id = message_id
        self._printed = 0
        return separator

    def _emit(self, text: str) -> str:
        if text:
            self._printed += len(text)
            self._ends_with_newline = text.endswith("\n")
        return text

    def _delta(self, payload: dict[str, Any]) -> str:
        prefix = self._switch_message(payload.get("message_id"))
        offset = payload.get("offset")
        text = payload.get("text")
        if not isinstance(offset, int) or not isinstance(text, str):
            return prefix
        return prefix + self._after(offset, text)

    def _after(self, offset: int, text: str) -> str:
        if offset > self._printed:
            # Something before this delta is missing: print nothing past the
            # hole; the final text (or, attached, `fill`) fills it in.
            if self.keep_ahead:
                self._pending.append((offset, text))
            else:
                self.gaps += 1
            return ""
        return self._emit(text[self._printed - offset :])

    def _reconcile(self, message_id: Any, text: Any) -> str:
        if not isinstance(text, str):
            return ""
        prefix = self._switch_message(message_id)
        return prefix + self._emit(text[self._printed :])
