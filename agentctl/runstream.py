"""Which events belong to a run, what text they make, and when it is over: for `agentctl run` and both clients' `run()`.

No I/O here: `RunStream.handle` takes one event envelope and returns the text to
write (if any) and the outcome (once the run is over), so every rule is a unit
test. `RunFollower` puts a RunStream on one subscription: which notifications
are its events, where the stream stands (`last_seq`), and which permission
requests are the run's to answer. `agentctl run` and `run()` of
`agentctl.client` and `agentctl.blocking` are adapters over it that only move
bytes and call back.
"""

from __future__ import annotations

import os

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
    "RunFollower",
    "RunStream",
    "SubscriptionPosition",
    "event_params",
    "new_run_id",
    "send_params",
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


def new_run_id() -> str:
    """A run id chosen by the client, so that the run's events are recognised even when they beat the reply."""
    # As random as uuid4, without importing uuid on the way to agentctl's first byte.
    return os.urandom(16).hex()


def send_params(
    workspace_id: str,
    session_id: str,
    prompt: str,
    run_id: str,
    model: str | None = None,
    allow: list[str] | None = None,
) -> dict[str, Any]:
    """agent.send's params; nil options are left out, so the daemon's defaults apply."""
    params: dict[str, Any] = {
        "workspace_id": workspace_id,
        "session_id": session_id,
        "prompt": prompt,
        "run_id": run_id,
    }
    if model:
        params["model"] = model
    if allow:
        params["allow"] = allow
    return params


class RunStream:
    def __init__(self, session_id: str, run_id: str, *, end_line: bool = True) -> None:
        self.session_id = session_id
        self.run_id = run_id
        # A terminal wants the run's text to end its line; a program's callback wants the text as it is.
        self.end_line = end_line
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
        if self.end_line and not self._ends_with_newline:
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


class RunFollower:
    """One run followed on one subscription of the connection; no I/O.

    The adapter hands it every notification (`take`) or every envelope of the
    subscription (`take_event`); it hands back the event when it is the
    subscription's, the text to show, and the outcome once the run is over
    (then `complete` is the run's RunComplete).
    """

    def __init__(self, stream: RunStream, subscription_id: str, seq: int = 0) -> None:
        self.stream = stream
        self.subscription_id = subscription_id
        #: The last seq the subscription saw: where a resubscribe resumes (`since`).
        self.last_seq = seq
        #: The run's RunComplete payload, once its run.complete came.
        self.complete: dict[str, Any] | None = None
        self._requests: set[str] = set()

    def take(self, method: str, params: Any) -> tuple[dict[str, Any] | None, str, Outcome | None]:
        """One notification of the connection: the event if it is the subscription's, the text, the outcome."""
        event = event_params(params) if method == "event" else None
        if event is None:
            return None, "", None
        return self.take_event(event)

    def take_event(self, event: dict[str, Any]) -> tuple[dict[str, Any] | None, str, Outcome | None]:
        if event.get("subscription_id") != self.subscription_id:
            return None, "", None
        seq = event.get("seq")
        # A gap carries the seq of what it stands for (or the `since` asked for), not one of its own.
        if isinstance(seq, int) and event.get("type") != events.EVENTS_GAP:
            self.last_seq = max(self.last_seq, seq)
        text, outcome = self.stream.handle(event)
        if outcome is not None:
            self.complete = event["payload"]
        return event, text, outcome

    def permission_request(self, event: dict[str, Any] | None) -> dict[str, Any] | None:
        """The payload of a permission.request of our run not seen before: one to answer.

        Requests of other runs are not ours to answer; a resubscribe hands
        pending ones out again, and each is answered once.
        """
        if event is None or event.get("type") != events.PERMISSION_REQUEST or not self.stream.is_ours(event):
            return None
        payload: dict[str, Any] = event["payload"]
        request_id = payload.get("request_id")
        if not isinstance(request_id, str) or request_id in self._requests:
            return None
        self._requests.add(request_id)
        return payload

    def permission_resolved(self, event: dict[str, Any] | None) -> str | None:
        """The request id of our run's permission request that this event ended, answered here or elsewhere."""
        if event is None or event.get("type") != events.PERMISSION_RESOLVED or not self.stream.is_ours(event):
            return None
        request_id = event["payload"].get("request_id")
        return request_id if isinstance(request_id, str) else None


class SubscriptionPosition:
    """Where one subscription stands, for both clients' `subscribe()`: the seq to resume from, gaps, its end."""

    def __init__(self, reply: dict[str, Any]) -> None:
        self.id = str(reply["subscription_id"])
        #: Where the workspace's numbering stood when the subscription was made: live events are above it.
        self.seq = int(reply["seq"])
        #: How many events come first: the replay (with its gap, if any) and the pending permission requests.
        self.replayed = int(reply.get("replayed", 0))
        #: The highest seq handed out (or `seq`): the `since` to resume from.
        self.last_seq = self.seq
        #: How many `events.gap` were handed out.
        self.gaps = 0
        #: True once a live `workspace.closed` was handed out: the subscription's last event.
        self.over = False

    def note(self, envelope: dict[str, Any]) -> None:
        """Account for one event of the subscription, as it is handed out."""
        kind, seq = envelope.get("type"), envelope.get("seq")
        if kind == events.EVENTS_GAP:
            self.gaps += 1
        elif isinstance(seq, int):
            self.last_seq = max(self.last_seq, seq)
            # A replayed workspace.closed is an earlier opening's: only a live one ends the subscription.
            if kind == events.WORKSPACE_CLOSED and seq > self.seq:
                self.over = True
