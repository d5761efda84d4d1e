"""The table of tools, and the two calls the agent loop makes: parse a call's arguments, run it."""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from agentd.models import ToolDefinition

from ._base import ToolContext, ToolError, ToolOutput, ToolSpec
from ._bash import BASH
from ._edit import EDIT
from ._glob import GLOB
from ._grep import GREP
from ._ls import LS
from ._schema import json_schema
from ._view import VIEW
from ._write import WRITE

__all__ = ["TOOLS", "definitions", "run_tool"]

log = logging.getLogger(__name__)

# In the order the model is shown them: reading first.
TOOLS: Mapping[str, ToolSpec] = MappingProxyType(
    {spec.name: spec for spec in (VIEW, LS, GLOB, GREP, WRITE, EDIT, BASH)}
)


@functools.cache
def _builtin_definitions() -> tuple[ToolDefinition, ...]:
    return tuple(ToolDefinition(spec.name, spec.description, json_schema(spec.params)) for spec in TOOLS.values())


def definitions(tools: Mapping[str, ToolSpec] = TOOLS) -> tuple[ToolDefinition, ...]:
    """Every tool of `tools` as a model is told of it, its parameters a JSON Schema."""
    if tools is TOOLS:
        return _builtin_definitions()
    built = {d.name: d for d in _builtin_definitions()}
    return tuple(
        built[name] if name in built and tools[name] is TOOLS[name] else _definition(spec)
        for name, spec in tools.items()
    )


def _definition(spec: ToolSpec) -> ToolDefinition:
    schema = dict(spec.schema) if spec.schema is not None else json_schema(spec.params)
    return ToolDefinition(spec.name, spec.description, schema)


def _only_tool_errors(group: BaseExceptionGroup[BaseException]) -> ToolError | None:
    """A tool's nursery wraps the ToolError it raised in a group: the first one, when that is all it holds."""
    matched, rest = group.split(ToolError)
    if matched is None or rest is not None:
        return None
    first: BaseException = matched
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    assert isinstance(first, ToolError)
    return first


async def run_tool(spec: ToolSpec, ctx: ToolContext, params: Any) -> ToolOutput:
    """Run one call. A ToolError is the model's result; any other failure becomes one, and is logged.

    Cancellation (and any BaseException) goes through untouched.
    """
    try:
        return await spec.run(ctx, params)
    except ToolError:
        raise
    except Exception as exc:
        if isinstance(exc, ExceptionGroup) and (tool_error := _only_tool_errors(exc)) is not None:
            raise tool_error from None
        log.exception("tool %s failed", spec.name)
        raise ToolError(f"internal error in tool {spec.name}: {type(exc).__name__}: {exc}") from exc
