"""What travels: the domain records, the methods' params, and the event payloads.

Every wire type is a frozen attrs class; `_convert.converter` is the one way they
become msgpack-ready maps and back. Field names are the wire names.
"""

from __future__ import annotations

from typing import Literal

import attrs

__all__ = [
    "AgentCancelParams",
    "AgentErrorPayload",
    "AgentSendParams",
    "EventEnvelope",
    "EventsSubscribeParams",
    "EventsUnsubscribeParams",
    "GapPayload",
    "InitializeParams",
    "Message",
    "MessageDelta",
    "NoParams",
    "QueuedPrompt",
    "ReplayGapPayload",
    "RunComplete",
    "RunGetParams",
    "RunStarted",
    "RunWaitParams",
    "ServerShutdownParams",
    "Session",
    "SessionCreateParams",
    "SessionRef",
    "Workspace",
    "WorkspaceClosed",
    "WorkspaceOpenParams",
    "WorkspaceRef",
    "run_complete",
]

Role = Literal["user", "assistant"]


# --- records -----------------------------------------------------------------


@attrs.frozen
class Workspace:
    id: str
    path: str


@attrs.frozen
class Session:
    id: str
    workspace_id: str
    title: str
    created_at: float
    updated_at: float
    message_count: int
    busy: bool
    # Tokens the session's model calls have used, as the providers count them.
    prompt_tokens: int = 0
    completion_tokens: int = 0


@attrs.frozen
class Message:
    id: str
    session_id: str
    role: str
    text: str
    run_id: str | None
    created_at: float
    # None while the message is still being written.
    finish_reason: str | None


@attrs.frozen
class QueuedPrompt:
    run_id: str
    prompt: str


# --- events ------------------------------------------------------------------


@attrs.frozen
class MessageDelta:
    session_id: str
    run_id: str
    message_id: str
    # Characters of the message before this delta: a client that lost a delta sees it here.
    offset: int
    text: str


@attrs.frozen
class RunStarted:
    session_id: str
    run_id: str


@attrs.frozen
class AgentErrorPayload:
    session_id: str
    run_id: str | None
    message: str


@attrs.frozen
class RunComplete:
    """The one terminal event of a run."""

    session_id: str
    run_id: str
    message_id: str | None
    text: str
    error: str | None
    cancelled: bool


def run_complete(
    session_id: str,
    run_id: str,
    *,
    message_id: str | None = None,
    text: str = "",
    error: str | None = None,
    cancelled: bool = False,
) -> RunComplete:
    """The one way a RunComplete is made, whoever ends the run: a cancelled run carries no error."""
    return RunComplete(
        session_id=session_id,
        run_id=run_id,
        message_id=message_id,
        text=text,
        error=None if cancelled else error,
        cancelled=cancelled,
    )


@attrs.frozen
class GapPayload:
    """`events.gap` live: this subscriber lost `dropped` lossy events."""

    dropped: int


@attrs.frozen
class ReplayGapPayload:
    """`events.gap` ahead of a replay: it may lack events, `too_old` (pruned) or `lost` (never written)."""

    reason: str


@attrs.frozen
class WorkspaceClosed:
    workspace_id: str
    # "idle", "shutdown", or "failed" (then `error` says what failed).
    reason: str
    error: str | None = None


@attrs.frozen
class EventEnvelope:
    """The map inside a `[2, "event", [envelope]]` notification."""

    subscription_id: str
    workspace_id: str
    seq: int
    type: str
    payload: dict[str, object]


# --- method params -------------------------------------------------------------


@attrs.frozen
class NoParams:
    pass


@attrs.frozen
class InitializeParams:
    client_name: str | None = None
    client_version: str | None = None


@attrs.frozen
class ServerShutdownParams:
    if_idle: bool = False


@attrs.frozen
class WorkspaceOpenParams:
    path: str


@attrs.frozen
class WorkspaceRef:
    workspace_id: str


@attrs.frozen
class SessionCreateParams:
    workspace_id: str
    title: str | None = None


@attrs.frozen
class SessionRef:
    workspace_id: str
    session_id: str


@attrs.frozen
class AgentSendParams:
    workspace_id: str
    session_id: str
    prompt: str
    run_id: str | None = None
    model: str | None = None


@attrs.frozen
class AgentCancelParams:
    workspace_id: str
    session_id: str
    run_id: str | None = None


@attrs.frozen
class RunWaitParams:
    run_id: str
    timeout: float | None = None


@attrs.frozen
class EventsSubscribeParams:
    workspace_id: str
    # Replay the logged events after this seq first (see docs/protocol.md).
    since: int | None = None


@attrs.frozen
class RunGetParams:
    run_id: str


@attrs.frozen
class EventsUnsubscribeParams:
    subscription_id: str
