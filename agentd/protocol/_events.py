"""Event type names, and which of them must be delivered."""

from __future__ import annotations

from typing import Final

__all__ = [
    "AGENT_ERROR",
    "EVENTS_GAP",
    "MESSAGE_CREATED",
    "MESSAGE_DELTA",
    "MESSAGE_UPDATED",
    "RUN_COMPLETE",
    "RUN_RETRY",
    "RUN_STARTED",
    "SESSION_CREATED",
    "SESSION_DELETED",
    "SESSION_UPDATED",
    "WORKSPACE_CLOSED",
]

SESSION_CREATED: Final = "session.created"
SESSION_UPDATED: Final = "session.updated"
SESSION_DELETED: Final = "session.deleted"
MESSAGE_CREATED: Final = "message.created"
MESSAGE_DELTA: Final = "message.delta"
MESSAGE_UPDATED: Final = "message.updated"
RUN_STARTED: Final = "run.started"
AGENT_ERROR: Final = "agent.error"
# A provider refused for now (rate limit, overload); the run waits and tries again.
RUN_RETRY: Final = "run.retry"
# Must-deliver: a client waiting on a run hangs if it misses this one.
RUN_COMPLETE: Final = "run.complete"
# Sent to one subscriber only, in place of the lossy events it was too slow to take.
EVENTS_GAP: Final = "events.gap"
# Must-deliver: the last event a workspace's subscribers get.
WORKSPACE_CLOSED: Final = "workspace.closed"
