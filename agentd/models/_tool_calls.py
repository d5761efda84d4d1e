"""What both providers' wire formats agree on about tool calls: how much of them a stream may
accumulate, when a turn that made calls is waiting on them, and a history whose every call has
its result.
"""

from __future__ import annotations

from typing import Final

from ._base import ToolResult, Turn

__all__ = [
    "MAX_TOOL_ARGUMENTS",
    "MAX_TOOL_CALLS",
    "NOT_RUN",
    "finish_reason",
    "paired_history",
]

# A tool call's arguments are held whole until the call is complete, so a
# stream that never ends one, or makes calls without end, must not grow our
# memory without bound. Both are far above what a model sends a workspace tool.
MAX_TOOL_ARGUMENTS: Final = 1024 * 1024  # characters of one call's arguments
MAX_TOOL_CALLS: Final = 128  # calls in one model turn

# The result a call gets when the history holds none for it (a run cut off
# between the model's calls and their results).
NOT_RUN: Final = "the tool call was not run: its run ended first"


def finish_reason(reason: str, made_calls: bool) -> str:
    """The Finish reason of a turn the provider ended with `reason` (already in our words).

    A turn that made tool calls and stopped normally is waiting on them: some
    OpenAI-compatible servers say "stop" there rather than "tool_calls". A turn
    cut short ("length") or refused keeps its reason, so half-streamed calls
    are not run.
    """
    return "tool_calls" if made_calls and reason == "stop" else reason


def paired_history(history: tuple[Turn, ...]) -> list[Turn]:
    """`history` with each assistant turn's tool calls followed by a tool turn answering each, in call order.

    Both APIs refuse a conversation where a call has no result right after it,
    or a result answers no call, and such a history would fail every later
    prompt of the session. A missing result becomes an error result saying the
    call was not run; a result that answers no call of the turn before it is
    dropped; a tool turn that follows no calls is dropped.
    """
    turns: list[Turn] = []
    for position, turn in enumerate(history):
        if turn.role == "tool":
            continue  # each one is taken with the assistant turn it answers
        turns.append(turn)
        if turn.role != "assistant" or not turn.tool_calls:
            continue
        following = history[position + 1] if position + 1 < len(history) else None
        given = following.tool_results if following is not None and following.role == "tool" else ()
        by_id = {result.call_id: result for result in given}
        results = tuple(
            by_id.get(call.id) or ToolResult(call.id, call.name, NOT_RUN, is_error=True) for call in turn.tool_calls
        )
        turns.append(Turn("tool", "", tool_results=results))
    return turns
