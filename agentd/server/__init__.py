"""Transport and routing: the socket, the connections, the method table, the daemon's tree."""

from ._listener import StartupError
from ._serve import serve
from ._state import DaemonConfig

__all__ = ["DaemonConfig", "StartupError", "serve"]
