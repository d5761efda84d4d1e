"""Live workspaces and the registry that opens and closes them."""

from ._manager import Workspaces, resolve_directory
from ._order import SessionOrder, Turn
from ._sessions import DEFAULT_TITLE, SessionRequests, session_title
from ._workspace import WorkspaceHost

__all__ = [
    "DEFAULT_TITLE",
    "SessionOrder",
    "SessionRequests",
    "Turn",
    "WorkspaceHost",
    "Workspaces",
    "resolve_directory",
    "session_title",
]
