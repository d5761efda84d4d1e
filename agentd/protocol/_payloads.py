"""Which wire type each event's payload is: the one table of every event's fields.

The publishers build each payload from its type here (`unstructure(RunStarted(...))`),
docs/protocol.md §5.2 documents the same fields, and tests/test_protocol_doc.py
holds the three together: the doc against this table, each publish call in
agentd/ against it, and the events a real daemon sends against it.
"""

from __future__ import annotations

from agentd.event_types import (
    AGENT_ERROR,
    EVENT_TYPES,
    EVENTS_GAP,
    MCP_STATUS,
    MESSAGE_CREATED,
    MESSAGE_DELTA,
    MESSAGE_UPDATED,
    PERMISSION_REQUEST,
    PERMISSION_RESOLVED,
    RUN_COMPLETE,
    RUN_RETRY,
    RUN_STARTED,
    SESSION_CREATED,
    SESSION_DELETED,
    SESSION_UPDATED,
    TOOL_FINISHED,
    TOOL_STARTED,
    WORKSPACE_CLOSED,
)

from ._types import (
    AgentErrorPayload,
    GapPayload,
    McpStatus,
    Message,
    MessageDelta,
    PermissionRequest,
    PermissionResolved,
    ReplayGapPayload,
    RunComplete,
    RunRetry,
    RunStarted,
    Session,
    ToolFinished,
    ToolStarted,
    WorkspaceClosed,
)

__all__ = ["EVENT_PAYLOADS"]

#: Event type: the types its payload may be (only `events.gap` has two: a live loss, or a replay's warning).
EVENT_PAYLOADS: dict[str, tuple[type, ...]] = {
    SESSION_CREATED: (Session,),
    SESSION_UPDATED: (Session,),
    SESSION_DELETED: (Session,),
    MESSAGE_CREATED: (Message,),
    MESSAGE_DELTA: (MessageDelta,),
    MESSAGE_UPDATED: (Message,),
    RUN_STARTED: (RunStarted,),
    AGENT_ERROR: (AgentErrorPayload,),
    RUN_RETRY: (RunRetry,),
    RUN_COMPLETE: (RunComplete,),
    TOOL_STARTED: (ToolStarted,),
    TOOL_FINISHED: (ToolFinished,),
    PERMISSION_REQUEST: (PermissionRequest,),
    PERMISSION_RESOLVED: (PermissionResolved,),
    EVENTS_GAP: (GapPayload, ReplayGapPayload),
    WORKSPACE_CLOSED: (WorkspaceClosed,),
    MCP_STATUS: (McpStatus,),
}

if EVENT_PAYLOADS.keys() != EVENT_TYPES.keys():
    raise TypeError(
        f"event types without a payload type, or the reverse: {sorted(EVENT_PAYLOADS.keys() ^ EVENT_TYPES.keys())}"
    )
