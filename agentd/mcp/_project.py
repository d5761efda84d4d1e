"""A workspace's own MCP servers: `.agentd/config.toml` in its root, and the trust that lets them start.

A project file must not start programs on its own: its servers start only
once the user trusted the file's present content (`mcp.trust`, `agentctl mcp
trust`); a changed file needs trusting again.
"""

from __future__ import annotations

import attrs

from ._config import McpServerConfig

__all__ = ["PROJECT_CONFIG", "ProjectConfig", "read_project_config"]

# Relative to the workspace root.
PROJECT_CONFIG = ".agentd/config.toml"


@attrs.frozen
class ProjectConfig:
    # The file's absolute path.
    path: str
    # sha256 of its bytes, hex: what trust is given to.
    digest: str
    # Source "workspace"; empty when it has mistakes.
    servers: tuple[McpServerConfig, ...] = ()
    # `path:LINE: message` each.
    mistakes: tuple[str, ...] = ()


async def read_project_config(root: str) -> ProjectConfig | None:
    """The workspace's .agentd/config.toml, read (in a thread) and checked; None when it has none."""
    return None  # contract: the configuration change reads the file
