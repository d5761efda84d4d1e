"""`agentctl mcp [list] | trust`: the MCP servers of this directory's workspace, and trusting its .agentd/config.toml.

`list` prints a line per server (name, where it was configured, transport,
state, tools, restarts, the last error), then what is known of the project's
own file; `trust` lets that file's servers start, as the file is now.
"""

from __future__ import annotations

import json

from agentctl._admin import EXIT_OK, _Failed, _open, _with_client
from agentctl._output import emit
from agentctl.errors import ErrorCode, RpcError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any

    from agentctl.blocking import BlockingClient

__all__ = ["format_servers", "list_servers", "trust"]

TRUST_HINT = "agentctl mcp trust"
_NOT_TRUSTED = " has mistakes, so it is not trusted (fix them, then trust it again):"
# A line per server: an error longer than this is cut (the daemon's log has it whole).
_MAX_ERROR = 200


def _call(client: BlockingClient, method: str, workspace_id: str) -> Any:
    """The reply; the refusals a person acts on, said with what to type."""
    try:
        return client.call(method, {"workspace_id": workspace_id})
    except RpcError as exc:
        if exc.code == ErrorCode.UNKNOWN_METHOD:
            raise _Failed(
                f"this agentd does not know {method} (it is older than this agentctl);"
                " `agentctl restart` runs this version"
            ) from None
        if exc.code == ErrorCode.INVALID_PARAMS and _NOT_TRUSTED in exc.message:
            path, _, mistakes = exc.message.partition(_NOT_TRUSTED)
            raise _Failed(
                f"{path} has mistakes, so it is not trusted; fix them, then `{TRUST_HINT}`:{mistakes}"
            ) from None
        raise


def list_servers(args: argparse.Namespace) -> int:
    def body(client: BlockingClient) -> int:
        workspace_id, _path = _open(client, args)
        listed = _call(client, "mcp.list", workspace_id)
        emit(json.dumps(listed) + "\n" if args.json else format_servers(listed))
        return EXIT_OK

    return _with_client(args, body, autostart=True)


def trust(args: argparse.Namespace) -> int:
    def body(client: BlockingClient) -> int:
        workspace_id, _path = _open(client, args)
        trusted = _call(client, "mcp.trust", workspace_id)
        if args.json:
            emit(json.dumps(trusted) + "\n")
            return EXIT_OK
        servers: list[str] = trusted["servers"]
        if servers:
            emit(f"trusted {trusted['path']}: {_count(len(servers), 'server')} ({', '.join(servers)})\n")
        else:
            emit(f"trusted {trusted['path']}: it configures no server\n")
        return EXIT_OK

    return _with_client(args, body, autostart=True)


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def format_servers(listed: dict[str, Any]) -> str:
    """An `mcp.list` reply for people: a line per server, then the project file's."""
    servers: list[dict[str, Any]] = listed["servers"]
    project = listed.get("project_config")
    if not servers and project is None:
        return (
            "no MCP servers: configure them as [mcp.NAME] tables in config.toml,"
            " or in this project's .agentd/config.toml\n"
        )
    width = max((len(s["name"]) for s in servers), default=0)
    lines = [_server_line(s, width) for s in servers]
    if project is not None:
        lines += _project_lines(project, bool(listed.get("project_trusted")), listed.get("project_mistakes") or [])
    return "".join(line + "\n" for line in lines)


def _server_line(server: dict[str, Any], width: int) -> str:
    columns = [
        server["name"].ljust(width),
        str(server["source"]).ljust(9),
        str(server["transport"]).ljust(5),
        str(server["state"]).ljust(9),
        _count(len(server.get("tools") or ()), "tool").rjust(8),
        _count(int(server.get("restarts") or 0), "restart").rjust(10),
    ]
    notes = []
    if server.get("session_id"):
        notes.append(f"session {server['session_id']}")
    if server.get("retry_in") is not None:
        notes.append(f"retrying in {float(server['retry_in']):.0f}s")
    if server.get("state") == "untrusted":
        notes.append(f"`{TRUST_HINT}` starts it")
    error = server.get("error")
    if error:
        notes.append(_one_line(str(error)))
    return "  ".join(columns + notes).rstrip()


def _project_lines(path: str, trusted: bool, mistakes: list[str]) -> list[str]:
    if mistakes:
        head = f"project file {path}: {_count(len(mistakes), 'mistake')}; fix them, then `{TRUST_HINT}`"
        return [head, *(f"  {mistake}" for mistake in mistakes)]
    if trusted:
        return [f"project file {path}: trusted"]
    return [f"project file {path}: not trusted; its servers start once you trust it: {TRUST_HINT}"]


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _MAX_ERROR else line[: _MAX_ERROR - 3] + "..."
