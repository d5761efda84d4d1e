"""OpenAI Chat Completions streaming, sans-io: the request body out, stream parts in.

`build_chat_request` makes the JSON body of a streaming `POST /chat/completions`;
`ChatCompletionsStream` turns the response's server-sent events (see `_sse`)
into the provider interface's TextDelta / ToolCall / Finish parts. Neither
touches the network, so every shape a server streams is a unit test.

Shape of the stream: each `data:` event is a `chat.completion.chunk`; text
arrives in `choices[0].delta.content`; a tool call arrives in pieces under
`choices[0].delta.tool_calls[]`, keyed by `index`; `finish_reason` is set on
the choice's last chunk; with `stream_options.include_usage` one more chunk
follows with `choices: []` and the token `usage`; `data: [DONE]` ends it.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

import attrs

from ._base import Finish, ModelError, ModelRequest, StreamPart, TextDelta, ToolCall, Turn, Usage
from ._sse import ServerSentEvent
from ._tool_calls import MAX_TOOL_ARGUMENTS, MAX_TOOL_CALLS, finish_reason, paired_history

__all__ = ["ChatCompletionsStream", "ProviderStreamError", "build_chat_request"]

_ROLES = frozenset({"user", "assistant", "tool"})


class ProviderStreamError(ModelError):
    """The provider's stream failed: an error object, a malformed chunk, or a cut."""

    def __init__(self, message: str, *, type: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.type = type  # the provider's error type, e.g. "server_error"
        self.code = code


def build_chat_request(
    request: ModelRequest, model: str, max_tokens: int | None, *, max_tokens_field: str = "max_tokens"
) -> dict[str, Any]:
    """The JSON body of a streaming Chat Completions request for `request`.

    `max_tokens_field`: which name the server knows the cap by
    (`ProviderConfig.max_tokens_field`).
    """
    messages: list[dict[str, Any]] = []
    if request.system:
        messages.append({"role": "system", "content": request.system})
    for turn in request.history:
        if turn.role not in _ROLES:
            raise ValueError(f"a turn's role must be user, assistant or tool, not {turn.role!r}")
    for turn in paired_history(request.history):
        messages.extend(_messages(turn))
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "stream": True,
        # Without this the stream carries no token counts at all.
        "stream_options": {"include_usage": True},
    }
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {"name": tool.name, "description": tool.description, "parameters": tool.parameters},
            }
            for tool in request.tools
        ]
    if max_tokens is not None:
        body[max_tokens_field] = max_tokens
    return body


def _messages(turn: Turn) -> list[dict[str, Any]]:
    if turn.role == "tool":
        # One message per result, each naming the call it answers. The API has
        # no error flag: an error is told by its text.
        return [
            {"role": "tool", "tool_call_id": result.call_id, "content": result.output} for result in turn.tool_results
        ]
    if turn.role == "assistant" and turn.tool_calls:
        return [
            {
                "role": "assistant",
                # The API wants null, not "", for an assistant that only called tools.
                "content": turn.text or None,
                "tool_calls": [
                    # The arguments go back as the model wrote them, valid JSON or not:
                    # the call's error result tells the model what was wrong with them.
                    {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
                    for call in turn.tool_calls
                ],
            }
        ]
    return [{"role": turn.role, "content": turn.text}]


@attrs.define
class _PendingToolCall:
    index: int
    id: str
    name: str
    arguments: list[str] = attrs.Factory(list)
    size: int = 0  # characters of `arguments`, joined

    def add_arguments(self, fragment: str) -> None:
        self.size += len(fragment)
        if self.size > MAX_TOOL_ARGUMENTS:
            named = f" ({self.name!r})" if self.name else ""
            raise ProviderStreamError(
                f"tool call {self.index}{named} has arguments of more than {MAX_TOOL_ARGUMENTS} characters"
            )
        self.arguments.append(fragment)


class ChatCompletionsStream:
    """Turns one response's events into stream parts, ending with exactly one Finish.

    Only choice 0 is read: the request never asks for `n` > 1.
    """

    def __init__(self) -> None:
        self._tool_calls: list[_PendingToolCall] = []  # not yet emitted, in the order they began
        self._by_index: dict[int, _PendingToolCall] = {}  # the call a fragment with this index continues
        self._calls_made = 0
        self._ids: set[str] = set()  # of the calls emitted
        self._finish_reason: str | None = None
        self._usage: Usage | None = None
        self._finished = False  # Finish was emitted; nothing more comes out

    def feed(self, event: ServerSentEvent) -> list[StreamPart]:
        """Take the next event; return the parts it completes.

        Raises ProviderStreamError for an error object or a malformed chunk.
        """
        if self._finished:
            # After [DONE] or the Finish, the answer is complete: whatever a
            # server sends after it is not part of it.
            return []
        data = event.data
        if data == "[DONE]":
            return self._end()
        if not data.strip():
            return []  # an empty `data:` carries no chunk; treat it as a keep-alive
        chunk = _parse_chunk(data)
        error = chunk.get("error")
        if error:
            raise _provider_error(error)

        parts: list[StreamPart] = []
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict) or choice.get("index") not in (0, None):
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                content = delta.get("content")
                if content and isinstance(content, str):
                    parts.append(TextDelta(content))
                tool_calls = delta.get("tool_calls")
                if isinstance(tool_calls, list):
                    for fragment in tool_calls:
                        self._add_tool_call_fragment(fragment)
            reason = choice.get("finish_reason")
            if reason and isinstance(reason, str):
                self._finish_reason = reason
                parts.extend(self._complete_tool_calls())

        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self._usage = Usage(_count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens")))
            # Usage comes after the finish_reason chunk (or on it): that is the
            # last thing the answer needs, so finish now rather than at [DONE].
            if self._finish_reason is not None:
                self._finished = True
                parts.append(Finish(finish_reason(self._finish_reason, self._calls_made > 0), self._usage))
        return parts

    def finish(self) -> list[StreamPart]:
        """The body ended; return the last parts.

        A stream that ends after a finish_reason but without [DONE] or usage
        is complete enough; one that ends before any finish_reason was cut, and
        raises ProviderStreamError.
        """
        if self._finished:
            return []
        if self._finish_reason is None:
            raise ProviderStreamError("the stream ended before the model finished")
        return self._end()

    def _end(self) -> list[StreamPart]:
        parts: list[StreamPart] = list(self._complete_tool_calls())
        # [DONE] without a finish_reason: the server says the answer is
        # complete but not why.
        reason = finish_reason(self._finish_reason or "stop", self._calls_made > 0)
        parts.append(Finish(reason, self._usage or Usage()))
        self._finished = True
        return parts

    def _add_tool_call_fragment(self, fragment: object) -> None:
        if not isinstance(fragment, dict):
            raise ProviderStreamError(f"malformed chunk: a tool call is not an object: {_excerpt(fragment)}")
        function = fragment.get("function")
        if function is None:
            function = {}
        elif not isinstance(function, dict):
            raise ProviderStreamError(f"malformed chunk: a tool call's function is not an object: {_excerpt(fragment)}")
        index = fragment.get("index")
        call_id = fragment.get("id")
        name = function.get("name")
        arguments = function.get("arguments")
        if (
            not (index is None or (isinstance(index, int) and not isinstance(index, bool)))
            or not (call_id is None or isinstance(call_id, str))
            or not (name is None or isinstance(name, str))
            or not (arguments is None or isinstance(arguments, str))
        ):
            raise ProviderStreamError(f"malformed chunk: bad tool call fragment: {_excerpt(fragment)}")
        latest = self._tool_calls[-1] if self._tool_calls else None
        if index is None:
            # Some OpenAI-compatible servers omit `index`: a new id starts the
            # next call, anything else continues the latest one.
            if latest is None:
                index = 0
            elif call_id and call_id != latest.id:
                index = latest.index + 1
            else:
                index = latest.index
        pending = self._by_index.get(index)
        if pending is not None and call_id and name and pending.id and call_id != pending.id:
            # A new id and name where a call already is: servers that stream
            # each call whole and give every one index 0 (Ollama has) mean a
            # new call, not a rename.
            pending = None
        if pending is None:
            if self._calls_made >= MAX_TOOL_CALLS:
                raise ProviderStreamError(f"the model made more than {MAX_TOOL_CALLS} tool calls in one turn")
            self._calls_made += 1
            pending = _PendingToolCall(index, call_id or "", name or "")
            self._tool_calls.append(pending)
            self._by_index[index] = pending
        else:
            # Only `arguments` is streamed in pieces; a repeated id or name is not appended.
            if call_id and not pending.id:
                pending.id = call_id
            if name and not pending.name:
                pending.name = name
        if arguments:
            pending.add_arguments(arguments)

    def _complete_tool_calls(self) -> list[ToolCall]:
        calls: list[ToolCall] = []
        # By index; calls that share one (see above) in the order they began.
        for pending in sorted(self._tool_calls, key=lambda call: call.index):
            if not pending.name:
                raise ProviderStreamError(f"malformed chunk: tool call {pending.index} has no function name")
            call_id = pending.id
            if not call_id or call_id in self._ids:
                # Ids pair a call with its result, here and in the run's record
                # of its steps: a server that sends none, or one twice, still
                # needs one of the call's own.
                call_id = f"call_{secrets.token_hex(12)}"
            self._ids.add(call_id)
            calls.append(
                ToolCall(
                    id=call_id,
                    name=pending.name,
                    # A call without arguments streams "" — which is not JSON.
                    arguments="".join(pending.arguments) or "{}",
                )
            )
        self._tool_calls.clear()
        self._by_index.clear()
        return calls


def _parse_chunk(data: str) -> dict[str, Any]:
    try:
        chunk = json.loads(data)
    except ValueError as exc:
        raise ProviderStreamError(f"malformed chunk: {_excerpt(data)} ({exc})") from None
    if not isinstance(chunk, dict):
        raise ProviderStreamError(f"malformed chunk: not a JSON object: {_excerpt(data)}")
    return chunk


def _provider_error(error: object) -> ProviderStreamError:
    if isinstance(error, str):
        return ProviderStreamError(error)
    if not isinstance(error, dict):
        return ProviderStreamError(f"the provider reported an error: {_excerpt(error)}")
    message = error.get("message")
    kind = error.get("type")
    code = error.get("code")
    return ProviderStreamError(
        message if isinstance(message, str) and message else f"the provider reported an error: {_excerpt(error)}",
        type=kind if isinstance(kind, str) else None,
        code=None if code is None else str(code),
    )


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _excerpt(value: object, limit: int = 200) -> str:
    """Enough of what the server sent to recognise it in an error message."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return repr(text if len(text) <= limit else text[:limit] + "…")
