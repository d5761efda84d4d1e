"""Interim: the tools registry's interface, until the tools land."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentd.models import ToolDefinition

from ._base import Changes, ToolContext, ToolError, ToolKind, ToolLimits, ToolOutput, ToolSpec

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
    "parse_arguments",
    "run_tool",
]

TOOLS: Mapping[str, ToolSpec] = {}


def definitions() -> tuple[ToolDefinition, ...]:
    return ()


def parse_arguments(spec: ToolSpec, arguments: str) -> Any:
    raise ToolError("no tools yet")


async def run_tool(spec: ToolSpec, ctx: ToolContext, params: Any) -> ToolOutput:
    return await spec.run(ctx, params)
