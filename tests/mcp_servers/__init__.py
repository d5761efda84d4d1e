"""MCP servers the tests start: real ones, written with the SDK's own server side (MCPServer, once FastMCP)."""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["START_WAIT", "TOOLBOX", "toolbox"]

TOOLBOX = str(Path(__file__).parent / "toolbox.py")
# The bound on a server's start in a test: the SDK's imports alone take seconds on a loaded machine.
START_WAIT = 40.0


def toolbox(name: str = "box", *args: str) -> dict[str, object]:
    """The toolbox server as a session's server spec (session.mcp_servers), under `name`."""
    return {"name": name, "command": [sys.executable, TOOLBOX, *args]}
