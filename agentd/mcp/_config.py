"""What an MCP server is, as configured: one `[mcp.NAME]` table, a project's, or an editor's.

No I/O and no SDK: the configuration reads these, the workspace decides which
apply, and `_supervisor` starts them.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Literal

import attrs

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

# Where a server was configured: the user's config.toml, the workspace's
# .agentd/config.toml (only once the user trusted it), or a client for one
# session (an ACP editor's `mcpServers`).
McpSource = Literal["config", "workspace", "session"]

# Seconds a server may take to start (spawn, initialize, list its tools) before that counts as a failure.
DEFAULT_STARTUP_TIMEOUT = 30.0
# Seconds one tool call may take before it ends as a tool error for the model.
DEFAULT_CALL_TIMEOUT = 120.0
# `[agent] mcp_wait`: seconds a run's first model turn waits for servers still starting.
DEFAULT_MCP_WAIT = 2.0

# A server's name is part of its tools' names (`mcp__NAME__TOOL`), which
# providers restrict to letters, digits, '_' and '-'; '__' would make the
# name ambiguous.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_NAME_CHARS = 32


def server_name_problem(name: str) -> str | None:
    """What is wrong with `name` as an MCP server's name, or None."""
    if not _NAME.fullmatch(name) or "__" in name or name.endswith("_"):
        return (
            f"MCP server name {name!r} may hold only letters, digits, '_' and '-', must start with a letter"
            " or digit, and may not hold '__' or end with '_' (its tools are named mcp__NAME__TOOL)"
        )
    if len(name) > MAX_NAME_CHARS:
        return f"MCP server name {name!r} is longer than {MAX_NAME_CHARS} characters"
    return None


def _hidden(values: Mapping[str, str]) -> str:
    # env and headers carry tokens: a repr shows which are set, never their values.
    return "{" + ", ".join(f"{name!r}: ..." for name in values) + "}"


@attrs.frozen
class McpServerConfig:
    """One MCP server: a program spoken to over stdio (`command`), or a streamable-HTTP endpoint (`url`)."""

    name: str
    # stdio: the program and its arguments. Exactly one of command and url is set.
    command: tuple[str, ...] = ()
    # stdio: added to a small clean environment (PATH, HOME, ...), never the daemon's whole one.
    env: Mapping[str, str] = attrs.field(factory=dict, repr=_hidden)
    # streamable HTTP: the endpoint.
    url: str | None = None
    headers: Mapping[str, str] = attrs.field(factory=dict, repr=_hidden)
    enabled: bool = True
    # This server's tools (by their MCP name) that run without asking; "*": all of them.
    allow: tuple[str, ...] = ()
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT
    call_timeout: float = DEFAULT_CALL_TIMEOUT
    source: McpSource = "config"
    # source "session": the session whose runs see it.
    session_id: str | None = None

    @property
    def transport(self) -> Literal["stdio", "http"]:
        return "http" if self.url is not None else "stdio"


def _url_problem(url: str) -> str | None:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return "must be an http:// or https:// URL with a host"
    return None


def session_server(
    name: str,
    session_id: str,
    *,
    command: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    url: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> McpServerConfig:
    """A client's server for one session, checked; ValueError names what is wrong (never a value of env or headers)."""
    problem = server_name_problem(name)
    if problem is not None:
        raise ValueError(problem)
    if bool(command) == (url is not None):
        raise ValueError(f"MCP server {name!r} needs exactly one of command (stdio) and url (streamable HTTP)")
    if command and not command[0]:
        raise ValueError(f"MCP server {name!r}: command[0], the program, is empty")
    if url is not None and (problem := _url_problem(url)) is not None:
        raise ValueError(f"MCP server {name!r}: url {problem}")
    if url is not None and env:
        raise ValueError(f"MCP server {name!r}: env is for stdio servers (command), not url")
    if command and headers:
        raise ValueError(f"MCP server {name!r}: headers are for url servers, not command")
    for key in env or {}:
        if not _VARIABLE.fullmatch(key):
            raise ValueError(f"MCP server {name!r}: env has {key!r}, which is not a variable name")
    return McpServerConfig(
        name=name,
        command=tuple(command),
        env=dict(env or {}),
        url=url,
        headers=dict(headers or {}),
        source="session",
        session_id=session_id,
    )
