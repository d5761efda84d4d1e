"""Anthropic's Messages API without a network: the request body, and the event stream event by event.

The transcripts, here and in transcripts.py, are the API's own examples from its
streaming documentation (platform.claude.com/docs/en/build-with-claude/streaming),
byte for byte where they are quoted whole.
"""

# The transcripts keep the API's one-event-per-line layout, however long the line.
# ruff: noqa: E501

from __future__ import annotations

import json

import pytest
from transcripts import ANTHROPIC_MESSAGE_END as MESSAGE_END
from transcripts import ANTHROPIC_MESSAGE_START as MESSAGE_START
from transcripts import ANTHROPIC_OVERLOADED as OVERLOADED
from transcripts import ANTHROPIC_TEXT_BLOCK as TEXT_BLOCK
from transcripts import ANTHROPIC_TEXT_STREAM as BASIC_TEXT_STREAM
from transcripts import ANTHROPIC_TOOL_USE_STREAM as TOOL_USE_STREAM

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
from agentd.models._anthropic_stream import (
    INVALID_ARGUMENTS_KEY,
    MessagesStream,
    ProviderStreamError,
    build_messages_request,
)
from agentd.models._tool_calls import MAX_TOOL_ARGUMENTS, MAX_TOOL_CALLS, NOT_RUN


def events(transcript: str) -> list[tuple[str, str]]:
    """A documentation transcript ("event: x" / "data: {...}" blocks) as (event, data) pairs."""
    pairs = []
    for block in transcript.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.strip().splitlines())
        pairs.append((fields["event"], fields["data"]))
    return pairs


def feed_all(stream: MessagesStream, transcript: str) -> list[StreamPart]:
    parts: list[StreamPart] = []
    for event, data in events(transcript):
        parts += stream.feed(event, data)
    return parts


def run(transcript: str) -> list[StreamPart]:
    stream = MessagesStream()
    parts = feed_all(stream, transcript)
    parts += stream.finish()
    return parts


GET_WEATHER_ARGUMENTS = '{"location": "San Francisco, CA", "unit": "fahrenheit"}'


def tool_use_block(index: int, tool_id: str, name: str, *fragments: str) -> str:
    """A tool_use block as the API streams it: start, an empty fragment, the fragments, stop."""
    lines = [
        "event: content_block_start",
        "data: "
        + json.dumps(
            {
                "type": "content_block_start",
                "index": index,
                "content_block": {"type": "tool_use", "id": tool_id, "name": name, "input": {}},
            }
        ),
        "",
    ]
    for fragment in ("", *fragments):
        delta = {"type": "input_json_delta", "partial_json": fragment}
        lines += [
            "event: content_block_delta",
            "data: " + json.dumps({"type": "content_block_delta", "index": index, "delta": delta}),
            "",
        ]
    lines += ["event: content_block_stop", f'data: {{"type":"content_block_stop","index":{index}}}', ""]
    return "\n" + "\n".join(lines) + "\n"


def message_end(stop_reason: str, output_tokens: int) -> str:
    delta = {"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None}}
    delta["usage"] = {"output_tokens": output_tokens}
    return f"""
event: message_delta
data: {json.dumps(delta)}

event: message_stop
data: {{"type":"message_stop"}}
"""


# --- text --------------------------------------------------------------------------


def test_text_stream_yields_each_delta_then_one_finish() -> None:
    assert run(BASIC_TEXT_STREAM) == [TextDelta("Hello"), TextDelta("!"), Finish("stop", Usage(25, 15))]


CACHED_START = """
event: message_start
data: {"type":"message_start","message":{"id":"msg_01Cache","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5-20250929","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":12,"cache_creation_input_tokens":300,"cache_read_input_tokens":4000,"output_tokens":1}}}
"""


def test_prompt_tokens_add_the_cached_input_to_the_uncached() -> None:
    # The prompt's size is all three input counts: only `input_tokens` is the part past the cache.
    assert run(CACHED_START + TEXT_BLOCK + message_end("end_turn", 57))[-1] == Finish("stop", Usage(4312, 57))


def test_cumulative_input_counts_in_message_delta_replace_those_of_message_start() -> None:
    end = """
event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"input_tokens":20,"cache_creation_input_tokens":null,"cache_read_input_tokens":4000,"output_tokens":57}}

event: message_stop
data: {"type":"message_stop"}
"""
    # input_tokens grew (12 -> 20); a null count keeps what message_start said.
    assert run(CACHED_START + TEXT_BLOCK + end)[-1] == Finish("stop", Usage(4320, 57))


def test_text_comes_out_as_each_delta_arrives() -> None:
    stream = MessagesStream()
    feed_all(stream, MESSAGE_START)
    start, ping, hello, bang, stop = events(TEXT_BLOCK)
    assert stream.feed(*start) == []
    assert stream.feed(*ping) == []
    assert stream.feed(*hello) == [TextDelta("Hello")]
    assert stream.feed(*bang) == [TextDelta("!")]
    assert stream.feed(*stop) == []


def test_empty_text_deltas_are_skipped() -> None:
    empty = """
event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": ""}}
"""
    stream = MessagesStream()
    feed_all(stream, MESSAGE_START)
    feed_all(stream, TEXT_BLOCK.split("event: content_block_stop")[0])
    assert feed_all(stream, empty) == []


def test_text_already_in_content_block_start_is_emitted() -> None:
    start = """
event: content_block_start
data: {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": "Hi"}}
"""
    stream = MessagesStream()
    feed_all(stream, MESSAGE_START)
    assert feed_all(stream, start) == [TextDelta("Hi")]


# --- tool use ----------------------------------------------------------------------


def test_tool_use_input_split_mid_string_becomes_one_tool_call_after_the_text() -> None:
    parts = run(TOOL_USE_STREAM)
    text = "Okay, let's check the weather for San Francisco, CA:"
    assert "".join(part.text for part in parts if isinstance(part, TextDelta)) == text
    assert parts[-2:] == [
        ToolCall("toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather", GET_WEATHER_ARGUMENTS),
        Finish("tool_calls", Usage(472, 89)),
    ]
    assert all(isinstance(part, TextDelta) for part in parts[:-2])
    assert json.loads(GET_WEATHER_ARGUMENTS) == {"location": "San Francisco, CA", "unit": "fahrenheit"}


def test_tool_call_is_emitted_at_its_content_block_stop_not_before() -> None:
    stream = MessagesStream()
    pairs = events(TOOL_USE_STREAM)
    stop_at = pairs.index(("content_block_stop", '{"type":"content_block_stop","index":1}'))
    for pair in pairs[:stop_at]:
        assert not any(isinstance(part, ToolCall) for part in stream.feed(*pair))
    assert stream.feed(*pairs[stop_at]) == [
        ToolCall("toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather", GET_WEATHER_ARGUMENTS)
    ]


def test_two_tool_use_blocks_become_two_tool_calls_in_order() -> None:
    transcript = (
        MESSAGE_START
        + tool_use_block(0, "toolu_01A", "read_file", '{"path": "READ', 'ME.md"}')
        + tool_use_block(1, "toolu_01B", "list_dir", '{"path":', ' "src"}')
        + message_end("tool_use", 61)
    )
    assert run(transcript) == [
        ToolCall("toolu_01A", "read_file", '{"path": "README.md"}'),
        ToolCall("toolu_01B", "list_dir", '{"path": "src"}'),
        Finish("tool_calls", Usage(25, 61)),
    ]


def test_tool_use_without_input_deltas_has_empty_object_arguments() -> None:
    no_deltas = """
event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_01C","name":"get_time","input":{}}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}
"""
    assert run(MESSAGE_START + no_deltas + message_end("tool_use", 30)) == [
        ToolCall("toolu_01C", "get_time", "{}"),
        Finish("tool_calls", Usage(25, 30)),
    ]


def test_tool_use_with_only_an_empty_fragment_has_empty_object_arguments() -> None:
    transcript = MESSAGE_START + tool_use_block(0, "toolu_01D", "get_time") + message_end("tool_use", 30)
    assert run(transcript)[0] == ToolCall("toolu_01D", "get_time", "{}")


def test_tool_use_left_open_at_message_stop_is_an_error() -> None:
    start = """
event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_01E","name":"rm","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\\"path\\": \\"/tmp"}}
"""
    stream = MessagesStream()
    feed_all(stream, MESSAGE_START + start)
    with pytest.raises(ProviderStreamError, match="tool_use block 0 still open"):
        feed_all(stream, message_end("max_tokens", 4096))


def test_tool_use_input_that_is_not_valid_json_comes_through_as_the_raw_text() -> None:
    # The model's mistake, for the loop to answer with an error result: never a failed stream.
    transcript = (
        MESSAGE_START
        + tool_use_block(0, "toolu_01A", "view", '{"path": ', '"a.py" oops')
        + tool_use_block(1, "toolu_01B", "ls", "{}")
        + message_end("tool_use", 20)
    )
    assert run(transcript) == [
        ToolCall("toolu_01A", "view", '{"path": "a.py" oops'),
        ToolCall("toolu_01B", "ls", "{}"),
        Finish("tool_calls", Usage(25, 20)),
    ]


def test_a_turn_with_tool_use_that_says_end_turn_finishes_with_tool_calls() -> None:
    transcript = MESSAGE_START + tool_use_block(0, "toolu_01A", "ls", "{}") + message_end("end_turn", 20)
    assert run(transcript)[-1] == Finish("tool_calls", Usage(25, 20))


def test_tool_use_arguments_over_the_cap_fail_the_stream_naming_the_call() -> None:
    piece = "x" * (MAX_TOOL_ARGUMENTS // 4)
    stream = MessagesStream()
    opened = tool_use_block(3, "toolu_01A", "write", *[piece] * 4).split("event: content_block_stop")[0]
    feed_all(stream, MESSAGE_START + opened)  # exactly the cap: still taken
    more = {"type": "content_block_delta", "index": 3, "delta": {"type": "input_json_delta", "partial_json": "x"}}
    expected = f"^tool call 3 \\('write'\\) has arguments of more than {MAX_TOOL_ARGUMENTS} characters$"
    with pytest.raises(ProviderStreamError, match=expected):
        stream.feed("content_block_delta", json.dumps(more))


def test_more_tool_use_blocks_in_one_message_than_the_cap_fail_the_stream() -> None:
    stream = MessagesStream()
    feed_all(stream, MESSAGE_START)
    for index in range(MAX_TOOL_CALLS):
        feed_all(stream, tool_use_block(index, f"toolu_{index}", "ls", "{}"))
    with pytest.raises(ProviderStreamError, match=f"more than {MAX_TOOL_CALLS} tool calls in one turn"):
        feed_all(stream, tool_use_block(MAX_TOOL_CALLS, "toolu_x", "ls", "{}"))


def test_content_blocks_opened_without_end_fail_the_stream() -> None:
    stream = MessagesStream()
    feed_all(stream, MESSAGE_START)
    with pytest.raises(ProviderStreamError, match="content blocks open at once"):
        for index in range(10_000):
            start = {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}
            stream.feed("content_block_start", json.dumps(start))


# --- blocks we do not surface ------------------------------------------------------

THINKING_STREAM = """
event: message_start
data: {"type": "message_start", "message": {"id": "msg_01...", "type": "message", "role": "assistant", "content": [], "model": "claude-sonnet-4-5-20250929", "stop_reason": null, "stop_sequence": null}}

event: content_block_start
data: {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Let me solve this step by step:\\n\\n1. First break down 27 * 453"}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds..."}}

event: content_block_stop
data: {"type": "content_block_stop", "index": 0}

event: content_block_start
data: {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "27 * 453 = 12,231"}}

event: content_block_stop
data: {"type": "content_block_stop", "index": 1}

event: message_delta
data: {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}}

event: message_stop
data: {"type": "message_stop"}
"""


def test_thinking_blocks_are_skipped_and_absent_usage_counts_as_zero() -> None:
    assert run(THINKING_STREAM) == [TextDelta("27 * 453 = 12,231"), Finish("stop", Usage(0, 0))]


def test_server_tool_use_and_its_result_are_not_our_tool_calls() -> None:
    server_tool = r"""
event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"server_tool_use","id":"srvtoolu_014hJH82Qum7Td6UV8gDXThB","name":"web_search","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"query"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"\": \"weather NYC today\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1 }

event: content_block_start
data: {"type":"content_block_start","index":2,"content_block":{"type":"web_search_tool_result","tool_use_id":"srvtoolu_014hJH82Qum7Td6UV8gDXThB","content":[]}}

event: content_block_stop
data: {"type":"content_block_stop","index":2}
"""
    assert run(MESSAGE_START + TEXT_BLOCK + server_tool + MESSAGE_END) == [
        TextDelta("Hello"),
        TextDelta("!"),
        Finish("stop", Usage(25, 15)),
    ]


def test_unknown_delta_kinds_on_a_text_block_are_ignored() -> None:
    citation = """
event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "citations_delta", "citation": {"type": "char_location", "cited_text": "x"}}}
"""
    stream = MessagesStream()
    feed_all(stream, MESSAGE_START + TEXT_BLOCK.split("event: content_block_stop")[0])
    assert feed_all(stream, citation) == []


# --- usage and stop reasons --------------------------------------------------------


def test_usage_takes_input_from_message_start_and_the_last_output_from_message_delta() -> None:
    deltas = """
event: message_delta
data: {"type": "message_delta", "delta": {"stop_reason": null, "stop_sequence": null}, "usage": {"output_tokens": 7}}

event: message_delta
data: {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 42}}

event: message_stop
data: {"type": "message_stop"}
"""
    assert run(MESSAGE_START + TEXT_BLOCK + deltas)[-1] == Finish("stop", Usage(25, 42))


def test_output_tokens_of_message_start_stand_when_no_message_delta_counts_them() -> None:
    no_usage = """
event: message_delta
data: {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}}

event: message_stop
data: {"type": "message_stop"}
"""
    assert run(MESSAGE_START + TEXT_BLOCK + no_usage)[-1] == Finish("stop", Usage(25, 1))


@pytest.mark.parametrize(
    ("stop_reason", "reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("pause_turn", "pause_turn"),
        ("refusal", "refusal"),
    ],
)
def test_stop_reason_is_mapped_to_the_projects_finish_reason(stop_reason: str, reason: str) -> None:
    assert run(MESSAGE_START + TEXT_BLOCK + message_end(stop_reason, 15))[-1] == Finish(reason, Usage(25, 15))


def test_finish_is_emitted_once_at_message_stop() -> None:
    stream = MessagesStream()
    *before, (stop_event, stop_data) = events(BASIC_TEXT_STREAM)
    for pair in before:
        assert not any(isinstance(part, Finish) for part in stream.feed(*pair))
    assert stream.feed(stop_event, stop_data) == [Finish("stop", Usage(25, 15))]
    assert stream.finish() == []


# --- events to ignore --------------------------------------------------------------


def test_ping_is_ignored() -> None:
    stream = MessagesStream()
    feed_all(stream, MESSAGE_START)
    assert stream.feed("ping", '{"type": "ping"}') == []


def test_unknown_event_types_are_ignored_even_with_data_we_cannot_read() -> None:
    stream = MessagesStream()
    feed_all(stream, MESSAGE_START)
    assert stream.feed("message_checkpoint", '{"type": "message_checkpoint", "seq": 3}') == []
    assert stream.feed("future_event", "not json at all") == []
    assert feed_all(stream, TEXT_BLOCK + MESSAGE_END)[-1] == Finish("stop", Usage(25, 15))


def test_events_after_message_stop_are_ignored() -> None:
    late = """
event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "late"}}

event: error
data: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}

event: message_stop
data: {"type": "message_stop"}
"""
    stream = MessagesStream()
    feed_all(stream, BASIC_TEXT_STREAM)
    assert feed_all(stream, late) == []
    assert stream.feed("content_block_delta", "{broken") == []
    assert stream.finish() == []


def test_an_event_without_a_name_is_dispatched_by_its_data_type() -> None:
    stream = MessagesStream()
    parts: list[StreamPart] = []
    for _event, data in events(BASIC_TEXT_STREAM):
        parts += stream.feed("message", data)
    assert parts == [TextDelta("Hello"), TextDelta("!"), Finish("stop", Usage(25, 15))]


# --- failures ----------------------------------------------------------------------


def test_error_event_mid_stream_raises_after_the_text_before_it_came_out() -> None:
    stream = MessagesStream()
    parts = feed_all(stream, MESSAGE_START + TEXT_BLOCK)
    assert parts == [TextDelta("Hello"), TextDelta("!")]
    with pytest.raises(ProviderStreamError) as caught:
        feed_all(stream, OVERLOADED)
    assert isinstance(caught.value, ModelError)
    assert (caught.value.error_type, caught.value.message) == ("overloaded_error", "Overloaded")
    assert str(caught.value) == "overloaded_error: Overloaded"


def test_a_failed_stream_raises_the_same_error_again() -> None:
    stream = MessagesStream()
    feed_all(stream, MESSAGE_START)
    with pytest.raises(ProviderStreamError) as caught:
        feed_all(stream, OVERLOADED)
    with pytest.raises(ProviderStreamError) as again:
        feed_all(stream, TEXT_BLOCK)
    assert again.value is caught.value
    with pytest.raises(ProviderStreamError) as at_finish:
        stream.finish()
    assert at_finish.value is caught.value


def test_malformed_json_is_an_error() -> None:
    stream = MessagesStream()
    feed_all(stream, MESSAGE_START)
    with pytest.raises(ProviderStreamError, match="^malformed event: ") as caught:
        stream.feed("content_block_start", '{"type": "content_block_start", "index": 0, "content_blo')
    assert caught.value.error_type is None


@pytest.mark.parametrize(
    ("event", "data"),
    [
        ("content_block_start", '["content_block_start", 0]'),
        ("content_block_start", '{"type": "content_block_start", "content_block": {"type": "text", "text": ""}}'),
        ("content_block_start", '{"type": "content_block_start", "index": "0", "content_block": {"type": "text"}}'),
        ("content_block_start", '{"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use"}}'),
        ("message_delta", '{"type": "message_delta", "delta": {}, "usage": {"output_tokens": "15"}}'),
        ("error", '{"type": "error", "error": "Overloaded"}'),
    ],
)
def test_json_of_the_wrong_shape_is_a_malformed_event(event: str, data: str) -> None:
    stream = MessagesStream()
    feed_all(stream, MESSAGE_START)
    with pytest.raises(ProviderStreamError, match="^malformed event: "):
        stream.feed(event, data)


def test_stream_cut_before_message_stop_is_an_error_after_its_text() -> None:
    stream = MessagesStream()
    assert feed_all(stream, MESSAGE_START + TEXT_BLOCK) == [TextDelta("Hello"), TextDelta("!")]
    with pytest.raises(ProviderStreamError, match="^the stream ended before the model finished$"):
        stream.finish()


def test_empty_stream_is_an_error() -> None:
    with pytest.raises(ProviderStreamError, match="ended before the model finished"):
        MessagesStream().finish()


def test_delta_for_a_block_that_never_started_is_an_error() -> None:
    stream = MessagesStream()
    feed_all(stream, MESSAGE_START)
    with pytest.raises(ProviderStreamError, match="content_block_delta for content block 0, which is not open"):
        stream.feed(*events(TEXT_BLOCK)[2])


def test_delta_after_its_block_stopped_is_an_error() -> None:
    stream = MessagesStream()
    feed_all(stream, MESSAGE_START + TEXT_BLOCK)
    with pytest.raises(ProviderStreamError, match="which is not open"):
        stream.feed(*events(TEXT_BLOCK)[2])


def test_stop_for_a_block_that_never_started_is_an_error() -> None:
    stream = MessagesStream()
    feed_all(stream, MESSAGE_START)
    with pytest.raises(ProviderStreamError, match="content_block_stop for content block 3"):
        stream.feed("content_block_stop", '{"type": "content_block_stop", "index": 3}')


def test_a_delta_of_the_wrong_kind_for_its_block_is_an_error() -> None:
    stream = MessagesStream()
    feed_all(stream, MESSAGE_START + TEXT_BLOCK.split("event: content_block_stop")[0])
    with pytest.raises(ProviderStreamError, match="input_json_delta for content block 0, which is not tool_use"):
        stream.feed(
            "content_block_delta",
            '{"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{"}}',
        )


# --- the request -------------------------------------------------------------------

GET_WEATHER = ToolDefinition(
    "get_weather",
    "Get the current weather in a given location",
    {
        "type": "object",
        "properties": {"location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"}},
        "required": ["location"],
    },
)


def test_request_carries_model_max_tokens_system_messages_and_stream() -> None:
    request = ModelRequest("You are terse.", (Turn("user", "What is the weather like in San Francisco?"),))
    assert build_messages_request(request, "claude-sonnet-4-5", 1024) == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "system": "You are terse.",
        "messages": [{"role": "user", "content": "What is the weather like in San Francisco?"}],
        "stream": True,
    }


def test_request_omits_an_empty_system_prompt_and_empty_tools() -> None:
    body = build_messages_request(ModelRequest("", (Turn("user", "hi"),)), "m", 16)
    assert "system" not in body
    assert "tools" not in body


def test_request_lists_tools_with_their_schema_as_input_schema() -> None:
    request = ModelRequest("", (Turn("user", "weather?"),), (GET_WEATHER,))
    assert build_messages_request(request, "m", 16)["tools"] == [
        {
            "name": "get_weather",
            "description": "Get the current weather in a given location",
            "input_schema": GET_WEATHER.parameters,
        }
    ]


def test_request_merges_consecutive_same_role_turns_with_a_blank_line() -> None:
    history = (
        Turn("user", "first"),
        Turn("user", "second"),
        Turn("assistant", "one"),
        Turn("assistant", "two"),
        Turn("user", "third"),
    )
    assert build_messages_request(ModelRequest("", history), "m", 16)["messages"] == [
        {"role": "user", "content": "first\n\nsecond"},
        {"role": "assistant", "content": "one\n\ntwo"},
        {"role": "user", "content": "third"},
    ]


def test_request_drops_empty_assistant_turns_and_merges_the_users_around_them() -> None:
    history = (Turn("user", "hello"), Turn("assistant", ""), Turn("assistant", " \n"), Turn("user", "are you there?"))
    assert build_messages_request(ModelRequest("", history), "m", 16)["messages"] == [
        {"role": "user", "content": "hello\n\nare you there?"},
    ]


def test_request_sends_tool_calls_as_tool_use_and_results_as_tool_result_blocks() -> None:
    history = (
        Turn("user", "Compare a.py and b.py."),
        Turn(
            "assistant",
            "Reading both.",
            tool_calls=(
                ToolCall("toolu_01A", "view", '{"path": "a.py"}'),
                ToolCall("toolu_01B", "view", '{"path": "b.py"}'),
            ),
        ),
        Turn(
            "tool",
            "",
            tool_results=(
                ToolResult("toolu_01A", "view", "1\tprint('a')"),
                ToolResult("toolu_01B", "view", "no such file: b.py", is_error=True),
            ),
        ),
    )
    assert build_messages_request(ModelRequest("", history), "m", 16)["messages"] == [
        {"role": "user", "content": "Compare a.py and b.py."},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Reading both."},
                {"type": "tool_use", "id": "toolu_01A", "name": "view", "input": {"path": "a.py"}},
                {"type": "tool_use", "id": "toolu_01B", "name": "view", "input": {"path": "b.py"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "1\tprint('a')", "is_error": False},
                {"type": "tool_result", "tool_use_id": "toolu_01B", "content": "no such file: b.py", "is_error": True},
            ],
        },
    ]


def test_request_puts_the_next_prompt_in_the_results_user_message_after_them() -> None:
    # The API wants user and assistant to alternate: results and the next prompt are one user message.
    history = (
        Turn("user", "ls"),
        Turn("assistant", "", tool_calls=(ToolCall("toolu_01A", "ls", "{}"),)),
        Turn("tool", "", tool_results=(ToolResult("toolu_01A", "ls", "a.py"),)),
        Turn("assistant", ""),  # a run that then produced nothing
        Turn("user", "Now read it."),
    )
    assert build_messages_request(ModelRequest("", history), "m", 16)["messages"] == [
        {"role": "user", "content": "ls"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_01A", "name": "ls", "input": {}}]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "a.py", "is_error": False},
                {"type": "text", "text": "Now read it."},
            ],
        },
    ]


@pytest.mark.parametrize("arguments", ['{"path": "a.py', "[1, 2]", '"a.py"', "", "[" * 100_000 + "]" * 100_000])
def test_request_sends_arguments_that_are_not_a_json_object_wrapped_as_the_raw_text(arguments: str) -> None:
    # tool_use input must be an object; the model still sees what it sent.
    history = (
        Turn("user", "go"),
        Turn("assistant", "", tool_calls=(ToolCall("toolu_01A", "view", arguments),)),
        Turn("tool", "", tool_results=(ToolResult("toolu_01A", "view", "not valid JSON", is_error=True),)),
    )
    tool_use = build_messages_request(ModelRequest("", history), "m", 16)["messages"][1]["content"][0]
    assert tool_use["input"] == {INVALID_ARGUMENTS_KEY: arguments}


def test_request_leaves_out_an_empty_results_content() -> None:
    history = (
        Turn("user", "go"),
        Turn("assistant", "", tool_calls=(ToolCall("toolu_01A", "bash", '{"command": "true"}'),)),
        Turn("tool", "", tool_results=(ToolResult("toolu_01A", "bash", ""),)),
    )
    result = build_messages_request(ModelRequest("", history), "m", 16)["messages"][2]["content"][0]
    assert result == {"type": "tool_result", "tool_use_id": "toolu_01A", "is_error": False}


def test_request_gives_a_call_with_no_recorded_result_an_error_result() -> None:
    history = (
        Turn("user", "go"),
        Turn(
            "assistant", "Looking.", tool_calls=(ToolCall("toolu_01A", "view", "{}"), ToolCall("toolu_01B", "ls", "{}"))
        ),
        Turn("tool", "", tool_results=(ToolResult("toolu_01B", "ls", "a.py"), ToolResult("toolu_09", "ls", "stray"))),
        Turn("assistant", "", tool_calls=(ToolCall("toolu_01C", "ls", "{}"),)),  # cut off before its results
        Turn("user", "stop"),
    )
    messages = build_messages_request(ModelRequest("", history), "m", 16)["messages"]
    assert messages[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_01A", "content": NOT_RUN, "is_error": True},
        {"type": "tool_result", "tool_use_id": "toolu_01B", "content": "a.py", "is_error": False},
    ]
    assert messages[4]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_01C", "content": NOT_RUN, "is_error": True},
        {"type": "text", "text": "stop"},
    ]
    assert [message["role"] for message in messages] == ["user", "assistant", "user", "assistant", "user"]


def test_request_makes_ids_from_another_provider_ones_the_api_takes() -> None:
    history = (
        Turn("user", "go"),
        Turn("assistant", "", tool_calls=(ToolCall("functions.view:0", "view", "{}"),)),
        Turn("tool", "", tool_results=(ToolResult("functions.view:0", "view", "x"),)),
    )
    messages = build_messages_request(ModelRequest("", history), "m", 16)["messages"]
    assert messages[1]["content"][0]["id"] == messages[2]["content"][0]["tool_use_id"] == "functions_view_0"


def test_request_leaves_out_a_tool_turn_that_answers_no_calls() -> None:
    history = (
        Turn("user", "hi"),
        Turn("assistant", "Hello."),
        Turn("tool", "", tool_results=(ToolResult("x", "ls", "a"),)),
    )
    assert build_messages_request(ModelRequest("", history), "m", 16)["messages"] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello."},
    ]


def test_request_rejects_a_turn_with_an_unknown_role() -> None:
    with pytest.raises(ValueError, match="unknown role 'system'"):
        build_messages_request(ModelRequest("", (Turn("system", "x"),)), "m", 16)


def test_request_is_json_serialisable() -> None:
    request = ModelRequest("sys", (Turn("user", "hi"),), (GET_WEATHER,))
    body = build_messages_request(request, "m", 16)
    assert json.loads(json.dumps(body)) == body
