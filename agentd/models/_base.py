"""The provider interface: what a model is asked, and the stream it answers with.

Shaped for real streaming LLM providers with tools: a request carries the
session's history, a system prompt and tool definitions; the answer is an async
stream of text deltas and tool calls, closed by one Finish. A provider raises
ModelError (or any exception) to fail the run; cancellation is trio's, so a
provider only has to be cancellable at its awaits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

import attrs

__all__ = [
    "Finish",
    "Model",
    "ModelError",
    "ModelRequest",
    "Retrying",
    "StreamPart",
    "TextDelta",
    "ToolCall",
    "ToolDefinition",
    "ToolResult",
    "Turn",
    "UnknownModelError",
    "Usage",
]


class ModelError(Exception):
    """A model failed the run; the message is shown to the user."""


class UnknownModelError(ModelError):
    pass


@attrs.frozen
class ToolCall:
    """A tool call the model made: `arguments` is JSON text, as providers stream it (maybe not valid)."""

    id: str
    name: str
    arguments: str


@attrs.frozen
class ToolResult:
    """What a tool call gave back, as the model is told it."""

    call_id: str
    name: str
    output: str
    is_error: bool = False


@attrs.frozen
class Turn:
    """One past message of the conversation, as a provider sees it.

    A "user" turn has text; an "assistant" turn has text and the tool calls it
    made (maybe none); a "tool" turn has the results of the previous assistant
    turn's calls, in the order of the calls, and no text. A provider maps these
    to its own wire shape (OpenAI: one `role: "tool"` message per result;
    Anthropic: `tool_result` blocks in the next user message).
    """

    role: str  # "user" | "assistant" | "tool"
    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_results: tuple[ToolResult, ...] = ()


@attrs.frozen
class ToolDefinition:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON Schema


@attrs.frozen
class ModelRequest:
    system: str
    # Ends with the user's prompt; only the prompt for a model that does not use history.
    history: tuple[Turn, ...]
    tools: tuple[ToolDefinition, ...] = ()

    @property
    def prompt(self) -> str:
        """The run's prompt: the text of the last user turn."""
        for turn in reversed(self.history):
            if turn.role == "user":
                return turn.text
        return ""

    @property
    def step(self) -> int:
        """Which model turn of the run this request is: 1 for the first, +1 after each tool turn."""
        n = 1
        for turn in reversed(self.history):
            if turn.role == "user":
                break
            if turn.role == "tool":
                n += 1
        return n


@attrs.frozen
class TextDelta:
    text: str


@attrs.frozen
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


@attrs.frozen
class Finish:
    # "stop" | "length" | "tool_calls" | "refusal" | ...: "tool_calls" when the
    # turn's ToolCalls are to be run and their results sent back.
    reason: str
    usage: Usage = Usage()


@attrs.frozen
class Retrying:
    """The provider refused or failed for now; the model waits `delay` seconds and tries again.

    Not part of the answer: the session agent reports it to the run's watchers.
    """

    attempt: int  # the attempt about to be made: 2 for the first retry
    delay: float
    reason: str


StreamPart = TextDelta | ToolCall | Finish | Retrying


class Model(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def uses_history(self) -> bool:
        """Whether the model reads the conversation before the prompt.

        False: its request's history holds the prompt alone, and the session's
        messages are not read for it at all.
        """
        ...

    def stream(self, request: ModelRequest) -> AsyncIterator[StreamPart]:
        """Answer `request`; the iterator ends after yielding one Finish."""
        ...
