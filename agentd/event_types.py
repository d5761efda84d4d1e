"""Every event type in one table: its name, its delivery class, and whether the event log keeps it.

The broker, the journal, the store and the clients all read names and classes
from here. Plain strings and no imports, so agentctl can use it without
paying for attrs or typing at start-up.
"""

from __future__ import annotations

__all__ = [
    "AGENT_ERROR",
    "EVENTS_GAP",
    "EVENT_TYPES",
    "LOGGED",
    "MESSAGE_CREATED",
    "MESSAGE_DELTA",
    "MCP_STATUS",
    "MESSAGE_UPDATED",
    "MUST_DELIVER",
    "PERMISSION_REQUEST",
    "PERMISSION_RESOLVED",
    "RUN_COMPLETE",
    "RUN_RETRY",
    "RUN_STARTED",
    "SESSION_CREATED",
    "SESSION_DELETED",
    "SESSION_UPDATED",
    "TOOL_FINISHED",
    "TOOL_STARTED",
    "WORKSPACE_CLOSED",
]

SESSION_CREATED = "session.created"
SESSION_UPDATED = "session.updated"
SESSION_DELETED = "session.deleted"
MESSAGE_CREATED = "message.created"
MESSAGE_DELTA = "message.delta"
MESSAGE_UPDATED = "message.updated"
RUN_STARTED = "run.started"
AGENT_ERROR = "agent.error"
RUN_RETRY = "run.retry"
RUN_COMPLETE = "run.complete"
TOOL_STARTED = "tool.started"
TOOL_FINISHED = "tool.finished"
PERMISSION_REQUEST = "permission.request"
PERMISSION_RESOLVED = "permission.resolved"
EVENTS_GAP = "events.gap"
WORKSPACE_CLOSED = "workspace.closed"
MCP_STATUS = "mcp.status"

# name: (must-deliver, logged for replay).
EVENT_TYPES: dict[str, tuple[bool, bool]] = {
    SESSION_CREATED: (False, True),
    SESSION_UPDATED: (False, True),
    SESSION_DELETED: (False, True),
    MESSAGE_CREATED: (False, True),
    # Not logged: `message.updated` and `run.complete` carry the full text.
    MESSAGE_DELTA: (False, False),
    MESSAGE_UPDATED: (False, True),
    RUN_STARTED: (False, True),
    AGENT_ERROR: (False, True),
    # A provider refused for now (rate limit, overload); the run waits and tries again.
    RUN_RETRY: (False, False),
    # A tool call's start and end, to show live; the "tool" message holds the result.
    TOOL_STARTED: (False, False),
    TOOL_FINISHED: (False, False),
    # A run waits on an answer to this; a client that connects later still sees
    # a pending one (`permission.list`, and on subscribe).
    PERMISSION_REQUEST: (True, True),
    PERMISSION_RESOLVED: (True, True),
    # A client waiting on a run hangs if it misses this one.
    RUN_COMPLETE: (True, True),
    # Sent to one subscriber only, in place of the lossy events it was too slow to take.
    EVENTS_GAP: (False, False),
    # An MCP server started, failed or stopped: state, which `mcp.list` also answers.
    MCP_STATUS: (False, False),
    # The last event a workspace's subscribers get.
    WORKSPACE_CLOSED: (True, True),
}

MUST_DELIVER = frozenset(name for name, (must, _logged) in EVENT_TYPES.items() if must)
LOGGED = frozenset(name for name, (_must, logged) in EVENT_TYPES.items() if logged)
