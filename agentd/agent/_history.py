"""A session's stored messages as the turns a provider is given."""

from __future__ import annotations

from collections.abc import Iterable

from agentd.models import ToolCall, ToolResult, Turn
from agentd.protocol import Message, ToolCallPart, ToolResultPart

__all__ = ["INTERRUPTED_RESULT", "call_part", "result_part", "turns"]

# What the model is told of a call whose result was never stored (the daemon
# stopped in the middle of it): providers refuse a call with no result.
INTERRUPTED_RESULT = "the tool call did not finish: it was interrupted"


def call_part(call: ToolCall) -> ToolCallPart:
    return ToolCallPart(call_id=call.id, name=call.name, arguments=call.arguments)


def result_part(part: ToolResultPart) -> ToolResult:
    return ToolResult(call_id=part.call_id, name=part.name, output=part.output, is_error=part.status != "ok")


def turns(messages: Iterable[Message]) -> list[Turn]:
    """The turns of `messages`, each assistant turn's calls answered by the tool turn after it."""
    out: list[Turn] = []
    pending: tuple[ToolCall, ...] = ()

    def answer(results: dict[str, ToolResult]) -> None:
        nonlocal pending
        if pending:
            out.append(
                Turn(
                    "tool",
                    "",
                    tool_results=tuple(
                        results.get(c.id) or ToolResult(c.id, c.name, INTERRUPTED_RESULT, is_error=True)
                        for c in pending
                    ),
                )
            )
            pending = ()

    for message in messages:
        if message.role == "tool":
            answer({p.call_id: result_part(p) for p in message.parts if isinstance(p, ToolResultPart)})
            continue
        answer({})
        if message.role == "assistant":
            calls = tuple(
                ToolCall(p.call_id, p.name, p.arguments) for p in message.parts if isinstance(p, ToolCallPart)
            )
            out.append(Turn("assistant", message.text, tool_calls=calls))
            pending = calls
        else:
            out.append(Turn(message.role, message.text))
    answer({})
    return out
