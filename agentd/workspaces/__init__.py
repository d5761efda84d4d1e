"""Live workspaces and the registry that opens and closes them."""

from ._manager import Workspaces, resolve_directory
from ._order import SessionOrder, Turn
from ._workspace import WorkspaceHost

__all__ = ["SessionOrder", "Turn", "WorkspaceHost", "Workspaces", "resolve_directory"]
