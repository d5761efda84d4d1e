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
    "Turn",
    "UnknownModelError",
    "Usage",
]


class ModelError(Exception):
    """A model failed the run; the message is shown to the user."""


class UnknownModelError(ModelError):
    pass


@attrs.frozen
class Turn:
    """One past message of the conversation, as a provider sees it."""

    role: str  # "user" | "assistant" | "tool"
    text: str


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
        return self.history[-1].text if self.history else ""


@attrs.frozen
class TextDelta:
    text: str


@attrs.frozen
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as providers stream it


@attrs.frozen
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


@attrs.frozen
class Finish:
    reason: str  # "stop" | "length" | "tool_calls" | ...
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
