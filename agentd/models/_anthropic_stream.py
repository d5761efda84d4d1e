"""Anthropic's Messages API, sans-io: the request body we send and the event stream it answers with.

Nothing here touches a socket: the HTTP adapter posts `build_messages_request`'s
body and feeds each server-sent event's name and data string to a
`MessagesStream`, which hands back our StreamParts. So every odd stream is a
plain unit test, and the adapter only moves bytes.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final, TypeVar

import attrs

from ._base import Finish, ModelError, ModelRequest, StreamPart, TextDelta, ToolCall, ToolResult, Turn, Usage
from ._tool_calls import MAX_TOOL_ARGUMENTS, MAX_TOOL_CALLS, finish_reason, paired_history

__all__ = ["MessagesStream", "ProviderStreamError", "build_messages_request"]

_INPUT_COUNTS: Final = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
# Anthropic's stop reasons in the project's words; the ones we have no word for
# (pause_turn, refusal, and whatever comes next) pass through unchanged.
_STOP_REASONS: Final = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
}

_ROLES: Final = frozenset({"user", "assistant", "tool"})

# A tool_use block's input is an object; arguments that are not one (the model
# wrote broken JSON, which its call's error result explains) go back under
# this key, so the model sees what it sent.
INVALID_ARGUMENTS_KEY: Final = "invalid_arguments"

# Content blocks open at once: the API streams one at a time; a stream that
# opens blocks without end must not grow our memory without bound.
_MAX_OPEN_BLOCKS: Final = 64


class ProviderStreamError(ModelError):
    """The provider reported an error mid-stream, or its stream broke the protocol.

    `error_type` is Anthropic's (e.g. "overloaded_error") when the provider sent
    an error event, and None when we found the stream itself at fault.
    """

    def __init__(self, message: str, error_type: str | None = None) -> None:
        super().__init__(f"{error_type}: {message}" if error_type else message)
        self.error_type = error_type
        self.message = message


def build_messages_request(request: ModelRequest, model: str, max_tokens: int) -> dict[str, Any]:
    """The JSON body of a streaming POST /v1/messages for `request`."""
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens}
    # The system prompt is a top-level field, not a message; an empty one is
    # left out rather than sent as an empty text.
    if request.system:
        body["system"] = request.system
    body["messages"] = _messages(request.history)
    if request.tools:
        body["tools"] = [
            {"name": tool.name, "description": tool.description, "input_schema": tool.parameters}
            for tool in request.tools
        ]
    body["stream"] = True
    return body


def _messages(history: tuple[Turn, ...]) -> list[dict[str, Any]]:
    # The API wants user and assistant to alternate, and rejects blank text, so
    # blank assistant turns (a run that produced nothing) are dropped and
    # neighbours of the same role are merged: a tool turn's results and the
    # user's next prompt make one user message, results first, as the API asks.
    for turn in history:
        if turn.role not in _ROLES:
            raise ValueError(f"a turn has an unknown role {turn.role!r}")
    merged: list[tuple[str, list[dict[str, Any]]]] = []
    for turn in paired_history(history):
        role = "assistant" if turn.role == "assistant" else "user"
        blocks = _blocks(turn)
        if not blocks:
            continue
        if merged and merged[-1][0] == role:
            merged[-1][1].extend(blocks)
        else:
            merged.append((role, blocks))
    return [{"role": role, "content": _content(blocks)} for role, blocks in merged]


def _blocks(turn: Turn) -> list[dict[str, Any]]:
    if turn.role == "user":
        return [{"type": "text", "text": turn.text}]
    if turn.role == "tool":
        return [_tool_result_block(result) for result in turn.tool_results]
    blocks: list[dict[str, Any]] = [{"type": "text", "text": turn.text}] if turn.text.strip() else []
    blocks += [
        {"type": "tool_use", "id": _block_id(call.id), "name": call.name, "input": _tool_input(call.arguments)}
        for call in turn.tool_calls
    ]
    return blocks


def _tool_result_block(result: ToolResult) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": _block_id(result.call_id)}
    if result.output:
        block["content"] = result.output  # optional, and an empty text is refused
    block["is_error"] = result.is_error
    return block


def _content(blocks: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """Plain text as one string, as it has always been sent; anything else as its blocks, blank text left out."""
    if all(block["type"] == "text" for block in blocks):
        return "\n\n".join(block["text"] for block in blocks if block["text"].strip())
    return [block for block in blocks if block["type"] != "text" or block["text"].strip()]


def _tool_input(arguments: str) -> dict[str, Any]:
    try:
        value = json.loads(arguments)
    except (ValueError, RecursionError):  # nesting deeper than the parser goes is not an object we can send either
        value = None
    return value if isinstance(value, dict) else {INVALID_ARGUMENTS_KEY: arguments}


def _block_id(call_id: str) -> str:
    # The API takes ids of letters, digits, _ and - only; calls made through
    # another provider earlier in the session may have others ("functions.view:0").
    return re.sub(r"[^A-Za-z0-9_-]", "_", call_id) or "_"


@attrs.define
class _TextBlock:
    pass


@attrs.define
class _ToolUseBlock:
    index: int
    id: str
    name: str
    input: dict[str, Any]  # as content_block_start gave it; in practice always {}
    json_parts: list[str] = attrs.Factory(list)
    size: int = 0  # characters of `json_parts`, joined

    def add_json(self, fragment: str) -> None:
        self.size += len(fragment)
        if self.size > MAX_TOOL_ARGUMENTS:
            raise ProviderStreamError(
                f"tool call {self.index} ({self.name!r}) has arguments of more than {MAX_TOOL_ARGUMENTS} characters"
            )
        self.json_parts.append(fragment)

    def tool_call(self) -> ToolCall:
        arguments = "".join(self.json_parts)
        if not arguments:
            arguments = json.dumps(self.input) if self.input else "{}"
        return ToolCall(self.id, self.name, arguments)


@attrs.define
class _IgnoredBlock:
    """A block we do not surface: thinking, server tools and their results, new kinds."""


_Block = _TextBlock | _ToolUseBlock | _IgnoredBlock


class MessagesStream:
    """Turns one response's server-sent events into StreamParts, ending with one Finish.

    Feed every event in order, then call `finish()` when the body ends. Text
    comes out as it arrives; a tool call comes out whole when its block closes,
    because its arguments stream as JSON fragments that are only valid joined;
    the Finish comes out at message_stop. A failure raises ProviderStreamError,
    and every later call raises it again.
    """

    def __init__(self) -> None:
        self._blocks: dict[int, _Block] = {}  # open content blocks, by index
        # Input comes in three counts: uncached, written to the cache, read
        # from it. The prompt's size is their sum.
        self._input = {key: 0 for key in _INPUT_COUNTS}
        self._output_tokens = 0
        self._stop_reason: str | None = None
        self._calls_made = 0
        self._finished = False
        self._failure: ProviderStreamError | None = None

    def feed(self, event: str, data: str) -> list[StreamPart]:
        """One server-sent event: its name (the `event:` field) and its data string."""
        if self._failure is not None:
            raise self._failure
        if self._finished:
            return []  # message_stop is the last word; anything after it is noise
        try:
            return self._handle(event, data)
        except ProviderStreamError as exc:
            self._failure = exc
            raise

    def finish(self) -> list[StreamPart]:
        """The response body ended."""
        if self._failure is not None:
            raise self._failure
        if not self._finished:
            self._failure = ProviderStreamError("the stream ended before the model finished")
            raise self._failure
        return []

    def _handle(self, event: str, data: str) -> list[StreamPart]:
        payload: dict[str, Any] | None = None
        if event in ("", "message"):
            # No `event:` line (SSE's default name): the data names its own type,
            # as the API always repeats it there.
            payload = _parse(data)
            named = payload.get("type")
            event = named if isinstance(named, str) else ""
        if event not in _HANDLED:
            return []  # ping, and the event types the API adds over time
        if payload is None:
            payload = _parse(data)
        match event:
            case "message_start":
                return self._message_start(payload)
            case "content_block_start":
                return self._block_start(payload)
            case "content_block_delta":
                return self._block_delta(payload)
            case "content_block_stop":
                return self._block_stop(payload)
            case "message_delta":
                return self._message_delta(payload)
            case "message_stop":
                return self._message_stop()
            case _:  # "error"
                error = _field(payload, "error", dict)
                raise ProviderStreamError(_field(error, "message", str), _field(error, "type", str))

    def _message_start(self, payload: dict[str, Any]) -> list[StreamPart]:
        # Usage may be missing (the docs' own thinking example has none).
        self._count_usage(_field(payload, "message", dict).get("usage") or {})
        return []

    def _count_usage(self, usage: object) -> None:
        # message_delta's counts are cumulative (and may now include the input
        # counts too): the last one seen of each is the total.
        for key in _INPUT_COUNTS:
            self._input[key] = _count(usage, key, self._input[key])
        self._output_tokens = _count(usage, "output_tokens", self._output_tokens)

    def _block_start(self, payload: dict[str, Any]) -> list[StreamPart]:
        index = _field(payload, "index", int)
        if index in self._blocks:
            raise _malformed(f"content block {index} started while it was open")
        if len(self._blocks) >= _MAX_OPEN_BLOCKS:
            raise _malformed(f"more than {_MAX_OPEN_BLOCKS} content blocks open at once")
        block = _field(payload, "content_block", dict)
        match block.get("type"):
            case "text":
                self._blocks[index] = _TextBlock()
                text = block.get("text") or ""
                return [TextDelta(text)] if isinstance(text, str) and text else []
            case "tool_use":
                tool_input = block.get("input") or {}
                if not isinstance(tool_input, dict):
                    raise _malformed(f"content block {index}: tool_use input is not an object")
                if self._calls_made >= MAX_TOOL_CALLS:
                    raise ProviderStreamError(f"the model made more than {MAX_TOOL_CALLS} tool calls in one turn")
                self._calls_made += 1
                self._blocks[index] = _ToolUseBlock(
                    index, _field(block, "id", str), _field(block, "name", str), tool_input
                )
            case _:
                self._blocks[index] = _IgnoredBlock()
        return []

    def _block_delta(self, payload: dict[str, Any]) -> list[StreamPart]:
        index = _field(payload, "index", int)
        block = self._open_block(index, "content_block_delta")
        delta = _field(payload, "delta", dict)
        kind = delta.get("type")
        if isinstance(block, _IgnoredBlock):
            return []
        if kind == "text_delta":
            if not isinstance(block, _TextBlock):
                raise _malformed(f"text_delta for content block {index}, which is not text")
            text = _field(delta, "text", str)
            return [TextDelta(text)] if text else []
        if kind == "input_json_delta":
            if not isinstance(block, _ToolUseBlock):
                raise _malformed(f"input_json_delta for content block {index}, which is not tool_use")
            block.add_json(_field(delta, "partial_json", str))
        # Other kinds (citations_delta, ...) add nothing we surface.
        return []

    def _block_stop(self, payload: dict[str, Any]) -> list[StreamPart]:
        index = _field(payload, "index", int)
        block = self._open_block(index, "content_block_stop")
        del self._blocks[index]
        return [block.tool_call()] if isinstance(block, _ToolUseBlock) else []

    def _message_delta(self, payload: dict[str, Any]) -> list[StreamPart]:
        stop_reason = _field(payload, "delta", dict).get("stop_reason")
        if isinstance(stop_reason, str):
            self._stop_reason = stop_reason
        self._count_usage(payload.get("usage") or {})
        return []

    def _message_stop(self) -> list[StreamPart]:
        unclosed = [index for index, block in self._blocks.items() if isinstance(block, _ToolUseBlock)]
        if unclosed:
            # Its arguments may be cut short, and a tool must not run on half of them.
            raise _malformed(f"the message stopped with tool_use block {unclosed[0]} still open")
        self._finished = True
        stop_reason = self._stop_reason or "end_turn"  # the API always sends one; be lenient if not
        usage = Usage(sum(self._input.values()), self._output_tokens)
        reason = finish_reason(_STOP_REASONS.get(stop_reason, stop_reason), self._calls_made > 0)
        return [Finish(reason, usage)]

    def _open_block(self, index: int, event: str) -> _Block:
        block = self._blocks.get(index)
        if block is None:
            # Dropping it silently would lose text or corrupt a tool call unseen.
            raise _malformed(f"{event} for content block {index}, which is not open")
        return block


_HANDLED: Final = frozenset(
    {
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
        "error",
    }
)

_T = TypeVar("_T")


def _malformed(detail: str) -> ProviderStreamError:
    return ProviderStreamError(f"malformed event: {detail}")


def _parse(data: str) -> dict[str, Any]:
    try:
        payload = json.loads(data)
    except json.JSONDecodeError as exc:
        raise _malformed(f"{exc}: {data[:200]!r}") from None
    if not isinstance(payload, dict):
        raise _malformed(f"not a JSON object: {data[:200]!r}")
    return payload


def _field(obj: dict[str, Any], key: str, kind: type[_T]) -> _T:
    value = obj.get(key)
    # bool is an int to isinstance, but never a valid index or count.
    if not isinstance(value, kind) or isinstance(value, bool):
        raise _malformed(f"{key!r} is missing or not a {kind.__name__}")
    return value


def _count(usage: object, key: str, default: int) -> int:
    if not isinstance(usage, dict) or usage.get(key) is None:
        return default
    return _field(usage, key, int)
