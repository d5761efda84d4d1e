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
    "McpServerSpec",
    "McpServerView",
    "McpStatus",
    "Message",
    "MessageDelta",
    "MessagePart",
    "PermissionGrantParams",
    "PermissionOutcome",
    "PermissionRequest",
    "PermissionResolved",
    "NoParams",
    "QueuedPrompt",
    "ReplayGapPayload",
    "RunComplete",
    "RunChangesParams",
    "RunGetParams",
    "RunRetry",
    "RunRevertParams",
    "RunStarted",
    "RunWaitParams",
    "ServerShutdownParams",
    "Session",
    "SessionCreateParams",
    "SessionMcpServersParams",
    "SessionRef",
    "ToolCallPart",
    "ToolFinished",
    "ToolResultPart",
    "ToolStarted",
    "ToolStatus",
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
class ToolCallPart:
    """A tool call an assistant message made."""

    call_id: str
    name: str
    # JSON text, exactly as the model gave it (it may not be valid JSON).
    arguments: str
    type: Literal["tool_call"] = "tool_call"


# How a tool call ended: "ok", "error" (the tool failed; the model is told
# why), "denied" (a permission answer or rule), "timeout" (a permission
# request nobody answered), "cancelled" (the run was cancelled).
ToolStatus = Literal["ok", "error", "denied", "timeout", "cancelled"]


@attrs.frozen
class ToolResultPart:
    """A tool call's result, in the "tool" message that follows the assistant message that made it."""

    call_id: str
    name: str
    status: ToolStatus
    # What the model is told.
    output: str
    # One short line for a client to show ("read 120 lines", "exit 0").
    summary: str
    type: Literal["tool_result"] = "tool_result"


MessagePart = ToolCallPart | ToolResultPart


@attrs.frozen
class Message:
    id: str
    session_id: str
    # "user", "assistant", or "tool" (the results of the assistant message before it).
    role: str
    text: str
    run_id: str | None
    created_at: float
    # None while the message is still being written.
    finish_reason: str | None
    parts: tuple[MessagePart, ...] = ()


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
class RunRetry:
    """`run.retry` (lossy): the provider refused for now; the run waits `delay` seconds, then tries again."""

    session_id: str
    run_id: str
    # The attempt about to be made: 2 for the first retry.
    attempt: int
    delay: float
    # The refusal in short: "rate limited (429)", "HTTP 503", "connection lost".
    reason: str


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
    # Files the run created, changed or deleted (`run.changes` lists them).
    changes: int = 0
    # Why the run stopped: "stop", "length", "refusal", "step_limit", "error", "cancelled".
    stop_reason: str = "stop"


def run_complete(
    session_id: str,
    run_id: str,
    *,
    message_id: str | None = None,
    text: str = "",
    error: str | None = None,
    cancelled: bool = False,
    changes: int = 0,
    stop_reason: str | None = None,
) -> RunComplete:
    """The one way a RunComplete is made, whoever ends the run: a cancelled run carries no error.

    `stop_reason` defaults to what the outcome implies: "cancelled", "error" or "stop".
    """
    if cancelled:
        error, stop_reason = None, "cancelled"
    elif stop_reason is None:
        stop_reason = "error" if error is not None else "stop"
    return RunComplete(
        session_id=session_id,
        run_id=run_id,
        message_id=message_id,
        text=text,
        error=error,
        cancelled=cancelled,
        changes=changes,
        stop_reason=stop_reason,
    )


@attrs.frozen
class ToolStarted:
    """`tool.started` (lossy): a tool call of a run began."""

    session_id: str
    run_id: str
    call_id: str
    name: str
    # What the call does, in a line ("view README.md", "bash: git status").
    summary: str


@attrs.frozen
class ToolFinished:
    """`tool.finished` (lossy): a tool call of a run ended; the "tool" message holds its full result."""

    session_id: str
    run_id: str
    call_id: str
    name: str
    status: ToolStatus
    summary: str


@attrs.frozen
class PermissionRequest:
    """`permission.request` (must-deliver): a tool call waits for someone to allow it."""

    request_id: str
    session_id: str
    run_id: str
    call_id: str
    tool: str
    # What the call would do, for a person to judge ("bash: rm -rf build").
    description: str
    # The call's arguments, decoded.
    params: dict[str, object]
    # When nobody answers by then (seconds since the epoch), it resolves as "timeout".
    expires_at: float


# How a permission request ended: "allow", "allow_session", "deny",
# "deny_session" (the four answers), "timeout" or "cancelled".
PermissionOutcome = Literal["allow", "allow_session", "deny", "deny_session", "timeout", "cancelled"]


@attrs.frozen
class PermissionResolved:
    """`permission.resolved` (must-deliver): a permission request is over, and how."""

    request_id: str
    session_id: str
    run_id: str
    outcome: PermissionOutcome
    # Who ended it: the answering client's name (or connection id), "timeout", or "run" (it was cancelled).
    by: str


@attrs.frozen
class GapPayload:
    """`events.gap` live: this subscriber lost `dropped` lossy events."""

    dropped: int


@attrs.frozen
class ReplayGapPayload:
    """`events.gap` ahead of a replay: it may lack events, `too_old` (pruned) or `lost` (never written)."""

    reason: str


# How an MCP server is doing: "starting" (spawned or connecting, tools not listed yet), "ready" (its
# tools are offered), "failed" (it did not start, crashed or stopped answering; restarted after
# `retry_in` seconds), "untrusted" (the workspace's .agentd/config.toml, not trusted yet:
# `agentctl mcp trust`), "disabled" (`enabled = false`), "stopped" (the workspace is closing).
McpState = Literal["starting", "ready", "failed", "untrusted", "disabled", "stopped"]


@attrs.frozen
class McpServerView:
    """One MCP server of a workspace, as `mcp.list` and `mcp.status` show it."""

    name: str
    # "config", "workspace" (.agentd/config.toml) or "session" (a client's, for one session).
    source: str
    # "stdio" or "http".
    transport: str
    state: McpState
    # Its tools as the model sees them (mcp__NAME__TOOL), while ready.
    tools: list[str] = attrs.Factory(list)
    # What went wrong last (also while ready again after a restart); None: nothing yet.
    error: str | None = None
    # Times it was started again after a failure.
    restarts: int = 0
    # state "failed": seconds until the next start.
    retry_in: float | None = None
    # source "session": the session whose runs see it.
    session_id: str | None = None


@attrs.frozen
class McpStatus:
    """`mcp.status` (lossy): an MCP server of the workspace changed state."""

    workspace_id: str
    server: McpServerView


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
    # Allow rules for this run only ("*": every call), as `[permissions] allow` writes them.
    allow: list[str] | None = None


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


@attrs.frozen
class PermissionGrantParams:
    workspace_id: str
    request_id: str
    # "allow", "allow_session", "deny" or "deny_session".
    action: str


@attrs.frozen
class McpServerSpec:
    """An MCP server a client brings for one session: `command` (stdio) or `url` (streamable HTTP)."""

    name: str
    # The program and its arguments.
    command: list[str] = attrs.Factory(list)
    # Added to the server's small clean environment.
    env: dict[str, str] = attrs.Factory(dict)
    url: str | None = None
    headers: dict[str, str] = attrs.Factory(dict)


@attrs.frozen
class SessionMcpServersParams:
    """The session's own MCP servers, replacing those it had: `[]` stops them all."""

    workspace_id: str
    session_id: str
    servers: list[McpServerSpec]


@attrs.frozen
class RunChangesParams:
    """A run by id, or (workspace_id and session_id, without run_id) the session's last run."""

    run_id: str | None = None
    workspace_id: str | None = None
    session_id: str | None = None


@attrs.frozen
class RunRevertParams:
    run_id: str | None = None
    workspace_id: str | None = None
    session_id: str | None = None
    # Revert files changed since the run too, and the rest when some cannot be.
    force: bool = False
