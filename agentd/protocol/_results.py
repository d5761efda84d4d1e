"""What each method answers: one frozen attrs type per reply.

The method table returns these, the converter turns them into the reply's
map, and docs/protocol.md documents the same fields (a test holds the two
together). Records that are also events (Session, Message, RunComplete)
live in `_types`.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

from ._types import McpServerView, RunComplete, Session, Workspace

__all__ = [
    "CancelResult",
    "Empty",
    "FileChange",
    "FileRefused",
    "FileReverted",
    "InitializeResult",
    "McpServerList",
    "McpTrusted",
    "ModelsList",
    "PermissionGranted",
    "QueueCleared",
    "RunChangeList",
    "RunInfo",
    "RunReverted",
    "SendResult",
    "ServerStatus",
    "Subscribed",
    "WorkspaceInfo",
    "WorkspaceSessions",
]


@attrs.frozen
class Empty:
    """`{}`: the request was done, and there is nothing more to say."""


@attrs.frozen
class InitializeResult:
    server: str
    version: str
    protocol: int
    pid: int
    # Nil when the configuration file has mistakes and no good version of it was read.
    default_model: str | None
    # True when nothing is configured and runs answer with the offline echo model.
    default_model_is_fallback: bool
    # What a client should tell its user about the default, when there is something to say.
    default_model_note: str | None
    # Every mistake in the configuration file, `path:LINE: reason` each; empty when there are none.
    config_mistakes: list[str]
    # A bigger message closes the connection: a client can refuse it up front instead.
    max_message_size: int


@attrs.frozen
class ServerStatus:
    version: str
    pid: int
    uptime_s: float
    workspaces: int
    clients: int
    subscriptions: int
    active_runs: int
    events_dropped: int
    # trio tasks alive in the daemon, its own included: a number that only grows under steady use is a leak.
    tasks: int
    # Handed its socket by systemd; and after how many idle seconds it exits (None: never).
    socket_activated: bool = False
    idle_exit_s: float | None = None
    # MCP servers of every open workspace, by state ("ready": 2, "failed": 1); absent states are 0.
    mcp_servers: dict[str, int] = attrs.Factory(dict)


@attrs.frozen
class ModelsList:
    default: str | None
    default_is_fallback: bool
    source: str
    # One map per model, as the configuration describes it (docs/protocol.md §10).
    models: list[dict[str, Any]]
    default_model_note: str | None
    config_mistakes: list[str]


@attrs.frozen
class WorkspaceInfo:
    id: str
    path: str
    clients: int
    active_runs: int


@attrs.frozen
class SendResult:
    run_id: str
    queued: bool
    # "queued", "running" or "done" (a known run_id sent again).
    state: str
    # Runs of the session ahead of this one when it was queued (0 when it runs at once, or was known).
    ahead: int = 0


@attrs.frozen
class WorkspaceSessions:
    """One workspace the database knows, open or not, and its sessions."""

    workspace: Workspace
    sessions: list[Session]


@attrs.frozen
class CancelResult:
    # Whether a running run was asked to stop.
    cancelled: bool
    run_id: str | None
    # How many queued runs were removed.
    cleared: int


@attrs.frozen
class QueueCleared:
    cleared: int


@attrs.frozen
class RunInfo:
    run_id: str
    workspace_id: str
    session_id: str
    model: str
    prompt: str
    state: str
    created_at: float
    complete: RunComplete | None


@attrs.frozen
class Subscribed:
    subscription_id: str
    # Live events are those above it.
    seq: int
    # How many events come first, from before it: a client knows when it has caught up.
    replayed: int


@attrs.frozen
class PermissionGranted:
    # Whether this answer ended the request; false when another answer, the timeout or a cancel came first.
    resolved: bool


@attrs.frozen
class FileChange:
    # Relative to the workspace root, "/"-separated.
    path: str
    action: Literal["created", "changed", "deleted"]
    # A unified diff, from the file before the run to the file as the run left it.
    diff: str
    # Whether the file is no longer as the run left it (someone changed it since).
    changed_since: bool
    # Whether run.revert has put it back.
    reverted: bool


@attrs.frozen
class RunChangeList:
    run_id: str
    session_id: str
    files: list[FileChange]
    # When run.revert put every file back; None while one is not.
    reverted_at: float | None


@attrs.frozen
class FileReverted:
    path: str
    # What the run had done, now undone: "created" (removed again), "changed" (rewritten), "deleted" (recreated).
    action: Literal["created", "changed", "deleted"]


@attrs.frozen
class FileRefused:
    path: str
    # Why it was not reverted, for a person.
    reason: str


@attrs.frozen
class RunReverted:
    run_id: str
    session_id: str
    reverted: list[FileReverted]
    refused: list[FileRefused]


@attrs.frozen
class McpServerList:
    """`mcp.list`: the workspace's MCP servers, the configuration's first, then the project's, then sessions'."""

    servers: list[McpServerView]
    # The workspace's .agentd/config.toml, when it has one, and whether its present content is trusted.
    project_config: str | None = None
    project_trusted: bool = False
    # What is wrong with that file (`path:LINE: reason` each); its servers start once it has none.
    project_mistakes: list[str] = attrs.Factory(list)


@attrs.frozen
class McpTrusted:
    """`mcp.trust`: the workspace's .agentd/config.toml is trusted as it is now; its servers are starting."""

    path: str
    # The servers it configures.
    servers: list[str]
