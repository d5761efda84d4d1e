"""MCP servers as tools: their configuration, their lives in a workspace's nursery, and their tools for the model.

Only `_config` is imported with the package: the SDK (`mcp`, on anyio, so on
trio) is imported when a workspace first has a server to start.
"""

from ._config import (
    DEFAULT_CALL_TIMEOUT,
    DEFAULT_MCP_WAIT,
    DEFAULT_STARTUP_TIMEOUT,
    McpServerConfig,
    McpSource,
    server_name_problem,
)

__all__ = [
    "DEFAULT_CALL_TIMEOUT",
    "DEFAULT_MCP_WAIT",
    "DEFAULT_STARTUP_TIMEOUT",
    "McpServerConfig",
    "McpSource",
    "server_name_problem",
]
