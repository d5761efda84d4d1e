"""`agentctl mcp`: the workspace's MCP servers for people, and `agentctl mcp trust` against a real daemon.

`mcp.list` is the MCP supervisor's: its lines are checked here on replies
built from the protocol's own types, and end to end once it is there. Trust
is checked end to end: agentctl, the daemon's `mcp.trust`, the file, and
what the daemon's database then holds.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sqlite3
import threading
from pathlib import Path
from typing import Any

import msgpack
import pytest
from support import WAIT, Daemon, run_agentctl, write_config

from agentctl._admin import _Failed
from agentctl._mcp import _call, format_servers
from agentctl.blocking import BlockingClient
from agentctl.client import RpcError
from agentctl.errors import ErrorCode
from agentd.models import PROJECT_CONFIG, read_project_config
from agentd.protocol import McpServerList, McpServerView, unstructure

PROJECT_FILE = """\
[mcp.notes]
command = ["python3", "-m", "notes_server"]
enabled = false
"""


def listing(**fields: Any) -> dict[str, Any]:
    reply: dict[str, Any] = unstructure(McpServerList(**fields))
    return reply


# --- the lines of `agentctl mcp list` ---------------------------------------------------------------


def test_each_server_is_a_line_with_source_transport_state_tools_restarts_and_last_error() -> None:
    reply = listing(
        servers=[
            McpServerView(
                "notes", "config", "stdio", "ready", tools=["mcp__notes__search", "mcp__notes__add", "mcp__notes__rm"]
            ),
            McpServerView("docs", "config", "http", "failed", error="connection refused", restarts=2, retry_in=4.2),
            McpServerView("off", "config", "stdio", "disabled"),
            McpServerView("project-db", "workspace", "stdio", "untrusted"),
            McpServerView("editor", "session", "stdio", "starting", session_id="ses_1"),
        ],
        project_config="/p/.agentd/config.toml",
        project_trusted=False,
    )
    assert format_servers(reply).splitlines() == [
        "notes       config     stdio  ready       3 tools  0 restarts",
        "docs        config     http   failed      0 tools  2 restarts  retrying in 4s  connection refused",
        "off         config     stdio  disabled    0 tools  0 restarts",
        "project-db  workspace  stdio  untrusted   0 tools  0 restarts  `agentctl mcp trust` starts it",
        "editor      session    stdio  starting    0 tools  0 restarts  session ses_1",
        "project file /p/.agentd/config.toml: not trusted; its servers start once you trust it: agentctl mcp trust",
    ]


def test_a_ready_server_keeps_its_last_error_and_its_restarts() -> None:
    reply = listing(
        servers=[McpServerView("s", "config", "stdio", "ready", tools=["mcp__s__t"], error="crashed", restarts=1)]
    )
    assert format_servers(reply) == "s  config     stdio  ready        1 tool   1 restart  crashed\n"


def test_a_long_error_of_several_lines_is_one_line_cut_short() -> None:
    error = "Traceback (most recent call last):\n" + "  frame\n" * 100
    (line,) = format_servers(
        listing(servers=[McpServerView("s", "config", "stdio", "failed", error=error)])
    ).splitlines()
    assert line.endswith("...") and "Traceback (most recent call last): frame frame" in line
    assert len(line.split("restarts  ", 1)[1]) == 200


def test_a_trusted_project_file_says_so() -> None:
    reply = listing(servers=[], project_config="/p/.agentd/config.toml", project_trusted=True)
    assert format_servers(reply) == "project file /p/.agentd/config.toml: trusted\n"


def test_a_project_file_with_mistakes_lists_them_and_how_to_go_on() -> None:
    mistakes = [
        "/p/.agentd/config.toml:2: [mcp.s] enabled must be true or false, not a string",
        "/p/.agentd/config.toml:5: x",
    ]
    reply = listing(servers=[], project_config="/p/.agentd/config.toml", project_mistakes=mistakes)
    assert format_servers(reply).splitlines() == [
        "project file /p/.agentd/config.toml: 2 mistakes; fix them, then `agentctl mcp trust`",
        f"  {mistakes[0]}",
        f"  {mistakes[1]}",
    ]


def test_no_server_and_no_project_file_says_where_servers_are_configured() -> None:
    assert format_servers(listing(servers=[])) == (
        "no MCP servers: configure them as [mcp.NAME] tables in config.toml, or in this project's .agentd/config.toml\n"
    )


def test_a_daemon_without_the_method_is_said_to_be_older_with_what_to_type() -> None:
    ours, daemon_side = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)

    def old_daemon() -> None:
        # Answers one request as a daemon from before MCP servers does.
        unpacker = msgpack.Unpacker(raw=False)
        while True:
            data = daemon_side.recv(65536)
            if not data:
                return
            unpacker.feed(data)
            for _kind, msgid, method, _params in unpacker:
                error = [ErrorCode.UNKNOWN_METHOD, f"unknown method {method!r}"]
                daemon_side.sendall(msgpack.packb([1, msgid, error, None]))
                return

    thread = threading.Thread(target=old_daemon, daemon=True)
    thread.start()
    try:
        with BlockingClient(ours) as client, pytest.raises(_Failed) as failed:
            _call(client, "mcp.list", "ws_1")
    finally:
        thread.join(WAIT)
        daemon_side.close()
    assert str(failed.value) == (
        "this agentd does not know mcp.list (it is older than this agentctl); `agentctl restart` runs this version"
    )


# --- `agentctl mcp trust`, end to end ---------------------------------------------------------------


def write_project_file(project: Path, text: str) -> Path:
    path = project / PROJECT_CONFIG
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def stored_digest(env: dict[str, str], path: Path) -> str | None:
    """What the daemon's database holds as the trusted digest of `path`, read beside the running daemon."""
    database = Path(env["XDG_DATA_HOME"]) / "agentd" / "agentd.db"
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT digest FROM mcp_trust WHERE path = ?", (str(path),)).fetchone()
    finally:
        conn.close()
    return None if row is None else str(row[0])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ok(result: Any) -> str:
    assert b"Traceback" not in result.stderr, result.stderr.decode()
    assert result.returncode == 0, (result.stdout, result.stderr)
    return str(result.stdout.decode())


async def test_trust_stores_the_files_digest_and_a_changed_file_is_untrusted_until_trusted_again(
    daemon: Daemon, env: dict[str, str], project: Path
) -> None:
    path = write_project_file(project, PROJECT_FILE)
    real = Path(os.path.realpath(path))
    out = ok(await run_agentctl("mcp", "trust", env=env, cwd=project))
    assert out == f"trusted {real}: 1 server (notes)\n"
    assert stored_digest(env, real) == sha256(path)
    first = await read_project_config(os.path.realpath(project))
    assert first is not None and first.is_trusted(stored_digest(env, real))

    write_project_file(project, PROJECT_FILE + '\n[mcp.more]\nurl = "http://127.0.0.1:9/mcp"\n')
    changed = await read_project_config(os.path.realpath(project))
    assert changed is not None and not changed.is_trusted(stored_digest(env, real))

    out = ok(await run_agentctl("mcp", "trust", "--cwd", str(project), env=env))
    assert out == f"trusted {real}: 2 servers (notes, more)\n"
    assert stored_digest(env, real) == sha256(path) == changed.digest
    assert changed.is_trusted(stored_digest(env, real))


async def test_trust_with_json_prints_the_reply(daemon: Daemon, env: dict[str, str], project: Path) -> None:
    path = write_project_file(project, "")
    out = ok(await run_agentctl("mcp", "trust", "--json", env=env, cwd=project))
    assert out == f'{{"path": "{os.path.realpath(path)}", "servers": []}}\n'


async def test_trust_without_a_project_file_says_there_is_nothing_to_trust(
    daemon: Daemon, env: dict[str, str], project: Path
) -> None:
    result = await run_agentctl("mcp", "trust", env=env, cwd=project)
    assert result.returncode == 1
    assert result.stderr.decode() == (
        f"agentctl mcp: workspace {os.path.realpath(project)} has no .agentd/config.toml: there is nothing to trust\n"
    )


async def test_trust_of_a_file_with_mistakes_names_each_and_trusts_nothing(
    daemon: Daemon, env: dict[str, str], project: Path
) -> None:
    path = Path(os.path.realpath(write_project_file(project, 'default_model = "x"\n[mcp.s]\ncommand = "s"\n')))
    result = await run_agentctl("mcp", "trust", env=env, cwd=project)
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == [
        f"agentctl mcp: {path} has mistakes, so it is not trusted; fix them, then `agentctl mcp trust`:",
        f"{path}:1: unknown top-level key 'default_model': only [mcp.NAME] tables are read from a project's"
        " .agentd/config.toml",
        f"{path}:3: [mcp.s] command must be an array: the program, then its arguments, each a string; not a string",
    ]
    assert stored_digest(env, path) is None


async def test_trust_of_a_workspace_that_is_not_open_is_the_workspace_error(daemon: Daemon, project: Path) -> None:
    write_project_file(project, PROJECT_FILE)
    async with daemon.client() as client:
        with pytest.raises(RpcError) as refused:
            await client.call("mcp.trust", {"workspace_id": "ws_nowhere"})
    assert (refused.value.code, refused.value.message) == (
        ErrorCode.NOT_FOUND,
        "workspace_id: no open workspace 'ws_nowhere' (open it with workspace.open)",
    )


# --- `agentctl mcp list`, end to end ------------------------------------------------------------------


async def test_list_shows_the_configurations_servers_and_the_untrusted_project_file(
    daemon: Daemon, env: dict[str, str], project: Path
) -> None:
    write_config(env, '[mcp.off]\ncommand = ["python3", "-c", "pass"]\nenabled = false\n')
    path = write_project_file(project, PROJECT_FILE.replace("notes", "proj"))
    real = os.path.realpath(path)
    out = ok(await run_agentctl("mcp", env=env, cwd=project))
    assert out.splitlines() == [
        "off   config     stdio  disabled    0 tools  0 restarts",
        "proj  workspace  stdio  untrusted   0 tools  0 restarts  `agentctl mcp trust` starts it",
        f"project file {real}: not trusted; its servers start once you trust it: agentctl mcp trust",
    ]
    ok(await run_agentctl("mcp", "trust", env=env, cwd=project))
    out = ok(await run_agentctl("mcp", "list", env=env, cwd=project))
    assert out.splitlines()[-1] == f"project file {real}: trusted"
