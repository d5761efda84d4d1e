"""What the model calls an MCP server's tool: `mcp__SERVER__TOOL`, made a name every provider takes. No I/O."""

from __future__ import annotations

import hashlib
import re

__all__ = ["tool_name"]

PREFIX = "mcp__"
# What OpenAI accepts in a function's name (Anthropic allows more): ^[a-zA-Z0-9_-]{1,64}$.
MAX_TOOL_NAME_CHARS = 64
_NOT_NAME = re.compile(r"[^A-Za-z0-9_-]")


def tool_name(server: str, tool: str) -> str:
    """`mcp__SERVER__TOOL`: other characters become '_', a long one is cut.

    A cut name ends in 8 hex digits of the whole, so two long names cut to the same prefix stay apart.
    """
    name = f"{PREFIX}{server}__{_NOT_NAME.sub('_', tool) or '_'}"
    if len(name) <= MAX_TOOL_NAME_CHARS:
        return name
    digest = hashlib.sha256(f"{server}\0{tool}".encode()).hexdigest()[:8]
    return f"{name[: MAX_TOOL_NAME_CHARS - 9]}_{digest}"
