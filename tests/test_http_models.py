"""Real providers over real sockets: HttpModel against a scripted HTTP/1.1 server on loopback.

The bodies are each provider's documented wire format byte for byte, sent in
chunks that cut events (and UTF-8, and JSON) anywhere; the server records what
the client sent, so the tests also pin down the requests themselves.
"""

# The SSE bodies keep the providers' one-event-per-line layout, however long the line.
# ruff: noqa: E501

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx2
import pytest
import trio
from loopback_http import LoopbackServer, NoReply, Pause, Reply, Streamed, start_loopback_server
from support import WAIT
from transcripts import ANTHROPIC_OVERLOADED, ANTHROPIC_TEXT_STREAM, ANTHROPIC_TOOL_USE_SHORT, anthropic_body

from agentd.models import (
    Finish,
    ModelError,
    ModelRequest,
    ProviderConfig,
    Retrying,
    StreamPart,
    TextDelta,
    ToolCall,
    ToolDefinition,
    ToolResult,
    Turn,
    Usage,
)
from agentd.models._http import HttpModel, ProviderError, _retry_after, open_http_client
from agentd.models._sse import MAX_EVENT_BYTES
from agentd.models._tool_calls import MAX_TOOL_ARGUMENTS

OPENAI_KEY_ENV = "AGENTD_TEST_OPENAI_KEY"
ANTHROPIC_KEY_ENV = "AGENTD_TEST_ANTHROPIC_KEY"
OPENAI_KEY = "sk-test-openai-7c1e9a-NEVER-SHOW-ME"
ANTHROPIC_KEY = "sk-ant-test-4b2d8f-NEVER-SHOW-ME"

REQUEST = ModelRequest(
    system="You are terse.",
    history=(Turn("user", "Say hi."), Turn("assistant", "Hi."), Turn("user", "Again, in French.")),
)


def chunked(raw: bytes, size: int = 23) -> list[bytes | Pause]:
    """`raw` in pieces that cut lines, JSON strings and UTF-8 sequences wherever they fall."""
    return [raw[i : i + size] for i in range(0, len(raw), size)]


# --- bodies, as the providers send them ------------------------------------------------------------

OPENAI_TEXT = (
    b'data: {"id":"chatcmpl-2","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"usage":null}\n\n'
    b'data: {"id":"chatcmpl-2","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"Bonjour"},"logprobs":null,"finish_reason":null}],"usage":null}\n\n'
    b'data: {"id":"chatcmpl-2","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":" \xc3\xa0 vous \xe2\x82\xac"},"logprobs":null,"finish_reason":null}],"usage":null}\n\n'
    b'data: {"id":"chatcmpl-2","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}\n\n'
    b'data: {"id":"chatcmpl-2","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":19,"completion_tokens":4,"total_tokens":23}}\n\n'
    b"data: [DONE]\n\n"
)
OPENAI_TEXT_PARTS = [TextDelta("Bonjour"), TextDelta(" à vous €"), Finish("stop", Usage(19, 4))]

OPENAI_TOOL_CALL = (
    b'data: {"id":"chatcmpl-3","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_abc","type":"function","function":{"name":"read_file","arguments":""}}]},"finish_reason":null}],"usage":null}\n\n'
    b'data: {"id":"chatcmpl-3","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\\"pa"}}]},"finish_reason":null}],"usage":null}\n\n'
    b'data: {"id":"chatcmpl-3","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"th\\": \\"src/m"}}]},"finish_reason":null}],"usage":null}\n\n'
    b'data: {"id":"chatcmpl-3","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"ain.py\\"}"}}]},"finish_reason":null}],"usage":null}\n\n'
    b'data: {"id":"chatcmpl-3","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}],"usage":null}\n\n'
    b'data: {"id":"chatcmpl-3","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o","choices":[],"usage":{"prompt_tokens":120,"completion_tokens":42,"total_tokens":162}}\n\n'
    b"data: [DONE]\n\n"
)

OPENAI_HELLO = b'data: {"id":"chatcmpl-4","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"role":"assistant","content":"Hello"},"logprobs":null,"finish_reason":null}]}\n\n'
OPENAI_ERROR_EVENT = b'data: {"error":{"message":"The server had an error while processing your request. Sorry about that!","type":"server_error","param":null,"code":null}}\n\n'

ANTHROPIC_TEXT = anthropic_body(ANTHROPIC_TEXT_STREAM)
ANTHROPIC_TEXT_PARTS = [TextDelta("Hello"), TextDelta("!"), Finish("stop", Usage(25, 15))]

ANTHROPIC_TOOL_USE = anthropic_body(ANTHROPIC_TOOL_USE_SHORT)

ANTHROPIC_HELLO = b"""event: message_start
data: {"type": "message_start", "message": {"id": "msg_2", "type": "message", "role": "assistant", "content": [], "model": "claude-sonnet-4-5-20250929", "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 25, "output_tokens": 1}}}

event: content_block_start
data: {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}

"""
ANTHROPIC_OVERLOADED_EVENT = anthropic_body(ANTHROPIC_OVERLOADED)


# --- fixtures and helpers ----------------------------------------------------------------------------


@pytest.fixture
async def server(nursery: trio.Nursery) -> LoopbackServer:
    return await start_loopback_server(nursery)


@pytest.fixture
async def client(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[httpx2.AsyncClient]:
    for variable in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(variable, raising=False)  # loopback must not go through a proxy
    monkeypatch.setenv(OPENAI_KEY_ENV, OPENAI_KEY)
    monkeypatch.setenv(ANTHROPIC_KEY_ENV, ANTHROPIC_KEY)
    async with open_http_client() as client:
        yield client


def openai_provider(base_url: str, **options: Any) -> ProviderConfig:
    options.setdefault("headers", {"X-Title": "agentd tests"})
    return ProviderConfig("testai", "openai", base_url + "/v1", OPENAI_KEY_ENV, **options)


def anthropic_provider(base_url: str, **options: Any) -> ProviderConfig:
    return ProviderConfig("claude", "anthropic", base_url, ANTHROPIC_KEY_ENV, **options)


def openai_model(server: LoopbackServer, client: httpx2.AsyncClient, **options: Any) -> HttpModel:
    max_output_tokens = options.pop("max_output_tokens", None)
    return HttpModel(
        openai_provider(server.url, **options),
        "gpt-4o-mini",
        client,
        max_output_tokens=max_output_tokens,
        backoff_base=0.01,
    )


def anthropic_model(server: LoopbackServer, client: httpx2.AsyncClient, **options: Any) -> HttpModel:
    max_output_tokens = options.pop("max_output_tokens", None)
    return HttpModel(
        anthropic_provider(server.url, **options),
        "claude-sonnet-4-5",
        client,
        max_output_tokens=max_output_tokens,
        backoff_base=0.01,
    )


async def answer(model: HttpModel, request: ModelRequest = REQUEST) -> list[StreamPart]:
    parts: list[StreamPart] = []
    await _collect_into(model, parts, request)
    return parts


async def failure(model: HttpModel, request: ModelRequest = REQUEST) -> tuple[ProviderError, list[StreamPart]]:
    """The error the answer fails with, and the parts that came out before it."""
    parts: list[StreamPart] = []
    with pytest.raises(ProviderError) as info:
        await _collect_into(model, parts, request)
    assert isinstance(info.value, ModelError)
    return info.value, parts


async def _collect_into(model: HttpModel, parts: list[StreamPart], request: ModelRequest = REQUEST) -> None:
    with trio.fail_after(WAIT):
        async with aclosing(model.stream(request)) as stream:
            async for part in stream:
                parts.append(part)


def unused_port() -> int:
    """A port nothing listens on: bound, then closed."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --- answers -----------------------------------------------------------------------------------------


async def test_openai_text_stream_gives_text_and_usage(server: LoopbackServer, client: httpx2.AsyncClient) -> None:
    server.script(Streamed(chunked(OPENAI_TEXT)))
    assert await answer(openai_model(server, client)) == OPENAI_TEXT_PARTS


async def test_openai_request_carries_model_messages_and_auth(
    server: LoopbackServer, client: httpx2.AsyncClient
) -> None:
    server.script(Streamed([OPENAI_TEXT]), Streamed([OPENAI_TEXT]))
    await answer(openai_model(server, client))
    await answer(openai_model(server, client, max_output_tokens=1000))

    first, second = server.requests
    assert (first.method, first.path) == ("POST", "/v1/chat/completions")
    assert first.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert first.headers["content-type"] == "application/json"
    assert first.headers["accept"] == "text/event-stream"
    assert first.headers["x-title"] == "agentd tests"
    assert "x-api-key" not in first.headers and "anthropic-version" not in first.headers
    assert first.json == {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Say hi."},
            {"role": "assistant", "content": "Hi."},
            {"role": "user", "content": "Again, in French."},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert second.json["max_tokens"] == 1000


async def test_openai_provider_without_a_key_sends_no_authorization(
    server: LoopbackServer, client: httpx2.AsyncClient
) -> None:
    server.script(Streamed([OPENAI_TEXT]))
    provider = ProviderConfig("ollama", "openai", server.url + "/v1")
    assert await answer(HttpModel(provider, "qwen3", client)) == OPENAI_TEXT_PARTS
    assert "authorization" not in server.requests[0].headers


async def test_anthropic_text_stream_gives_text_and_usage(server: LoopbackServer, client: httpx2.AsyncClient) -> None:
    server.script(Streamed(chunked(ANTHROPIC_TEXT)))
    assert await answer(anthropic_model(server, client)) == ANTHROPIC_TEXT_PARTS


async def test_anthropic_request_carries_key_version_system_and_max_tokens(
    server: LoopbackServer, client: httpx2.AsyncClient
) -> None:
    server.script(Streamed([ANTHROPIC_TEXT]), Streamed([ANTHROPIC_TEXT]))
    await answer(anthropic_model(server, client, headers={"anthropic-beta": "tools-2024-04-04"}))
    await answer(anthropic_model(server, client, max_output_tokens=64000))

    first, second = server.requests
    assert (first.method, first.path) == ("POST", "/v1/messages")
    assert first.headers["x-api-key"] == ANTHROPIC_KEY
    assert first.headers["anthropic-version"] == "2023-06-01"
    assert first.headers["anthropic-beta"] == "tools-2024-04-04"
    assert first.headers["content-type"] == "application/json"
    assert first.headers["accept"] == "text/event-stream"
    assert "authorization" not in first.headers
    assert first.json == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 4096,
        "system": "You are terse.",
        "messages": [
            {"role": "user", "content": "Say hi."},
            {"role": "assistant", "content": "Hi."},
            {"role": "user", "content": "Again, in French."},
        ],
        "stream": True,
    }
    assert second.json["max_tokens"] == 64000


async def test_configured_headers_override_the_defaults(server: LoopbackServer, client: httpx2.AsyncClient) -> None:
    server.script(Streamed([ANTHROPIC_TEXT]))
    await answer(anthropic_model(server, client, headers={"Anthropic-Version": "2025-01-01"}))
    assert server.requests[0].headers["anthropic-version"] == "2025-01-01"


async def test_openai_tool_call_deltas_split_across_chunks(server: LoopbackServer, client: httpx2.AsyncClient) -> None:
    server.script(Streamed(chunked(OPENAI_TOOL_CALL, size=7)))
    assert await answer(openai_model(server, client)) == [
        ToolCall("call_abc", "read_file", '{"path": "src/main.py"}'),
        Finish("tool_calls", Usage(120, 42)),
    ]


async def test_anthropic_input_json_deltas_make_one_tool_call(
    server: LoopbackServer, client: httpx2.AsyncClient
) -> None:
    server.script(Streamed(chunked(ANTHROPIC_TOOL_USE, size=11)))
    assert await answer(anthropic_model(server, client)) == [
        TextDelta("Okay, let's check."),
        ToolCall(
            "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather", '{"location": "San Francisco, CA", "unit": "fahrenheit"}'
        ),
        Finish("tool_calls", Usage(472, 89)),
    ]


async def test_connection_is_reused_across_answers(server: LoopbackServer, client: httpx2.AsyncClient) -> None:
    server.script(Streamed(chunked(OPENAI_TEXT)), Streamed(chunked(OPENAI_TEXT)))
    model = openai_model(server, client)
    await answer(model)
    await answer(model)
    assert len(server.requests) == 2
    assert server.connections_closed == 0  # both answers went over one kept-alive connection


# --- a step of tool calls, and the request after it -------------------------------------------------

VIEW = ToolDefinition(
    "view",
    "Read a file of the workspace, with line numbers.",
    {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
)
GREP = ToolDefinition(
    "grep",
    "Search the workspace's files for a regular expression.",
    {"type": "object", "properties": {"pattern": {"type": "string"}}, "required": ["pattern"]},
)
FIRST_STEP = ModelRequest("You are a coding agent.", (Turn("user", "Where are the TODOs?"),), (VIEW, GREP))


def second_step(calls: list[ToolCall]) -> ModelRequest:
    """What the agent loop sends after running the first step's `calls`: view worked, grep's arguments did not parse."""
    view, grep = calls
    results = (
        ToolResult(view.id, "view", "1\t# TODO: tests\n"),
        ToolResult(grep.id, "grep", "the arguments are not valid JSON", is_error=True),
    )
    history = (
        *FIRST_STEP.history,
        Turn("assistant", "Let me look.", tuple(calls)),
        Turn("tool", "", tool_results=results),
    )
    return ModelRequest(FIRST_STEP.system, history, FIRST_STEP.tools)


# Two calls interleaved by index, each arguments string cut mid-JSON; grep's
# arguments never become valid JSON (the model's mistake, not the stream's).
OPENAI_TWO_CALLS = (
    b'data: {"id":"chatcmpl-5","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"role":"assistant","content":"Let me look."},"logprobs":null,"finish_reason":null}]}\n\n'
    b'data: {"id":"chatcmpl-5","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_view1","type":"function","function":{"name":"view","arguments":""}}]},"logprobs":null,"finish_reason":null}]}\n\n'
    b'data: {"id":"chatcmpl-5","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\\"path\\": \\"sr"}}]},"logprobs":null,"finish_reason":null}]}\n\n'
    b'data: {"id":"chatcmpl-5","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_grep2","type":"function","function":{"name":"grep","arguments":"{\\"pattern\\": "}}]},"logprobs":null,"finish_reason":null}]}\n\n'
    b'data: {"id":"chatcmpl-5","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"c/main.py\\"}"}}]},"logprobs":null,"finish_reason":null}]}\n\n'
    b'data: {"id":"chatcmpl-5","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":"TODO\\\\("}}]},"logprobs":null,"finish_reason":null}]}\n\n'
    b'data: {"id":"chatcmpl-5","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"tool_calls"}]}\n\n'
    b'data: {"id":"chatcmpl-5","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o","system_fingerprint":"fp_1","choices":[],"usage":{"prompt_tokens":210,"completion_tokens":38,"total_tokens":248}}\n\n'
    b"data: [DONE]\n\n"
)
OPENAI_TWO_CALLS_PARTS = [
    TextDelta("Let me look."),
    ToolCall("call_view1", "view", '{"path": "src/main.py"}'),
    ToolCall("call_grep2", "grep", '{"pattern": TODO\\('),
    Finish("tool_calls", Usage(210, 38)),
]

ANTHROPIC_TWO_CALLS = anthropic_body(r"""
event: message_start
data: {"type":"message_start","message":{"id":"msg_01Two","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":210,"output_tokens":3}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Let me look."}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01View","name":"view","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"path\": \"sr"}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"c/main.py\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: content_block_start
data: {"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_01Grep","name":"grep","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"pattern\": "}}

event: content_block_delta
data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"TODO\\("}}

event: content_block_stop
data: {"type":"content_block_stop","index":2}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":38}}

event: message_stop
data: {"type":"message_stop"}
""")
ANTHROPIC_TWO_CALLS_PARTS = [
    TextDelta("Let me look."),
    ToolCall("toolu_01View", "view", '{"path": "src/main.py"}'),
    ToolCall("toolu_01Grep", "grep", '{"pattern": TODO\\('),
    Finish("tool_calls", Usage(210, 38)),
]


async def test_openai_step_of_two_calls_and_the_request_carrying_their_results(
    server: LoopbackServer, client: httpx2.AsyncClient
) -> None:
    server.script(Streamed(chunked(OPENAI_TWO_CALLS, size=7)), Streamed(chunked(OPENAI_TEXT)))
    model = openai_model(server, client)
    first = await answer(model, FIRST_STEP)
    assert first == OPENAI_TWO_CALLS_PARTS
    calls = [part for part in first if isinstance(part, ToolCall)]
    assert await answer(model, second_step(calls)) == OPENAI_TEXT_PARTS

    asked, told = (request.json for request in server.requests)
    tools = [
        {
            "type": "function",
            "function": {"name": tool.name, "description": tool.description, "parameters": tool.parameters},
        }
        for tool in (VIEW, GREP)
    ]
    assert asked["tools"] == told["tools"] == tools
    assert asked["messages"] == [
        {"role": "system", "content": "You are a coding agent."},
        {"role": "user", "content": "Where are the TODOs?"},
    ]
    system, user, assistant, view_result, grep_result = told["messages"]
    assert (system, user) == tuple(asked["messages"])
    assert assistant == {
        "role": "assistant",
        "content": "Let me look.",
        "tool_calls": [
            {
                "id": "call_view1",
                "type": "function",
                "function": {"name": "view", "arguments": '{"path": "src/main.py"}'},
            },
            {"id": "call_grep2", "type": "function", "function": {"name": "grep", "arguments": '{"pattern": TODO\\('}},
        ],
    }
    assert view_result == {"role": "tool", "tool_call_id": "call_view1", "content": "1\t# TODO: tests\n"}
    assert grep_result == {"role": "tool", "tool_call_id": "call_grep2", "content": "the arguments are not valid JSON"}
    assert {key: told[key] for key in ("model", "stream", "stream_options")} == {
        "model": "gpt-4o-mini",
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def test_anthropic_step_of_two_calls_and_the_request_carrying_their_results(
    server: LoopbackServer, client: httpx2.AsyncClient
) -> None:
    server.script(Streamed(chunked(ANTHROPIC_TWO_CALLS, size=7)), Streamed(chunked(ANTHROPIC_TEXT)))
    model = anthropic_model(server, client)
    first = await answer(model, FIRST_STEP)
    assert first == ANTHROPIC_TWO_CALLS_PARTS
    calls = [part for part in first if isinstance(part, ToolCall)]
    assert await answer(model, second_step(calls)) == ANTHROPIC_TEXT_PARTS

    asked, told = (request.json for request in server.requests)
    tools = [
        {"name": tool.name, "description": tool.description, "input_schema": tool.parameters} for tool in (VIEW, GREP)
    ]
    assert asked["tools"] == told["tools"] == tools
    assert asked["system"] == told["system"] == "You are a coding agent."
    assert asked["messages"] == [{"role": "user", "content": "Where are the TODOs?"}]
    user, assistant, results = told["messages"]
    assert user == asked["messages"][0]
    assert assistant == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "toolu_01View", "name": "view", "input": {"path": "src/main.py"}},
            # Not an object: sent back as the raw text, for the model to see what it wrote.
            {
                "type": "tool_use",
                "id": "toolu_01Grep",
                "name": "grep",
                "input": {"invalid_arguments": '{"pattern": TODO\\('},
            },
        ],
    }
    assert results == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01View", "content": "1\t# TODO: tests\n", "is_error": False},
            {
                "type": "tool_result",
                "tool_use_id": "toolu_01Grep",
                "content": "the arguments are not valid JSON",
                "is_error": True,
            },
        ],
    }
    assert {key: told[key] for key in ("model", "max_tokens", "stream")} == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 4096,
        "stream": True,
    }


async def test_arguments_past_the_cap_fail_the_answer_naming_the_call_and_are_not_retried(
    server: LoopbackServer, client: httpx2.AsyncClient
) -> None:
    start = OPENAI_TWO_CALLS.split(b"\n\n")[1] + b"\n\n"  # call_view1 begins
    piece = (
        b'data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"'
        + b"x" * 65536
        + b'"}}]}}]}\n\n'
    )
    endless = [start] + [piece] * (MAX_TOOL_ARGUMENTS // 65536 + 1)
    server.script(Streamed(endless, end="stall"))
    error, parts = await failure(openai_model(server, client, max_retries=3))
    assert parts == []
    assert (
        str(error)
        == f"provider 'testai': tool call 0 ('view') has arguments of more than {MAX_TOOL_ARGUMENTS} characters"
    )
    assert len(server.requests) == 1


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_undecodable_bytes_in_a_result_are_sent_as_replacement_characters(
    server: LoopbackServer, client: httpx2.AsyncClient, provider: str
) -> None:
    # How Python hands over a file name or output that is not UTF-8: lone surrogates.
    listing = b"caf\xe9.txt\n".decode("utf-8", "surrogateescape")
    calls = [ToolCall("call_1", "ls", "{}")]
    history = (
        Turn("user", "ls"),
        Turn("assistant", "", tuple(calls)),
        Turn("tool", "", tool_results=(ToolResult("call_1", "ls", listing),)),
    )
    model = openai_model(server, client) if provider == "openai" else anthropic_model(server, client)
    server.script(Streamed([OPENAI_TEXT if provider == "openai" else ANTHROPIC_TEXT]))
    await answer(model, ModelRequest("", history))
    [request] = server.requests
    assert "caf\ufffd.txt" in request.body.decode("utf-8")
    assert request.headers["content-type"] == "application/json"


# --- errors the provider reports --------------------------------------------------------------------


async def test_openai_error_object_mid_stream_fails_after_the_text_before_it(
    server: LoopbackServer, client: httpx2.AsyncClient
) -> None:
    server.script(Streamed([OPENAI_HELLO, OPENAI_ERROR_EVENT]))
    error, parts = await failure(openai_model(server, client, max_retries=3))
    assert parts == [TextDelta("Hello")]
    assert "The server had an error while processing your request" in str(error)
    assert "testai" in str(error)
    assert len(server.requests) == 1  # text went out: no retry


async def test_anthropic_error_event_mid_stream_fails_after_the_text_before_it(
    server: LoopbackServer, client: httpx2.AsyncClient
) -> None:
    server.script(Streamed([ANTHROPIC_HELLO, ANTHROPIC_OVERLOADED_EVENT]))
    error, parts = await failure(anthropic_model(server, client, max_retries=3))
    assert parts == [TextDelta("Hello")]
    assert "Overloaded" in str(error)
    assert len(server.requests) == 1


async def test_anthropic_overloaded_event_before_any_text_is_retried(
    server: LoopbackServer, client: httpx2.AsyncClient
) -> None:
    server.script(Streamed([ANTHROPIC_OVERLOADED_EVENT]), Streamed(chunked(ANTHROPIC_TEXT)))
    parts = await answer(anthropic_model(server, client, max_retries=3))
    assert isinstance(parts[0], Retrying) and parts[0].reason == "provider error (overloaded_error)"
    assert parts[1:] == ANTHROPIC_TEXT_PARTS


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_failure_names_provider_and_variable_but_never_the_key(
    status: int, server: LoopbackServer, client: httpx2.AsyncClient
) -> None:
    # OpenAI echoes (part of) the key back; this server echoes all of it.
    body = b'{"error":{"message":"Incorrect API key provided: %s.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}'
    server.script(Reply(status, {"content-type": "application/json"}, body % OPENAI_KEY.encode()))
    error, parts = await failure(openai_model(server, client, max_retries=3))
    assert parts == []
    message = str(error)
    assert message.startswith(f"authentication failed for provider 'testai' (check ${OPENAI_KEY_ENV})")
    assert "Incorrect API key provided" in message
    assert OPENAI_KEY not in message and OPENAI_KEY not in repr(error.args)
    assert error.kind == "auth" and not error.retryable
    assert len(server.requests) == 1


async def test_anthropic_auth_failure_names_its_variable(server: LoopbackServer, client: httpx2.AsyncClient) -> None:
    body = b'{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"},"request_id":"req_011CSHoEeqs5C35K2UUqR7Fy"}'
    server.script(Reply(401, {"content-type": "application/json"}, body))
    error, _ = await failure(anthropic_model(server, client))
    assert str(error) == f"authentication failed for provider 'claude' (check ${ANTHROPIC_KEY_ENV}): invalid x-api-key"


async def test_a_missing_key_fails_before_any_request(
    server: LoopbackServer, client: httpx2.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(OPENAI_KEY_ENV)
    error, _ = await failure(openai_model(server, client))
    assert "'testai'" in str(error) and OPENAI_KEY_ENV in str(error)
    assert error.kind == "config"
    assert server.requests == []


async def test_404_says_the_model_was_not_found(server: LoopbackServer, client: httpx2.AsyncClient) -> None:
    body = b'{"error":{"message":"The model `gpt-4o-mini` does not exist or you do not have access to it.","type":"invalid_request_error","param":null,"code":"model_not_found"}}'
    server.script(Reply(404, {"content-type": "application/json"}, body))
    error, _ = await failure(openai_model(server, client, max_retries=3))
    assert str(error) == (
        "model 'gpt-4o-mini' not found at provider 'testai'"
        " (The model `gpt-4o-mini` does not exist or you do not have access to it.)"
    )
    assert error.kind == "not_found" and len(server.requests) == 1


async def test_404_without_an_api_error_points_at_base_url(server: LoopbackServer, client: httpx2.AsyncClient) -> None:
    server.script(Reply(404, {"content-type": "text/html"}, b"<html><body>Not Found</body></html>"))
    error, _ = await failure(anthropic_model(server, client))
    assert str(error) == (
        f"model 'claude-sonnet-4-5' not found at provider 'claude'"
        f" (404 from {server.url}/v1/messages: check the model name and base_url)"
    )


@pytest.mark.parametrize(
    ("status", "body", "detail"),
    [
        (
            400,
            b'{"error":{"message":"This model\'s maximum context length is 128000 tokens. However, your messages resulted in 130415 tokens. Please reduce the length of the messages.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}',
            "This model's maximum context length is 128000 tokens.",
        ),
        (
            400,
            b'{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 208310 tokens > 200000 maximum"},"request_id":"req_1"}',
            "prompt is too long: 208310 tokens > 200000 maximum",
        ),
        (
            413,
            b'{"type":"error","error":{"type":"request_too_large","message":"Request exceeds the maximum allowed number of bytes."}}',
            "Request exceeds the maximum allowed number of bytes.",
        ),
    ],
    ids=["openai-400", "anthropic-400", "anthropic-413"],
)
async def test_context_too_long_is_said_plainly(
    status: int, body: bytes, detail: str, server: LoopbackServer, client: httpx2.AsyncClient
) -> None:
    server.script(Reply(status, {"content-type": "application/json"}, body))
    error, _ = await failure(openai_model(server, client, max_retries=3))
    assert str(error).startswith(f"the conversation is too long for model 'gpt-4o-mini' ({detail}")
    assert error.kind == "context_length" and not error.retryable
    assert len(server.requests) == 1


async def test_other_4xx_shows_the_providers_message(server: LoopbackServer, client: httpx2.AsyncClient) -> None:
    body = b'{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: 100000 > 64000, which is the maximum allowed number of output tokens for claude-sonnet-4-5"}}'
    server.script(Reply(400, {"content-type": "application/json"}, body))
    error, _ = await failure(anthropic_model(server, client, max_retries=3))
    assert str(error) == (
        "provider 'claude' rejected the request (HTTP 400 Bad Request): max_tokens: 100000 > 64000,"
        " which is the maximum allowed number of output tokens for claude-sonnet-4-5"
    )
    assert len(server.requests) == 1


async def test_429_out_of_quota_is_not_retried(server: LoopbackServer, client: httpx2.AsyncClient) -> None:
    body = b'{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}'
    server.script(Reply(429, {"content-type": "application/json"}, body))
    error, parts = await failure(openai_model(server, client, max_retries=3))
    assert parts == [] and error.kind == "quota"
    assert "You exceeded your current quota" in str(error)


# --- retries -----------------------------------------------------------------------------------------


async def test_429_waits_as_retry_after_says_then_answers(server: LoopbackServer, client: httpx2.AsyncClient) -> None:
    rate_limited = b'{"error":{"message":"Rate limit reached for gpt-4o-mini on tokens per min (TPM).","type":"tokens","param":null,"code":"rate_limit_exceeded"}}'
    server.script(
        Reply(429, {"retry-after": "1", "content-type": "application/json"}, rate_limited), Streamed([OPENAI_TEXT])
    )
    started = trio.current_time()
    parts = await answer(openai_model(server, client, max_retries=3))
    assert parts == [Retrying(attempt=2, delay=1.0, reason="rate limited (429)"), *OPENAI_TEXT_PARTS]
    assert trio.current_time() - started >= 1.0
    assert len(server.requests) == 2


async def test_retry_after_ms_is_preferred(server: LoopbackServer, client: httpx2.AsyncClient) -> None:
    server.script(Reply(429, {"retry-after": "30", "retry-after-ms": "20"}), Streamed([OPENAI_TEXT]))
    parts = await answer(openai_model(server, client))
    assert parts[0] == Retrying(attempt=2, delay=0.02, reason="rate limited (429)")


async def test_server_errors_back_off_and_retry(server: LoopbackServer, client: httpx2.AsyncClient) -> None:
    server.script(Reply(500), Reply(503), Streamed(chunked(OPENAI_TEXT)))
    parts = await answer(openai_model(server, client, max_retries=3))
    first, second, *rest = parts
    assert isinstance(first, Retrying) and isinstance(second, Retrying)
    assert (first.attempt, first.reason) == (2, "server error (500)")
    assert (second.attempt, second.reason) == (3, "server error (503)")
    # Full jitter under base * 2**n, with base 0.01.
    assert 0 <= first.delay <= 0.01 and 0 <= second.delay <= 0.02
    assert rest == OPENAI_TEXT_PARTS
    assert len(server.requests) == 3
    assert server.requests[0].json == server.requests[2].json


async def test_anthropic_529_overloaded_is_retried(server: LoopbackServer, client: httpx2.AsyncClient) -> None:
    body = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    server.script(Reply(529, {"content-type": "application/json"}, body), Streamed([ANTHROPIC_TEXT]))
    parts = await answer(anthropic_model(server, client))
    assert isinstance(parts[0], Retrying) and parts[0].reason == "overloaded (529)"
    assert parts[1:] == ANTHROPIC_TEXT_PARTS


async def test_server_error_every_time_gives_up_after_max_retries(
    server: LoopbackServer, client: httpx2.AsyncClient
) -> None:
    body = b'{"error":{"message":"The server had an error while processing your request.","type":"server_error"}}'
    server.script(*[Reply(500, {"content-type": "application/json"}, body)] * 4)
    error, parts = await failure(openai_model(server, client, max_retries=3))
    assert [part.attempt for part in parts if isinstance(part, Retrying)] == [2, 3, 4]
    assert str(error) == (
        "provider 'testai' failed: server error (500): The server had an error while processing your request."
        " (gave up after 4 tries)"
    )
    assert not error.retryable
    assert len(server.requests) == 4


async def test_max_retries_zero_fails_at_once(server: LoopbackServer, client: httpx2.AsyncClient) -> None:
    server.script(Reply(503))
    error, parts = await failure(openai_model(server, client, max_retries=0))
    assert parts == [] and str(error) == "provider 'testai' failed: server error (503)"


def test_retry_after_reads_seconds_dates_and_milliseconds() -> None:
    def wait(**headers: str) -> float | None:
        return _retry_after(httpx2.Headers({name.replace("_", "-"): value for name, value in headers.items()}))

    assert wait(retry_after="7") == 7.0
    assert wait(retry_after="1.5") == 1.5
    assert wait(retry_after_ms="250") == 0.25
    assert wait(retry_after_ms="250", retry_after="9") == 0.25
    assert wait(retry_after="86400") == 120.0  # capped
    assert wait(retry_after="-3") == 0.0
    assert wait(retry_after="soon") is None
    assert wait() is None
    assert wait(retry_after=format_datetime(datetime.now(UTC) - timedelta(minutes=1), usegmt=True)) == 0.0
    later = wait(retry_after=format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True))
    assert later is not None and 25 <= later <= 30


# --- the connection ---------------------------------------------------------------------------------


async def test_connection_refused_fails_at_once_naming_base_url(client: httpx2.AsyncClient) -> None:
    base_url = f"http://127.0.0.1:{unused_port()}"
    model = HttpModel(openai_provider(base_url, max_retries=3), "gpt-4o-mini", client)
    parts: list[StreamPart] = []
    with pytest.raises(ProviderError) as info:
        await _collect_into(model, parts)
    message = str(info.value)
    assert message.startswith(f"cannot connect to provider 'testai' at {base_url}/v1: ")
    assert message.endswith("Connection refused")
    assert parts == []  # not retried: it is configuration, not load


async def test_connection_cut_mid_answer_fails_after_the_text(
    server: LoopbackServer, client: httpx2.AsyncClient
) -> None:
    server.script(Streamed([OPENAI_HELLO, b'data: {"id":"chatcmpl-4","obj'], end="cut"))
    error, parts = await failure(openai_model(server, client, max_retries=3))
    assert parts == [TextDelta("Hello")]
    assert str(error).startswith("the connection to provider 'testai' broke mid-answer: ")
    assert error.kind == "broken" and len(server.requests) == 1


async def test_a_stream_that_never_ends_its_line_fails_the_answer_not_the_daemons_memory(
    server: LoopbackServer, client: httpx2.AsyncClient
) -> None:
    # A server that is not a model endpoint (or a broken one) streams on and on without a line end.
    endless = [b"data: "] + [b"x" * (1024 * 1024)] * (MAX_EVENT_BYTES // (1024 * 1024) + 2)
    server.script(Streamed([OPENAI_HELLO, *endless], end="stall"))
    error, parts = await failure(openai_model(server, client, max_retries=3))
    assert parts == [TextDelta("Hello")]
    assert str(error) == (
        f"provider 'testai' sent a line of more than {MAX_EVENT_BYTES} bytes in its event stream; that is not"
        " a model's answer (is base_url a Chat Completions or Messages endpoint?)"
    )
    assert error.kind == "bad_response" and len(server.requests) == 1


async def test_body_that_ends_before_the_answer_did_breaks_mid_answer(
    server: LoopbackServer, client: httpx2.AsyncClient
) -> None:
    server.script(Streamed([ANTHROPIC_HELLO]))  # a clean end of body, but no message_stop
    error, parts = await failure(anthropic_model(server, client))
    assert parts == [TextDelta("Hello")]
    assert str(error) == (
        "the connection to provider 'claude' broke mid-answer: the stream ended before the model finished"
    )


async def test_cut_before_any_text_is_retried(server: LoopbackServer, client: httpx2.AsyncClient) -> None:
    server.script(Streamed([b": keep-alive\n\n"], end="cut"), Streamed([OPENAI_TEXT]))
    retrying, *rest = await answer(openai_model(server, client))
    assert isinstance(retrying, Retrying) and (retrying.attempt, retrying.reason) == (2, "connection lost")
    assert rest == OPENAI_TEXT_PARTS


async def test_stall_mid_answer_hits_the_idle_timeout(server: LoopbackServer, client: httpx2.AsyncClient) -> None:
    server.script(Streamed([OPENAI_HELLO], end="stall"))
    started = trio.current_time()
    error, parts = await failure(openai_model(server, client, idle_timeout=0.3, max_retries=3))
    assert parts == [TextDelta("Hello")]
    assert str(error) == "provider 'testai' sent nothing for 0.3 s"
    assert 0.3 <= trio.current_time() - started < WAIT
    with trio.fail_after(WAIT):
        await server.all_closed()


async def test_no_response_headers_hits_the_idle_timeout(server: LoopbackServer, client: httpx2.AsyncClient) -> None:
    server.script(NoReply())
    error, parts = await failure(anthropic_model(server, client, idle_timeout=0.3))
    assert parts == []
    assert str(error) == "provider 'claude' sent nothing for 0.3 s"
    assert len(server.requests) == 1


async def test_slow_but_steady_stream_is_not_idle(server: LoopbackServer, client: httpx2.AsyncClient) -> None:
    # 0.6 s in all, never 0.5 s without a byte.
    paced: list[bytes | Pause] = []
    for piece in chunked(ANTHROPIC_TEXT, size=len(ANTHROPIC_TEXT) // 6 + 1):
        paced += [Pause(0.1), piece]
    server.script(Streamed(paced))
    assert await answer(anthropic_model(server, client, idle_timeout=0.5)) == ANTHROPIC_TEXT_PARTS


async def test_cancelling_closes_the_stream_at_once(server: LoopbackServer, client: httpx2.AsyncClient) -> None:
    server.script(Streamed([OPENAI_HELLO], end="stall"))
    parts: list[StreamPart] = []
    with trio.fail_after(WAIT):
        with trio.CancelScope() as scope:
            async with aclosing(openai_model(server, client).stream(REQUEST)) as stream:
                async for part in stream:
                    parts.append(part)
                    scope.cancel()
                    cancelled_at = time.perf_counter()
        exited_at = time.perf_counter()
        await server.all_closed()
    assert parts == [TextDelta("Hello")]
    assert exited_at - cancelled_at < 0.1
    assert server.connections_closed == 1


async def test_cancelling_while_waiting_for_headers_closes_the_connection(
    server: LoopbackServer, client: httpx2.AsyncClient
) -> None:
    server.script(NoReply())
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:

            async def consume() -> None:
                async with aclosing(anthropic_model(server, client).stream(REQUEST)) as stream:
                    async for _ in stream:
                        raise AssertionError("no part can come from a server that never answers")

            nursery.start_soon(consume)
            await server.wait_for_requests(1)  # the request is in: the model is waiting for headers
            cancelled_at = time.perf_counter()
            nursery.cancel_scope.cancel()
        exited_at = time.perf_counter()
        await server.all_closed()
    assert exited_at - cancelled_at < 0.1
