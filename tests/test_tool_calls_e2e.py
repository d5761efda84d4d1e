"""Each real provider's tool calls end to end: agentctl run, the daemon's agent loop, a workspace tool, a loopback provider.

The loopback provider answers the first request with a call of `view` in its
own wire format, cut into small pieces, and the second with text; the test
checks what the daemon sent it the second time and what agentctl printed.
"""

# The SSE bodies keep the providers' one-event-per-line layout, however long the line.
# ruff: noqa: E501

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
from loopback_http import LoopbackServer, Pause, Streamed, start_loopback_server
from support import DaemonFactory, configure_loopback, run_agentctl
from transcripts import anthropic_body

KEY_ENV = "AGENTD_E2E_TOOLS_KEY"
KEY = "sk-e2e-tools-NEVER-PRINT-THIS"
NOTES = "the secret word is swordfish\nand nobody may know it\n"
ANSWER = "The secret word is swordfish."

OPENAI_VIEW = (
    b'data: {"id":"chatcmpl-7","object":"chat.completion.chunk","created":1700000000,"model":"loop-model-1","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_Vw1","type":"function","function":{"name":"view","arguments":""}}]},"logprobs":null,"finish_reason":null}]}\n\n'
    b'data: {"id":"chatcmpl-7","object":"chat.completion.chunk","created":1700000000,"model":"loop-model-1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\\"pa"}}]},"logprobs":null,"finish_reason":null}]}\n\n'
    b'data: {"id":"chatcmpl-7","object":"chat.completion.chunk","created":1700000000,"model":"loop-model-1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"th\\": \\"notes.t"}}]},"logprobs":null,"finish_reason":null}]}\n\n'
    b'data: {"id":"chatcmpl-7","object":"chat.completion.chunk","created":1700000000,"model":"loop-model-1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"xt\\"}"}}]},"logprobs":null,"finish_reason":null}]}\n\n'
    b'data: {"id":"chatcmpl-7","object":"chat.completion.chunk","created":1700000000,"model":"loop-model-1","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"tool_calls"}]}\n\n'
    b'data: {"id":"chatcmpl-7","object":"chat.completion.chunk","created":1700000000,"model":"loop-model-1","choices":[],"usage":{"prompt_tokens":300,"completion_tokens":20,"total_tokens":320}}\n\n'
    b"data: [DONE]\n\n"
)
OPENAI_ANSWER = (
    b'data: {"id":"chatcmpl-8","object":"chat.completion.chunk","created":1700000000,"model":"loop-model-1","choices":[{"index":0,"delta":{"role":"assistant","content":"The secret word"},"logprobs":null,"finish_reason":null}]}\n\n'
    b'data: {"id":"chatcmpl-8","object":"chat.completion.chunk","created":1700000000,"model":"loop-model-1","choices":[{"index":0,"delta":{"content":" is swordfish."},"logprobs":null,"finish_reason":null}]}\n\n'
    b'data: {"id":"chatcmpl-8","object":"chat.completion.chunk","created":1700000000,"model":"loop-model-1","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}\n\n'
    b'data: {"id":"chatcmpl-8","object":"chat.completion.chunk","created":1700000000,"model":"loop-model-1","choices":[],"usage":{"prompt_tokens":340,"completion_tokens":8,"total_tokens":348}}\n\n'
    b"data: [DONE]\n\n"
)

ANTHROPIC_VIEW = anthropic_body(r"""
event: message_start
data: {"type":"message_start","message":{"id":"msg_01View","type":"message","role":"assistant","model":"loop-model-1","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":300,"output_tokens":2}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_01Vw","name":"view","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"pa"}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"th\": \"notes.t"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"xt\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":20}}

event: message_stop
data: {"type":"message_stop"}
""")
ANTHROPIC_ANSWER = anthropic_body(r"""
event: message_start
data: {"type":"message_start","message":{"id":"msg_01Answer","type":"message","role":"assistant","model":"loop-model-1","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":340,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"The secret word"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" is swordfish."}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":8}}

event: message_stop
data: {"type":"message_stop"}
""")


def configure(env: dict[str, str], provider_type: str, base_url: str) -> None:
    configure_loopback(
        env, base_url, key_env=KEY_ENV, key=KEY, provider_type=provider_type, default_model="loop/loop-model-1"
    )


def in_pieces(raw: bytes, size: int = 9) -> list[bytes | Pause]:
    """`raw` in pieces that cut lines and JSON wherever they fall."""
    return [raw[i : i + size] for i in range(0, len(raw), size)]


async def ask_about_notes(
    provider_type: str, first: bytes, second: bytes, start_daemon: DaemonFactory, project: Path, env: dict[str, str]
) -> tuple[LoopbackServer, bytes]:
    """agentctl run against a loopback provider answering `first`, then `second`; the server and agentctl's stdout."""
    (project / "notes.txt").write_text(NOTES)
    async with trio.open_nursery() as nursery:
        server = await start_loopback_server(nursery)
        configure(env, provider_type, server.url)
        start_daemon()
        server.script(Streamed(in_pieces(first)), Streamed(in_pieces(second)))
        result = await run_agentctl("run", "What is the secret word in notes.txt?", env=env, cwd=project)
        assert result.returncode == 0, result.stderr
        nursery.cancel_scope.cancel()
    assert len(server.requests) == 2
    return server, result.stdout


def tool_names(body: dict[str, Any], provider_type: str) -> list[str]:
    if provider_type == "openai":
        return [tool["function"]["name"] for tool in body["tools"]]
    return [tool["name"] for tool in body["tools"]]


async def test_openai_model_views_a_workspace_file_and_answers_through_agentctl_run(
    start_daemon: DaemonFactory, project: Path, env: dict[str, str]
) -> None:
    server, stdout = await ask_about_notes("openai", OPENAI_VIEW, OPENAI_ANSWER, start_daemon, project, env)
    asked, told = (request.json for request in server.requests)
    assert "view" in tool_names(asked, "openai") and tool_names(told, "openai") == tool_names(asked, "openai")
    *before, call, result = told["messages"]
    assert before == asked["messages"]
    assert call == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_Vw1", "type": "function", "function": {"name": "view", "arguments": '{"path": "notes.txt"}'}}
        ],
    }
    assert (result["role"], result["tool_call_id"]) == ("tool", "call_Vw1")
    for line in NOTES.splitlines():
        assert line in result["content"]
    assert stdout.decode().endswith(ANSWER + "\n")


async def test_anthropic_model_views_a_workspace_file_and_answers_through_agentctl_run(
    start_daemon: DaemonFactory, project: Path, env: dict[str, str]
) -> None:
    server, stdout = await ask_about_notes("anthropic", ANTHROPIC_VIEW, ANTHROPIC_ANSWER, start_daemon, project, env)
    assert all(request.path == "/v1/messages" for request in server.requests)
    asked, told = (request.json for request in server.requests)
    assert "view" in tool_names(asked, "anthropic") and tool_names(told, "anthropic") == tool_names(asked, "anthropic")
    *before, call, results = told["messages"]
    assert before == asked["messages"]
    assert call == {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "toolu_01Vw", "name": "view", "input": {"path": "notes.txt"}}],
    }
    assert results["role"] == "user"
    [result] = results["content"]
    assert (result["type"], result["tool_use_id"], result["is_error"]) == ("tool_result", "toolu_01Vw", False)
    for line in NOTES.splitlines():
        assert line in result["content"]
    assert stdout.decode().endswith(ANSWER + "\n")
