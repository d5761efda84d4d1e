"""A session's stored messages as the turns a provider is given.

A plain mapping: that every call has its result, as the providers' APIs
require, is seen to in one place, by the providers (`models._tool_calls.paired_history`).
"""

from __future__ import annotations

from collections.abc import Iterable

from agentd.models import ToolCall, ToolResult, Turn
from agentd.protocol import Message, ToolCallPart, ToolResultPart

__all__ = ["call_part", "result_part", "turns"]


def call_part(call: ToolCall) -> ToolCallPart:
    return ToolCallPart(call_id=call.id, name=call.name, arguments=call.arguments)


def result_part(part: ToolResultPart) -> ToolResult:
    return ToolResult(call_id=part.call_id, name=part.name, output=part.output, is_error=part.status != "ok")


def turns(messages: Iterable[Message]) -> list[Turn]:
    """One turn per message: an assistant's with its calls, a tool message's with its results."""
    out: list[Turn] = []
    for message in messages:
        if message.role == "tool":
            results = tuple(result_part(p) for p in message.parts if isinstance(p, ToolResultPart))
            out.append(Turn("tool", "", tool_results=results))
        elif message.role == "assistant":
            calls = tuple(
                ToolCall(p.call_id, p.name, p.arguments) for p in message.parts if isinstance(p, ToolCallPart)
            )
            out.append(Turn("assistant", message.text, tool_calls=calls))
        else:
            out.append(Turn(message.role, message.text))
    return out
