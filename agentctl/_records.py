"""The client library's typed values: what `run()` returns, what a subscription yields, what the common calls answer.

The records are the daemon's own wire types (`agentd.protocol`), so the
client, the daemon and docs/protocol.md share one definition. Both clients use this module; the blocking one imports
it only when `run()` or a typed call needs it, since attrs and the protocol package cost
`agentctl` more than its whole start-up.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import attrs

from agentctl.runstream import Outcome
from agentd.protocol import EventEnvelope, PermissionRequest, RunComplete, Session, Workspace

__all__ = [
    "PERMISSION_ACTIONS",
    "AsyncPermissionCallback",
    "Event",
    "PermissionCallback",
    "PermissionRequest",
    "RunComplete",
    "RunResult",
    "Session",
    "Workspace",
    "allow_rules",
    "check_action",
    "event",
    "record",
    "run_result",
]

T = TypeVar("T", bound=attrs.AttrsInstance)

#: An event as a subscription yields it: `payload` is the map docs/protocol.md §5.2 describes for `type`.
Event = EventEnvelope

#: The four answers to a permission request (docs/protocol.md, permission.grant).
PERMISSION_ACTIONS = ("allow", "allow_session", "deny", "deny_session")

#: `run()`'s `on_permission`: the request in, one of PERMISSION_ACTIONS out.
PermissionCallback = Callable[[PermissionRequest], str]
#: The trio client's may also be a coroutine function.
AsyncPermissionCallback = Callable[[PermissionRequest], "str | Awaitable[str]"]


@attrs.frozen
class RunResult:
    """What became of a run: its RunComplete, with the workspace it ran in."""

    run_id: str
    session_id: str
    workspace_id: str
    #: The assistant message the run wrote last (its text is `text`); None if it wrote none.
    message_id: str | None
    #: The run's answer: the last assistant message's text (partial if the run failed or was cancelled).
    text: str
    #: Why the run failed; None if it did not fail. Always None when `cancelled`.
    error: str | None
    cancelled: bool
    #: "stop", "length", "refusal", "step_limit", "error" or "cancelled".
    stop_reason: str
    #: How many files the run created, changed or deleted (`run.changes` lists them).
    changes: int

    @property
    def ok(self) -> bool:
        """The run succeeded: it neither failed nor was cancelled."""
        return self.error is None and not self.cancelled


def run_result(workspace_id: str, complete: dict[str, Any], outcome: Outcome) -> RunResult:
    """The RunResult of a run RunStream saw end: its error is RunStream's (ours alone, never another run's)."""
    return RunResult(
        run_id=str(complete["run_id"]),
        session_id=str(complete["session_id"]),
        workspace_id=workspace_id,
        message_id=complete.get("message_id"),
        text=str(complete.get("text") or ""),
        error=None if outcome.cancelled else outcome.error,
        cancelled=outcome.cancelled,
        stop_reason=str(complete.get("stop_reason") or ("cancelled" if outcome.cancelled else "stop")),
        changes=int(complete.get("changes") or 0),
    )


def record(cls: type[T], data: Any) -> T:
    """A reply map (or event payload) as the wire type `cls`; fields a newer daemon adds are left out.

    Not through the protocol's converter: that one checks what clients send,
    and has no hooks for what only the daemon sends (a request's `params`).
    """
    names = {field.name for field in attrs.fields(cls)}
    return cls(**{key: value for key, value in data.items() if key in names})


def event(envelope: dict[str, Any]) -> Event:
    return Event(
        subscription_id=envelope["subscription_id"],
        workspace_id=envelope["workspace_id"],
        seq=envelope["seq"],
        type=envelope["type"],
        payload=envelope["payload"],
    )


def check_action(action: object) -> str:
    """An `on_permission` answer, refused with a clear error if it is not one of the four."""
    if action not in PERMISSION_ACTIONS:
        raise ValueError(f"on_permission must return one of {', '.join(PERMISSION_ACTIONS)}, not {action!r}")
    return str(action)


def allow_rules(allow: Any) -> list[str] | None:
    """`run()`'s `allow`, as agent.send takes it: a string alone would be read as its characters."""
    if allow is None:
        return None
    if isinstance(allow, str):
        raise TypeError(f"allow must be a list of rules, such as [{allow!r}], not a string")
    return list(allow)
