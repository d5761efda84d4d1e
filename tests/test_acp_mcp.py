"""What `agentctl acp` makes of an editor's `mcpServers`: agentd's McpServerSpec maps, and the notes it tells.

The editor's side is built with the official ACP SDK's schema models, and every
spec made must be one agentd's own converter takes as `session.mcp_servers`
params: a shape either side does not know fails the test.
"""

from __future__ import annotations

from typing import Any

import pytest
from acp.schema import (
    AcpMcpServer,
    EnvVariable,
    HttpHeader,
    HttpMcpServer,
    McpServerStdio,
    SessionNotification,
    SseMcpServer,
)
from pydantic import BaseModel

from agentctl.acp._jsonrpc import INVALID_PARAMS, RpcFailure
from agentctl.acp._mcp import EditorServers, agentd_name, editor_servers, refusal_update
from agentd.mcp import server_name_problem
from agentd.protocol import SessionMcpServersParams, structure_params


def as_sent(*servers: BaseModel) -> list[dict[str, Any]]:
    """The servers as an editor puts them on the wire."""
    return [server.model_dump(mode="json", by_alias=True, exclude_none=True) for server in servers]


def translated(*servers: BaseModel) -> EditorServers:
    result = editor_servers(as_sent(*servers))
    params = {"workspace_id": "wrk_1", "session_id": "ses_1", "servers": result.specs}
    # agentd's converter is strict: an extra key or a wrong type fails here.
    structure_params([params], SessionMcpServersParams)
    return result


def stdio(name: str, command: str = "/usr/bin/srv") -> McpServerStdio:
    return McpServerStdio(name=name, command=command, args=[], env=[])


def test_a_stdio_server_is_its_command_then_its_args_and_its_env_as_a_map() -> None:
    server = McpServerStdio(
        name="files",
        command="/usr/bin/files-mcp",
        args=["--stdio", "--root", "/tmp"],
        env=[EnvVariable(name="TOKEN", value="tok-1"), EnvVariable(name="MODE", value="")],
    )
    result = translated(server)
    assert result.specs == [
        {
            "name": "files",
            "command": ["/usr/bin/files-mcp", "--stdio", "--root", "/tmp"],
            "env": {"TOKEN": "tok-1", "MODE": ""},
        }
    ]
    assert result.notes == []


def test_a_stdio_server_may_say_its_type_and_leave_out_args_and_env() -> None:
    sent = {"type": "stdio", "name": "files", "command": "/usr/bin/files-mcp"}
    assert editor_servers([sent]).specs == [{"name": "files", "command": ["/usr/bin/files-mcp"], "env": {}}]


def test_an_http_server_is_its_url_and_its_headers_as_a_map() -> None:
    server = HttpMcpServer(
        type="http",
        name="tracker",
        url="https://mcp.example.org/mcp",
        headers=[HttpHeader(name="Authorization", value="Bearer sk-1")],
    )
    result = translated(server)
    assert result.specs == [
        {"name": "tracker", "url": "https://mcp.example.org/mcp", "headers": {"Authorization": "Bearer sk-1"}}
    ]
    assert result.notes == []


def test_a_repeated_env_name_keeps_its_last_value() -> None:
    server = McpServerStdio(
        name="files",
        command="/bin/srv",
        args=[],
        env=[EnvVariable(name="A", value="1"), EnvVariable(name="A", value="2")],
    )
    assert translated(server).specs[0]["env"] == {"A": "2"}


def test_sse_and_unknown_transports_are_left_out_by_name_and_the_rest_kept() -> None:
    result = translated(
        SseMcpServer(type="sse", name="events", url="https://example.org/sse", headers=[]),
        stdio("files"),
        AcpMcpServer(type="acp", name="inproc", server_id="srv-1"),
    )
    assert [spec["name"] for spec in result.specs] == ["files"]
    assert result.notes == [
        "MCP server 'events' left out: agentd speaks stdio and streamable HTTP to MCP servers, not SSE",
        "MCP server 'inproc' left out: agentd runs stdio and http MCP servers, not 'acp' ones",
    ]


def test_no_servers_give_no_specs() -> None:
    assert editor_servers([]) == EditorServers([], [])
    assert editor_servers(None) == EditorServers([], [])


@pytest.mark.parametrize(
    ("name", "made"),
    [
        ("files", "files"),
        ("my-files_2", "my-files_2"),
        ("My Files!", "My-Files"),
        ("a  b", "a-b"),
        ("a__b", "a_b"),
        ("a_-_b", "a_-_b"),
        ("_lead", "lead"),
        ("trail_", "trail"),
        ("git.hub/issues", "git-hub-issues"),
        ("über tools", "ber-tools"),
        ("x" * 40, "x" * 32),
        ("a" * 31 + " b", "a" * 31),
        ("日本語", None),
        ("", None),
        ("---", None),
    ],
)
def test_a_name_agentd_refuses_is_made_valid_the_same_way_each_time(name: str, made: str | None) -> None:
    assert agentd_name(name) == made
    if made is not None:
        assert server_name_problem(made) is None


def test_a_renamed_server_is_told_with_both_names() -> None:
    result = translated(stdio("My Files"))
    assert result.specs[0]["name"] == "My-Files"
    assert result.notes == ["MCP server 'My Files' is named 'My-Files' in agentd (its tools are mcp__My-Files__TOOL)"]


def test_a_name_with_nothing_to_keep_is_left_out_and_told() -> None:
    result = translated(stdio("日本語"), stdio("files"))
    assert [spec["name"] for spec in result.specs] == ["files"]
    assert result.notes == ["MCP server '日本語' left out: its name has no letter or digit to name it by in agentd"]


def test_a_made_name_never_takes_one_the_editor_gave() -> None:
    # "a b" would be "a-b", which the second server is called already: the made name gives way.
    result = translated(stdio("a b", "/bin/one"), stdio("a-b", "/bin/two"))
    assert [(spec["name"], spec["command"]) for spec in result.specs] == [
        ("a-b-2", ["/bin/one"]),
        ("a-b", ["/bin/two"]),
    ]


def test_repeated_names_are_numbered_in_the_editors_order_within_the_length_allowed() -> None:
    result = translated(stdio("dup"), stdio("dup"), stdio("dup"), stdio("x" * 32), stdio("x" * 32))
    assert [spec["name"] for spec in result.specs] == ["dup", "dup-2", "dup-3", "x" * 32, "x" * 30 + "-2"]
    assert all(server_name_problem(spec["name"]) is None for spec in result.specs)
    assert result.notes[0] == "MCP server 'dup' is named 'dup-2' in agentd (its tools are mcp__dup-2__TOOL)"


@pytest.mark.parametrize(
    ("servers", "message"),
    [
        ({"name": "x"}, "mcpServers: must be an array"),
        (["x"], r"mcpServers\[0\]: must be an object"),
        ([{"command": "/bin/x"}], r"mcpServers\[0\].name: must be a string"),
        ([{"name": "x"}], r"mcpServers\[0\].command: must be a non-empty string"),
        ([{"name": "x", "command": ""}], r"mcpServers\[0\].command: must be a non-empty string"),
        ([{"name": "x", "command": "/bin/x", "args": "-v"}], r"mcpServers\[0\].args: must be an array of strings"),
        ([{"name": "x", "command": "/bin/x", "args": ["-v", 2]}], r"mcpServers\[0\].args\[1\]: must be a string"),
        ([{"name": "x", "command": "/bin/x", "env": {"A": "1"}}], r"mcpServers\[0\].env: must be an array"),
        ([{"name": "x", "command": "/bin/x", "env": ["A=1"]}], r"mcpServers\[0\].env\[0\]: must be an object"),
        ([{"name": "x", "command": "/bin/x", "env": [{"value": "1"}]}], r"mcpServers\[0\].env\[0\].name: must be"),
        ([{"name": "x", "command": "/bin/x", "env": [{"name": "A"}]}], r"mcpServers\[0\].env\[0\].value: must be"),
        ([{"type": "http", "name": "x"}], r"mcpServers\[0\].url: must be a non-empty string"),
        ([{"type": "http", "name": "x", "url": "https://h", "headers": [{"name": 1, "value": "v"}]}], "headers"),
        ([{"type": 3, "name": "x", "command": "/bin/x"}], r"mcpServers\[0\].type: must be a non-empty string"),
        ([{"name": "ok", "command": "/bin/x"}, {"name": "y"}], r"mcpServers\[1\].command"),
    ],
)
def test_a_malformed_server_is_invalid_params_naming_the_field(servers: Any, message: str) -> None:
    with pytest.raises(RpcFailure, match=message) as failure:
        editor_servers(servers)
    assert failure.value.code == INVALID_PARAMS


def test_no_note_or_error_repeats_an_env_or_header_value() -> None:
    secret = "sk-live-do-not-show"
    server = {
        "type": "http",
        "name": "tracker thing",
        "url": "https://h/mcp",
        "headers": [{"name": "Authorization", "value": secret}, {"name": "X-Other", "value": 7}],
    }
    with pytest.raises(RpcFailure) as failure:
        editor_servers([server])
    assert secret not in failure.value.message
    server["headers"] = [{"name": "Authorization", "value": secret}]
    renamed = editor_servers([server, {"name": "files", "command": "/bin/x", "env": [{"name": "T", "value": secret}]}])
    assert renamed.notes and not any(secret in note for note in renamed.notes)


def test_the_refusal_update_is_a_message_of_its_own_the_sdk_takes_unchanged() -> None:
    update = refusal_update("invalid params: url: must be http or https", "note_1")
    notification = SessionNotification.model_validate({"sessionId": "ses_1", "update": update})
    assert notification.model_dump(mode="json", by_alias=True, exclude_unset=True)["update"] == update
    assert update["messageId"] == "note_1"
    assert "url: must be http or https" in update["content"]["text"]
