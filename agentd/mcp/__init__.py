"""MCP servers as tools: their configuration, their lives in a workspace's nursery, and their tools for the model.

Only the configuration's types are imported with the package: the model
configuration (`agentd.models`, which also reads a project's
.agentd/config.toml) needs them, and the rest needs the tools, which need
models; the workspace imports `_servers` itself. The SDK (`mcp`, on anyio, so on
trio) is imported when a workspace first has a server to start.
"""

from ._config import (
    DEFAULT_CALL_TIMEOUT,
    DEFAULT_MCP_WAIT,
    DEFAULT_STARTUP_TIMEOUT,
    MAX_NAME_CHARS,
    McpServerConfig,
    McpSource,
    server_name_problem,
    session_server,
)

__all__ = [
    "DEFAULT_CALL_TIMEOUT",
    "DEFAULT_MCP_WAIT",
    "DEFAULT_STARTUP_TIMEOUT",
    "MAX_NAME_CHARS",
    "McpServerConfig",
    "McpSource",
    "server_name_problem",
    "session_server",
]
