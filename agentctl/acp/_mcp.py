"""An editor's `mcpServers` as agentd's McpServerSpec maps, and what the editor's user is told about them. No I/O.

    servers = editor_servers(params["mcpServers"])  # RpcFailure (-32602) naming the field when malformed
    servers.specs                       # McpServerSpec maps, in the editor's order, for session.mcp_servers
    servers.notes                       # one line per server renamed or left out, for stderr
    update = refusal_update(reason, message_id)  # the session/update telling the user agentd refused them

ACP's shapes: stdio `{name, command, args, env: [{name, value}]}` (no `type`,
or `"stdio"`), `{type: "http", name, url, headers: [{name, value}]}`, and
`{type: "sse", ...}`. agentd runs stdio and streamable-HTTP servers, so an SSE
one (or one of a type it does not know) is left out, by name.

A name agentd's rule (`server_name_problem`) refuses is made into one it takes,
the same way each time: every other character becomes '-', runs of '-' or '_'
become one, '-' and '_' go from both ends, and it is cut to the longest name
allowed. Names the editor gave that are valid stay as they are; a made name (or
a repeated one) that another server has already gets '-2', '-3'... A name with
no letter or digit to keep is left out. Env and header values are passed on,
never told.
"""

from __future__ import annotations

import re
from typing import Any

import attrs

from agentd.mcp import MAX_NAME_CHARS, server_name_problem

from ._jsonrpc import INVALID_PARAMS, RpcFailure

__all__ = ["EditorServers", "agentd_name", "editor_servers", "refusal_update"]

_OTHER = re.compile(r"[^A-Za-z0-9_-]")
_RUNS = re.compile(r"-{2,}|_{2,}")


@attrs.frozen
class EditorServers:
    """The editor's servers as agentd takes them."""

    # McpServerSpec maps ({name, command, env} or {name, url, headers}), for session.mcp_servers.
    specs: list[dict[str, Any]]
    # What the user is told: each server renamed or left out, by the editor's name for it.
    notes: list[str]


def agentd_name(name: str) -> str | None:
    """`name` if agentd takes it, else the name made of it (see the module's doc); None when nothing is left."""
    if server_name_problem(name) is None:
        return name
    made = _RUNS.sub(lambda run: run.group()[0], _OTHER.sub("-", name)).strip("-_")
    made = made[:MAX_NAME_CHARS].rstrip("-_")
    return made if server_name_problem(made) is None else None


def _suffixed(name: str, taken: set[str]) -> str:
    n = 2
    while True:
        suffix = f"-{n}"
        candidate = name[: MAX_NAME_CHARS - len(suffix)].rstrip("-_") + suffix
        if candidate not in taken:
            return candidate
        n += 1


def _string(value: Any, where: str, *, empty: bool = False) -> str:
    if not isinstance(value, str) or (not empty and not value):
        raise RpcFailure(INVALID_PARAMS, f"{where}: must be a {'' if empty else 'non-empty '}string")
    return value


def _pairs(server: dict[str, Any], key: str, where: str) -> dict[str, str]:
    """ACP's [{name, value}] (env, headers) as a map; the last of a repeated name wins."""
    entries = server.get(key)
    if entries is None:
        return {}
    if not isinstance(entries, list):
        raise RpcFailure(INVALID_PARAMS, f"{where}.{key}: must be an array of {{name, value}}")
    pairs: dict[str, str] = {}
    for i, entry in enumerate(entries):
        at = f"{where}.{key}[{i}]"
        if not isinstance(entry, dict):
            raise RpcFailure(INVALID_PARAMS, f"{at}: must be an object {{name, value}}")
        # The value may be a secret: a message names where it is, never what it is.
        pairs[_string(entry.get("name"), f"{at}.name")] = _string(entry.get("value"), f"{at}.value", empty=True)
    return pairs


def _spec(server: dict[str, Any], kind: str, where: str) -> dict[str, Any]:
    if kind == "stdio":
        args = server.get("args")
        if args is None:
            args = []
        if not isinstance(args, list):
            raise RpcFailure(INVALID_PARAMS, f"{where}.args: must be an array of strings")
        command = [_string(server.get("command"), f"{where}.command")]
        command += [_string(arg, f"{where}.args[{i}]", empty=True) for i, arg in enumerate(args)]
        return {"command": command, "env": _pairs(server, "env", where)}
    return {"url": _string(server.get("url"), f"{where}.url"), "headers": _pairs(server, "headers", where)}


def editor_servers(servers: Any) -> EditorServers:
    """session/new's or session/load's `mcpServers` (None: none) as agentd's specs, and the notes to tell."""
    if servers is None:
        servers = []
    if not isinstance(servers, list):
        raise RpcFailure(INVALID_PARAMS, "mcpServers: must be an array")
    notes: list[str] = []
    # (the editor's name, the spec without its name), checked whole before any name is given out.
    kept: list[tuple[str, dict[str, Any]]] = []
    for i, server in enumerate(servers):
        where = f"mcpServers[{i}]"
        if not isinstance(server, dict):
            raise RpcFailure(INVALID_PARAMS, f"{where}: must be an object")
        name = _string(server.get("name"), f"{where}.name", empty=True)
        kind = server.get("type", "stdio")
        if kind is None:
            kind = "stdio"
        kind = _string(kind, f"{where}.type")
        if kind == "sse":
            notes.append(
                f"MCP server {name!r} left out: agentd speaks stdio and streamable HTTP to MCP servers, not SSE"
            )
        elif kind not in ("stdio", "http"):
            notes.append(f"MCP server {name!r} left out: agentd runs stdio and http MCP servers, not {kind!r} ones")
        else:
            kept.append((name, _spec(server, kind, where)))
    # Valid names the editor gave are theirs first: a made name must not take one of them.
    taken: set[str] = set()
    theirs = {name for name, _ in kept if server_name_problem(name) is None}
    specs: list[dict[str, Any]] = []
    for name, spec in kept:
        made = agentd_name(name)
        if made is None:
            notes.append(f"MCP server {name!r} left out: its name has no letter or digit to name it by in agentd")
            continue
        if made in taken or (made != name and made in theirs):
            made = _suffixed(made, taken | theirs)
        taken.add(made)
        if made != name:
            notes.append(f"MCP server {name!r} is named {made!r} in agentd (its tools are mcp__{made}__TOOL)")
        specs.append({"name": made} | spec)
    return EditorServers(specs, notes)


def refusal_update(reason: str, message_id: str) -> dict[str, Any]:
    """The session/update that tells the editor's user agentd refused the session's MCP servers.

    ACP has no update for a notice: it comes as a message of its own from the
    agent, before (or between) the turns, so that the user sees it where the
    servers' tools would have been missed.
    """
    text = f"agentd did not take this session's MCP servers: {reason}. The session goes on without them."
    return {"sessionUpdate": "agent_message_chunk", "content": {"type": "text", "text": text}, "messageId": message_id}
