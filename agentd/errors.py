"""What a request can do wrong, in the daemon's own terms.

The workspaces, runs and the converter raise these; the server's method
table turns each kind into its wire error code, once (`agentd.server._methods`).
Nothing below the server knows about codes.
"""

from __future__ import annotations

__all__ = ["AgentdError", "Conflict", "InvalidRequest", "NotFound", "ShuttingDown", "TimedOut", "Unavailable"]


class AgentdError(Exception):
    """A request the daemon refuses; the message names what was wrong, for the client."""


class InvalidRequest(AgentdError):
    """Params or values a request may not have."""


class NotFound(AgentdError):
    """What a request names does not exist (or is not open)."""


class Conflict(AgentdError):
    """It exists, but its state does not allow this now (busy, closing, reused id)."""


class ShuttingDown(AgentdError):
    """The daemon is stopping and takes no new work."""


class TimedOut(AgentdError):
    """What a request waited for did not happen in the time it gave."""


class Unavailable(AgentdError):
    """The daemon cannot do it now through no fault of the request: its database refused (locked, full, damaged)."""
