"""An MCP server's tools as the agent loop's ToolSpecs: named `mcp__SERVER__TOOL`, with the server's JSON Schema.

They are "execute" tools: a server may do anything, so a call is asked about
(unless the server's `allow` or a rule allows it), and it runs alone in its
turn. The result is the server's content as text (`_results`), cut as every
tool's output is; a result the server marks as an error is a ToolError.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from agentd.tools import ToolContext, ToolError, ToolOutput, ToolSpec

from ._names import tool_name
from ._results import result_text

if TYPE_CHECKING:
    from ._supervisor import ListedTool, McpServer

__all__ = ["mcp_tool_specs"]

_ARGUMENTS_SHOWN = 100


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[... {len(text) - limit} more characters not shown]"


def _summary(text: str) -> str:
    """The result's first line, and how many more follow: what a person sees of the call."""
    lines = text.strip().splitlines()
    if not lines:
        return "no output"
    more = f" (+{len(lines) - 1} more lines)" if len(lines) > 1 else ""
    return lines[0][:100] + more


def _brief(arguments: dict[str, Any]) -> str:
    text = json.dumps(arguments, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= _ARGUMENTS_SHOWN else text[: _ARGUMENTS_SHOWN - 3] + "..."


def _spec(server: McpServer, tool: ListedTool, name: str) -> ToolSpec:
    allow = server.config.allow
    label = f"{server.name}: {tool.name}"

    async def run(ctx: ToolContext, arguments: dict[str, Any]) -> ToolOutput:
        result = await server.call(tool.name, arguments)
        text, is_error = result_text(result)
        text = _cut(text, ctx.limits.max_output_chars)
        if is_error:
            raise ToolError(f"{label} failed: {text}" if text else f"{label} failed, and said nothing more")
        return ToolOutput(text, _summary(text))

    description = tool.description or f"The tool {tool.name!r} of the MCP server {server.name!r}."
    return ToolSpec(
        name=name,
        description=f"(MCP server {server.name}) {description}",
        params=dict,
        kind="execute",
        run=run,
        describe=lambda arguments: f"{label} {_brief(arguments)}",
        schema=_object_schema(tool.input_schema),
        preallowed="*" in allow or tool.name in allow,
    )


def _object_schema(schema: dict[str, Any]) -> dict[str, Any]:
    # Providers want an object schema at the root; a server that sent none takes any object.
    if schema.get("type") == "object":
        return schema
    return {"type": "object", "properties": {}, "additionalProperties": True}


def mcp_tool_specs(servers: list[McpServer], taken: set[str]) -> dict[str, ToolSpec]:
    """The ready servers' tools by the name the model calls them; a name already taken keeps its first owner."""
    specs: dict[str, ToolSpec] = {}
    for server in servers:
        if server.state != "ready":
            continue
        for tool in server.tools:
            name = tool_name(server.name, tool.name)
            if name in taken or name in specs:
                continue
            specs[name] = _spec(server, tool, name)
    return specs
