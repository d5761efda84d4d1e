"""Calling the workspace tools as the agent loop does: the model's JSON text in, a result out."""

from __future__ import annotations

import json
from typing import Any

from agentd.tools import TOOLS, ToolContext, ToolLimits, ToolOutput, parse_arguments, run_tool


class RecordingChanges:
    """The Changes interface, keeping the calls in order so a test can read them."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def before_write(self, path: str) -> None:
        self.calls.append(("before", path))

    async def after_write(self, path: str) -> None:
        self.calls.append(("after", path))


def context(root: str, **limits: Any) -> ToolContext:
    return ToolContext(root, RecordingChanges(), ToolLimits(**limits))


async def call(ctx: ToolContext, name: str, **arguments: Any) -> ToolOutput:
    spec = TOOLS[name]
    return await run_tool(spec, ctx, parse_arguments(spec, json.dumps(arguments)))


def recorded(ctx: ToolContext) -> list[tuple[str, str]]:
    assert isinstance(ctx.changes, RecordingChanges)
    return ctx.changes.calls
