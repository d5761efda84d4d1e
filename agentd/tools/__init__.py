"""The tools a model may call, each confined to the workspace root.

`TOOLS` is the one table: the agent loop, the providers (through
`definitions()`), the permissions and docs/protocol.md §12 all read it.
"""

from __future__ import annotations

from ._base import Changes, ToolContext, ToolError, ToolKind, ToolLimits, ToolOutput, ToolSpec
from ._registry import TOOLS, definitions, run_tool
from ._schema import json_schema, parse_arguments

__all__ = [
    "TOOLS",
    "Changes",
    "ToolContext",
    "ToolError",
    "ToolKind",
    "ToolLimits",
    "ToolOutput",
    "ToolSpec",
    "definitions",
    "json_schema",
    "parse_arguments",
    "run_tool",
]
