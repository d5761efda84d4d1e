"""The sans-io parts of agentd's MCP client: results as text, tool names, and a server's stderr into the log."""

from __future__ import annotations

import logging

import mcp_types as types
import pytest

from agentd.mcp._names import MAX_TOOL_NAME_CHARS, tool_name
from agentd.mcp._results import result_text
from agentd.mcp._stdio import STDERR_LINE_CHARS, STDERR_LINES_PER_MINUTE, Connection, _StderrLog


def test_every_kind_of_content_becomes_text_the_model_can_read() -> None:
    result = types.CallToolResult(
        content=[
            types.TextContent(text="plain"),
            types.ImageContent(data="A" * 4096, mime_type="image/png"),
            types.AudioContent(data="AAAA", mime_type="audio/wav"),
            types.EmbeddedResource(
                resource=types.TextResourceContents(uri="file:///notes.md", mime_type="text/markdown", text="# notes")
            ),
            types.EmbeddedResource(resource=types.BlobResourceContents(uri="file:///a.bin", blob="A" * 2_000_000)),
            types.ResourceLink(name="spec", uri="https://example.com/spec", description="the spec"),
        ]
    )
    text, is_error = result_text(result)
    assert not is_error
    assert text.split("\n") == [
        "plain",
        "[image: image/png, 3.0 KiB; not shown to the model]",
        "[audio: audio/wav, 3 bytes; not shown to the model]",
        "[resource file:///notes.md, text/markdown]",
        "# notes",
        "[resource file:///a.bin: binary, 1.4 MiB; not shown to the model]",
        "[resource link: spec https://example.com/spec (the spec)]",
    ]


def test_structured_content_is_shown_when_there_is_no_text_and_an_error_is_an_error() -> None:
    text, is_error = result_text(types.CallToolResult(content=[], structured_content={"n": 3}))
    assert (text, is_error) == ('{\n "n": 3\n}', False)
    text, is_error = result_text(types.CallToolResult(content=[types.TextContent(text="no")], is_error=True))
    assert (text, is_error) == ("no", True)


@pytest.mark.parametrize(
    ("server", "tool", "name"),
    [
        ("box", "add", "mcp__box__add"),
        ("box", "files.read/all", "mcp__box__files_read_all"),
        ("box", "", "mcp__box___"),
    ],
)
def test_tool_names_are_what_providers_take(server: str, tool: str, name: str) -> None:
    assert tool_name(server, tool) == name


def test_a_long_tool_name_is_cut_and_stays_apart_from_its_neighbours() -> None:
    first, second = tool_name("box", "x" * 80 + "a"), tool_name("box", "x" * 80 + "b")
    assert len(first) == len(second) == MAX_TOOL_NAME_CHARS
    assert first != second
    assert first == tool_name("box", "x" * 80 + "a")


async def test_stderr_is_logged_a_line_at_a_time_cut_within_a_budget_and_without_secrets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="agentd.mcp")
    connection = Connection(read=None, write=None)
    stderr = _StderrLog("box", {"s3cret-token-value": "[TOKEN]"}, connection)
    stderr.feed(b"first line with s3cret-token-value\nsecond ")
    stderr.feed(b"half\n" + b"y" * (STDERR_LINE_CHARS * 10) + b"\n")
    for i in range(STDERR_LINES_PER_MINUTE):
        stderr.feed(f"flood {i}\n".encode())
    stderr.finish()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "mcp box: first line with [TOKEN]"
    assert lines[1] == "mcp box: second half"
    assert lines[2] == "mcp box: " + "y" * STDERR_LINE_CHARS + " [...]"
    assert len(lines) == STDERR_LINES_PER_MINUTE + 1
    assert lines[-1] == "mcp box: 3 more lines of stderr were not logged"
    assert connection.last_stderr == f"flood {STDERR_LINES_PER_MINUTE - 1}"
    assert "s3cret" not in "\n".join(lines)
