"""OpenAI Chat Completions streaming: request bodies, and the bytes a server sends turned into stream parts.

Every stream is the literal body a server sends, fed through SSEDecoder and
ChatCompletionsStream whole, cut in two at every byte boundary, and one byte at
a time; the parts must be the same every way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from agentd.models import (
    Finish,
    ModelError,
    ModelRequest,
    StreamPart,
    TextDelta,
    ToolCall,
    ToolDefinition,
    ToolResult,
    Turn,
    Usage,
)
from agentd.models._openai_stream import ChatCompletionsStream, ProviderStreamError, build_chat_request
from agentd.models._sse import ServerSentEvent, SSEDecoder
from agentd.models._tool_calls import MAX_TOOL_ARGUMENTS, MAX_TOOL_CALLS, NOT_RUN


def chunkings(raw: bytes) -> Iterator[list[bytes]]:
    yield [raw]
    for cut in range(1, len(raw)):
        yield [raw[:cut], raw[cut:]]
    yield [raw[i : i + 1] for i in range(len(raw))]


def drive(pieces: list[bytes], parts: list[StreamPart]) -> None:
    """What the HTTP adapter will do: body bytes → events → parts, then end of body."""
    decoder = SSEDecoder()
    stream = ChatCompletionsStream()
    for piece in pieces:
        for event in decoder.feed(piece):
            parts += stream.feed(event)
    for event in decoder.close():
        parts += stream.feed(event)
    parts += stream.finish()


def parts_every_way(raw: bytes) -> list[StreamPart]:
    expected: list[StreamPart] = []
    drive([raw], expected)
    for pieces in chunkings(raw):
        parts: list[StreamPart] = []
        drive(pieces, parts)
        assert parts == expected, pieces
    return expected


def error_every_way(raw: bytes) -> tuple[ProviderStreamError, list[StreamPart]]:
    """The error `raw` fails with, and the parts delivered before it — the same every way."""
    expected: tuple[ProviderStreamError, list[StreamPart]] | None = None
    for pieces in chunkings(raw):
        parts: list[StreamPart] = []
        with pytest.raises(ProviderStreamError) as info:
            drive(pieces, parts)
        if expected is None:
            expected = (info.value, parts)
        else:
            assert (str(info.value), parts) == (str(expected[0]), expected[1]), pieces
    assert expected is not None
    return expected


def parts_per_event(raw: bytes) -> list[list[StreamPart]]:
    """The parts each event of `raw` produces, then (last) what finish() adds."""
    stream = ChatCompletionsStream()
    decoder = SSEDecoder()
    out = [stream.feed(event) for event in decoder.feed(raw)]
    out.append(stream.finish())
    return out


def event(data: str) -> ServerSentEvent:
    return ServerSentEvent("message", data)


def insert_after_event(raw: bytes, count: int, extra: bytes) -> bytes:
    """`raw` with `extra` put after its first `count` events."""
    events = raw.split(b"\n\n")
    return b"\n\n".join(events[:count]) + b"\n\n" + extra + b"\n\n".join(events[count:])


# Bodies as OpenAI sends them (shortened ids), UTF-8 bytes and all. In the
# literals, \\" is the JSON escape \" inside an "arguments" string.

TEXT = (
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini",'
    b'"choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,'
    b'"finish_reason":null}]}\n\n'
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini",'
    b'"choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}]}\n\n'
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini",'
    b'"choices":[{"index":0,"delta":{"content":", w\xc3\xb6rld \xe2\x82\xac"},"logprobs":null,'
    b'"finish_reason":null}]}\n\n'
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini",'
    b'"choices":[{"index":0,"delta":{"content":null},"logprobs":null,"finish_reason":null}]}\n\n'
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini",'
    b'"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}\n\n'
    b"data: [DONE]\n\n"
)

TEXT_WITH_USAGE = (
    b'data: {"id":"chatcmpl-2","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini",'
    b'"choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],'
    b'"usage":null}\n\n'
    b'data: {"id":"chatcmpl-2","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini",'
    b'"choices":[{"index":0,"delta":{"content":"Hi"},"logprobs":null,"finish_reason":null}],"usage":null}\n\n'
    b'data: {"id":"chatcmpl-2","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini",'
    b'"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"length"}],"usage":null}\n\n'
    b'data: {"id":"chatcmpl-2","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini",'
    b'"choices":[],"usage":{"prompt_tokens":19,"completion_tokens":1,"total_tokens":20,'
    b'"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}\n\n'
    b"data: [DONE]\n\n"
)

# Two tool calls, their fragments interleaved by index, arguments cut mid-string
# (and mid-escape), a non-ASCII argument, then finish, usage, [DONE].
TOOL_CALLS = (
    b'data: {"id":"chatcmpl-3","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o",'
    b'"choices":[{"index":0,"delta":{"role":"assistant","content":"Let me look."},"finish_reason":null}],'
    b'"usage":null}\n\n'
    b'data: {"id":"chatcmpl-3","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o",'
    b'"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_abc","type":"function",'
    b'"function":{"name":"read_file","arguments":""}}]},"finish_reason":null}],"usage":null}\n\n'
    b'data: {"id":"chatcmpl-3","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o",'
    b'"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\\"pa"}}]},'
    b'"finish_reason":null}],"usage":null}\n\n'
    b'data: {"id":"chatcmpl-3","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o",'
    b'"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_def","type":"function",'
    b'"function":{"name":"grep","arguments":"{\\"pattern\\": \\"caf"}}]},"finish_reason":null}],"usage":null}\n\n'
    b'data: {"id":"chatcmpl-3","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o",'
    b'"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"th\\": \\"src/ma"}}]},'
    b'"finish_reason":null}],"usage":null}\n\n'
    b'data: {"id":"chatcmpl-3","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o",'
    b'"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":"\xc3\xa9 \\\\u00"}}]},'
    b'"finish_reason":null}],"usage":null}\n\n'
    b'data: {"id":"chatcmpl-3","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o",'
    b'"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":"e9\\"}"}}]},'
    b'"finish_reason":null}],"usage":null}\n\n'
    b'data: {"id":"chatcmpl-3","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o",'
    b'"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"in.py\\"}"}}]},'
    b'"finish_reason":null}],"usage":null}\n\n'
    b'data: {"id":"chatcmpl-3","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o",'
    b'"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}],"usage":null}\n\n'
    b'data: {"id":"chatcmpl-3","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o",'
    b'"choices":[],"usage":{"prompt_tokens":120,"completion_tokens":42,"total_tokens":162}}\n\n'
    b"data: [DONE]\n\n"
)

READ_FILE = ToolCall("call_abc", "read_file", '{"path": "src/main.py"}')
GREP = ToolCall("call_def", "grep", '{"pattern": "caf\u00e9 \\u00e9"}')


# --- text ----------------------------------------------------------------------------


def test_plain_text_stream_yields_text_deltas_then_finish() -> None:
    assert parts_every_way(TEXT) == [
        TextDelta("Hello"),
        TextDelta(", w\u00f6rld \u20ac"),
        Finish("stop", Usage(0, 0)),
    ]


def test_empty_and_null_content_yield_no_text_delta() -> None:
    first, _hello, _world, null, *_ = parts_per_event(TEXT)
    assert first == [] and null == []


def test_without_usage_finish_comes_at_done_with_zero_usage() -> None:
    # The server ignored include_usage: the finish_reason chunk only remembers
    # the reason, and [DONE] closes the answer.
    *_, finish_chunk, done, at_end = parts_per_event(TEXT)
    assert finish_chunk == []
    assert done == [Finish("stop", Usage(0, 0))]
    assert at_end == []


# --- usage ---------------------------------------------------------------------------


def test_usage_chunk_after_finish_reason_gives_finish_its_usage() -> None:
    assert parts_every_way(TEXT_WITH_USAGE) == [TextDelta("Hi"), Finish("length", Usage(19, 1))]


def test_finish_is_emitted_when_the_usage_chunk_arrives_not_at_done() -> None:
    *_, finish_chunk, usage_chunk, done, at_end = parts_per_event(TEXT_WITH_USAGE)
    assert finish_chunk == []
    assert usage_chunk == [Finish("length", Usage(19, 1))]
    assert done == [] and at_end == []


def test_usage_on_the_finish_reason_chunk_itself_finishes_there() -> None:
    stream = ChatCompletionsStream()
    chunk = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 3}}
    assert stream.feed(event(json.dumps(chunk))) == [Finish("stop", Usage(3, 0))]
    assert stream.feed(event("[DONE]")) == []


def test_usage_before_the_finish_reason_is_kept_for_the_finish() -> None:
    # Servers that report usage on every chunk: the latest count is the one.
    stream = ChatCompletionsStream()
    usage = {"prompt_tokens": 5, "completion_tokens": 2}
    chunk = {"choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": None}], "usage": usage}
    assert stream.feed(event(json.dumps(chunk))) == [TextDelta("x")]
    assert stream.feed(event("[DONE]")) == [Finish("stop", Usage(5, 2))]


def test_stream_ending_after_finish_reason_without_done_still_finishes() -> None:
    raw = TEXT.replace(b"data: [DONE]\n\n", b"")
    assert parts_every_way(raw)[-1] == Finish("stop", Usage(0, 0))


# --- tool calls ----------------------------------------------------------------------


def test_interleaved_tool_call_fragments_are_assembled_by_index() -> None:
    assert parts_every_way(TOOL_CALLS) == [
        TextDelta("Let me look."),
        READ_FILE,
        GREP,
        Finish("tool_calls", Usage(120, 42)),
    ]


def test_tool_calls_are_emitted_when_the_finish_reason_arrives() -> None:
    *fragments, finish_chunk, usage_chunk, done, at_end = parts_per_event(TOOL_CALLS)
    assert fragments[0] == [TextDelta("Let me look.")]
    assert all(parts == [] for parts in fragments[1:])
    assert finish_chunk == [READ_FILE, GREP]
    assert usage_chunk == [Finish("tool_calls", Usage(120, 42))]
    assert done == [] and at_end == []


def test_tool_calls_without_finish_reason_are_emitted_at_done() -> None:
    stream = ChatCompletionsStream()
    first = {"index": 1, "id": "call_2", "function": {"name": "b", "arguments": "{}"}}
    second = {"index": 0, "id": "call_1", "function": {"name": "a", "arguments": '{"x": 1}'}}
    chunk = {"choices": [{"index": 0, "delta": {"tool_calls": [first, second]}}]}
    assert stream.feed(event(json.dumps(chunk))) == []
    assert stream.feed(event("[DONE]")) == [
        ToolCall("call_1", "a", '{"x": 1}'),
        ToolCall("call_2", "b", "{}"),
        Finish("tool_calls", Usage()),
    ]


def test_tool_call_without_arguments_gets_an_empty_object() -> None:
    stream = ChatCompletionsStream()
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "now", "arguments": ""}}
    stream.feed(event(json.dumps({"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]})))
    parts = stream.feed(event(json.dumps({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})))
    assert parts == [ToolCall("call_1", "now", "{}")]


def test_tool_call_fragments_without_index_continue_the_latest_call() -> None:
    # Some OpenAI-compatible servers leave out `index`: a new id starts a call.
    stream = ChatCompletionsStream()
    fragments = [
        {"id": "call_1", "function": {"name": "a", "arguments": '{"x"'}},
        {"function": {"arguments": ": 1}"}},
        {"id": "call_2", "function": {"name": "b", "arguments": "{}"}},
    ]
    for fragment in fragments:
        stream.feed(event(json.dumps({"choices": [{"index": 0, "delta": {"tool_calls": [fragment]}}]})))
    assert stream.feed(event("[DONE]")) == [
        ToolCall("call_1", "a", '{"x": 1}'),
        ToolCall("call_2", "b", "{}"),
        Finish("tool_calls", Usage()),
    ]


def test_tool_calls_without_an_id_or_with_one_already_used_get_one_of_their_own() -> None:
    stream = ChatCompletionsStream()
    calls = [
        {"index": 0, "function": {"name": "a", "arguments": "{}"}},
        {"index": 1, "id": "call_1", "function": {"name": "b", "arguments": "{}"}},
        {"index": 2, "id": "call_1", "function": {"name": "c", "arguments": "{}"}},
        {"index": 3, "function": {"name": "d", "arguments": "{}"}},
    ]
    stream.feed(event(json.dumps({"choices": [{"index": 0, "delta": {"tool_calls": calls}}]})))
    first, second, third, fourth, _finish = stream.feed(event("[DONE]"))
    assert isinstance(first, ToolCall) and isinstance(third, ToolCall) and isinstance(fourth, ToolCall)
    assert second == ToolCall("call_1", "b", "{}")
    ids = [first.id, third.id, fourth.id]
    assert all(re.fullmatch("call_[0-9a-f]{24}", call_id) for call_id in ids) and len(set(ids)) == 3


def test_tool_call_without_a_name_is_an_error() -> None:
    stream = ChatCompletionsStream()
    call = {"index": 0, "id": "call_1", "function": {"arguments": "{}"}}
    stream.feed(event(json.dumps({"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]})))
    with pytest.raises(ProviderStreamError, match="tool call 0 has no function name"):
        stream.feed(event("[DONE]"))


def test_tool_call_fragment_of_the_wrong_shape_is_a_malformed_chunk() -> None:
    stream = ChatCompletionsStream()
    call = {"index": 0, "function": {"name": "a", "arguments": {"x": 1}}}
    with pytest.raises(ProviderStreamError, match="^malformed chunk: "):
        stream.feed(event(json.dumps({"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]})))


def chunk(delta: dict[str, object], finish_reason: str | None = None) -> str:
    """One chat.completion.chunk's JSON, as a server sends it."""
    body = {
        "id": "chatcmpl-9",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "gpt-4o",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    return json.dumps(body)


def sse(*chunks: str) -> bytes:
    """`chunks` as an event stream body, ended by [DONE]."""
    return b"".join(b"data: " + data.encode() + b"\n\n" for data in (*chunks, "[DONE]"))


def fragment(index: int, arguments: str, call_id: str | None = None, name: str | None = None) -> dict[str, object]:
    call: dict[str, object] = {"index": index, "function": {"arguments": arguments}}
    if call_id is not None:
        call.update(id=call_id, type="function")
        call["function"] = {"name": name, "arguments": arguments}
    return {"tool_calls": [call]}


def test_arguments_that_are_not_valid_json_come_through_as_the_raw_text() -> None:
    # The model's mistake, for the loop to answer with an error result: never a failed stream.
    raw = sse(
        chunk(fragment(0, '{"path": "a.py', "call_1", "view")),
        chunk(fragment(0, "' oops")),
        chunk(fragment(1, "{}", "call_2", "ls")),
        chunk({}, "tool_calls"),
    )
    assert parts_every_way(raw) == [
        ToolCall("call_1", "view", '{"path": "a.py\' oops'),
        ToolCall("call_2", "ls", "{}"),
        Finish("tool_calls", Usage()),
    ]


def test_calls_that_all_say_index_0_but_bring_a_new_id_and_name_are_separate_calls() -> None:
    # Servers that stream each call whole give every call of a turn index 0.
    raw = sse(
        chunk(fragment(0, '{"path": "a.py"}', "call_1", "view")),
        chunk(fragment(0, '{"path": "b.py"}', "call_2", "view")),
        chunk({}, "tool_calls"),
    )
    assert parts_every_way(raw) == [
        ToolCall("call_1", "view", '{"path": "a.py"}'),
        ToolCall("call_2", "view", '{"path": "b.py"}'),
        Finish("tool_calls", Usage()),
    ]


def test_a_turn_with_tool_calls_that_says_stop_finishes_with_tool_calls() -> None:
    # Some OpenAI-compatible servers end a tool-calling turn with "stop".
    raw = sse(chunk(fragment(0, "{}", "call_1", "ls")), chunk({}, "stop"))
    assert parts_every_way(raw) == [ToolCall("call_1", "ls", "{}"), Finish("tool_calls", Usage())]


def test_a_turn_with_tool_calls_cut_by_the_length_limit_keeps_its_reason() -> None:
    # The calls' arguments may be cut short: the loop must not run them.
    raw = sse(chunk(fragment(0, '{"pa', "call_1", "view")), chunk({}, "length"))
    assert parts_every_way(raw)[-1] == Finish("length", Usage())


def test_arguments_over_the_cap_fail_the_stream_naming_the_call() -> None:
    stream = ChatCompletionsStream()
    stream.feed(event(chunk(fragment(0, "", "call_1", "write"))))
    piece = "x" * (MAX_TOOL_ARGUMENTS // 4)
    for _ in range(4):
        stream.feed(event(chunk(fragment(0, piece))))  # exactly the cap: still taken
    expected = f"^tool call 0 \\('write'\\) has arguments of more than {MAX_TOOL_ARGUMENTS} characters$"
    with pytest.raises(ProviderStreamError, match=expected):
        stream.feed(event(chunk(fragment(0, "x"))))


def test_more_tool_calls_in_one_turn_than_the_cap_fail_the_stream() -> None:
    stream = ChatCompletionsStream()
    for index in range(MAX_TOOL_CALLS):
        stream.feed(event(chunk(fragment(index, "{}", f"call_{index}", "ls"))))
    with pytest.raises(ProviderStreamError, match=f"more than {MAX_TOOL_CALLS} tool calls in one turn"):
        stream.feed(event(chunk(fragment(MAX_TOOL_CALLS, "{}", "call_x", "ls"))))


# --- errors and endings --------------------------------------------------------------


def test_error_object_mid_stream_raises_with_the_providers_message_and_type() -> None:
    error_event = (
        b'data: {"error":{"message":"The server had an error while processing your request.",'
        b'"type":"server_error","param":null,"code":null}}\n\n'
    )
    raw = insert_after_event(TEXT, 2, error_event)  # after "Hello"
    error, delivered = error_every_way(raw)
    assert str(error) == "The server had an error while processing your request."
    assert (error.message, error.type, error.code) == (str(error), "server_error", None)
    assert isinstance(error, ModelError)
    assert delivered == [TextDelta("Hello")]


def test_error_object_with_a_numeric_code_and_an_error_event_name() -> None:
    stream = ChatCompletionsStream()
    error = {"error": {"message": "Rate limit reached", "type": "rate_limit_error", "code": 429}}
    with pytest.raises(ProviderStreamError) as info:
        stream.feed(ServerSentEvent("error", json.dumps(error)))
    assert (info.value.message, info.value.type, info.value.code) == ("Rate limit reached", "rate_limit_error", "429")


def test_error_given_as_a_bare_string_is_its_message() -> None:
    with pytest.raises(ProviderStreamError, match="^upstream overloaded$"):
        ChatCompletionsStream().feed(event('{"error": "upstream overloaded"}'))


def test_error_without_a_message_still_says_what_was_sent() -> None:
    with pytest.raises(ProviderStreamError, match="provider reported an error.*boom"):
        ChatCompletionsStream().feed(event('{"error": {"type": "boom"}}'))


def test_malformed_json_raises_a_malformed_chunk_error() -> None:
    raw = TEXT[: TEXT.index(b'"content":"Hello"')] + b"\n\n" + TEXT
    error, delivered = error_every_way(raw)
    assert str(error).startswith('malformed chunk: \'{"id":"chatcmpl-1"')
    assert delivered == []


def test_a_chunk_that_is_not_a_json_object_is_malformed() -> None:
    with pytest.raises(ProviderStreamError, match=r"^malformed chunk: not a JSON object: '\[1, 2\]'"):
        ChatCompletionsStream().feed(event("[1, 2]"))


def test_a_stream_cut_mid_way_is_an_error() -> None:
    raw = TEXT[: TEXT.index(b'"finish_reason":"stop"')]  # cut inside the finish chunk
    error, delivered = error_every_way(raw)
    assert str(error) == "the stream ended before the model finished"
    assert delivered == [TextDelta("Hello"), TextDelta(", w\u00f6rld \u20ac")]


def test_an_empty_body_is_an_error() -> None:
    assert str(error_every_way(b"")[0]) == "the stream ended before the model finished"


def test_done_ends_the_stream_and_later_events_are_ignored() -> None:
    junk = (
        b'data: {"choices":[{"index":0,"delta":{"content":"ghost"},"finish_reason":"length"}]}\n\n'
        b'data: {"error":{"message":"too late"}}\n\n'
        b"data: not json\n\n"
        b"data: [DONE]\n\n"
    )
    assert parts_every_way(TEXT + junk) == parts_every_way(TEXT)


def test_done_without_any_finish_reason_finishes_with_stop() -> None:
    stream = ChatCompletionsStream()
    assert stream.feed(event('{"choices":[{"index":0,"delta":{"content":"a"}}]}')) == [TextDelta("a")]
    assert stream.feed(event("[DONE]")) == [Finish("stop", Usage())]


def test_finish_after_the_finish_part_adds_nothing() -> None:
    stream = ChatCompletionsStream()
    stream.feed(event("[DONE]"))
    assert stream.finish() == []
    assert stream.finish() == []


def test_keep_alive_comments_and_empty_data_are_ignored() -> None:
    raw = b": keep-alive\n\ndata:\n\n" + TEXT
    assert parts_every_way(raw) == parts_every_way(TEXT)


def test_choices_other_than_the_first_are_ignored() -> None:
    stream = ChatCompletionsStream()
    chunk = {
        "choices": [
            {"index": 1, "delta": {"content": "other"}, "finish_reason": "length"},
            {"index": 0, "delta": {"content": "mine"}, "finish_reason": None},
        ]
    }
    assert stream.feed(event(json.dumps(chunk))) == [TextDelta("mine")]
    with pytest.raises(ProviderStreamError):
        stream.finish()  # choice 1's finish_reason does not finish choice 0


# --- the request ---------------------------------------------------------------------


def test_build_chat_request_with_history_and_tools() -> None:
    schema = {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}
    request = ModelRequest(
        system="You are a coding agent.",
        history=(
            Turn("user", "What is in main.py?"),
            Turn("assistant", "Let me look."),
            Turn("user", "Thanks."),
        ),
        tools=(ToolDefinition("read_file", "Read a file in the workspace.", schema),),
    )
    assert build_chat_request(request, "gpt-4o", 1024) == {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "You are a coding agent."},
            {"role": "user", "content": "What is in main.py?"},
            {"role": "assistant", "content": "Let me look."},
            {"role": "user", "content": "Thanks."},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
        "tools": [
            {
                "type": "function",
                "function": {"name": "read_file", "description": "Read a file in the workspace.", "parameters": schema},
            }
        ],
        "max_tokens": 1024,
    }


BROKEN_ARGUMENTS = '{"path": "a.py'  # cut short: not JSON


def test_assistant_tool_calls_and_their_results_go_back_as_tool_calls_and_tool_messages() -> None:
    history = (
        Turn("user", "Compare a.py and b.py."),
        Turn(
            "assistant",
            "Reading both.",
            tool_calls=(ToolCall("call_1", "view", '{"path": "a.py"}'), ToolCall("call_2", "view", BROKEN_ARGUMENTS)),
        ),
        Turn(
            "tool",
            "",
            tool_results=(
                ToolResult("call_1", "view", "1\tprint('a')"),
                ToolResult("call_2", "view", "the arguments are not valid JSON", is_error=True),
            ),
        ),
    )
    messages = build_chat_request(ModelRequest("sys", history), "m", None)["messages"]
    assert messages == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "Compare a.py and b.py."},
        {
            "role": "assistant",
            "content": "Reading both.",
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "view", "arguments": '{"path": "a.py"}'}},
                # As the model wrote them: its error result says what was wrong.
                {"id": "call_2", "type": "function", "function": {"name": "view", "arguments": BROKEN_ARGUMENTS}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "1\tprint('a')"},
        {"role": "tool", "tool_call_id": "call_2", "content": "the arguments are not valid JSON"},
    ]


def test_an_assistant_that_only_called_tools_has_null_content() -> None:
    history = (
        Turn("user", "ls"),
        Turn("assistant", "", tool_calls=(ToolCall("call_1", "ls", "{}"),)),
        Turn("tool", "", tool_results=(ToolResult("call_1", "ls", "a.py"),)),
    )
    assistant = build_chat_request(ModelRequest("", history), "m", None)["messages"][1]
    assert assistant["content"] is None and assistant["tool_calls"][0]["id"] == "call_1"


def test_results_go_back_in_call_order_and_a_call_without_one_gets_an_error_result() -> None:
    calls = (ToolCall("call_a", "view", "{}"), ToolCall("call_b", "ls", "{}"), ToolCall("call_c", "grep", "{}"))
    history = (
        Turn("user", "go"),
        Turn("assistant", "", tool_calls=calls),
        # Out of order, one missing, one that answers no call of the turn.
        Turn(
            "tool",
            "",
            tool_results=(
                ToolResult("call_c", "grep", "c"),
                ToolResult("call_zzz", "view", "stray"),
                ToolResult("call_a", "view", "a"),
            ),
        ),
    )
    messages = build_chat_request(ModelRequest("", history), "m", None)["messages"]
    assert messages[2:] == [
        {"role": "tool", "tool_call_id": "call_a", "content": "a"},
        {"role": "tool", "tool_call_id": "call_b", "content": NOT_RUN},
        {"role": "tool", "tool_call_id": "call_c", "content": "c"},
    ]


def test_calls_cut_off_before_their_results_still_get_one_each_before_the_next_prompt() -> None:
    # A run ended between the model's calls and their results: the API refuses
    # calls left unanswered, which would fail every later prompt of the session.
    history = (
        Turn("user", "go"),
        Turn("assistant", "Looking.", tool_calls=(ToolCall("call_1", "view", "{}"),)),
        Turn("user", "never mind"),
    )
    messages = build_chat_request(ModelRequest("", history), "m", None)["messages"]
    assert [message["role"] for message in messages] == ["user", "assistant", "tool", "user"]
    assert messages[2] == {"role": "tool", "tool_call_id": "call_1", "content": NOT_RUN}


def test_a_tool_turn_that_answers_no_calls_is_left_out() -> None:
    history = (
        Turn("user", "hi"),
        Turn("assistant", "Hello."),
        Turn("tool", "", tool_results=(ToolResult("x", "ls", "a"),)),
    )
    messages = build_chat_request(ModelRequest("", history), "m", None)["messages"]
    assert messages == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello."}]


def test_build_chat_request_leaves_out_tools_max_tokens_and_an_empty_system() -> None:
    body = build_chat_request(ModelRequest(system="", history=(Turn("user", "hi"),)), "m", None)
    assert body == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    json.dumps(body)  # the body is plain JSON


def test_build_chat_request_names_the_cap_as_the_server_knows_it() -> None:
    request = ModelRequest(system="", history=(Turn("user", "hi"),))
    body = build_chat_request(request, "o4-mini", 2048, max_tokens_field="max_completion_tokens")
    assert body["max_completion_tokens"] == 2048 and "max_tokens" not in body


def test_build_chat_request_refuses_an_unknown_role() -> None:
    with pytest.raises(ValueError, match="'system'"):
        build_chat_request(ModelRequest(system="", history=(Turn("system", "x"),)), "m", None)
