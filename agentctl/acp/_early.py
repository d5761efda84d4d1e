"""`agentctl acp` before trio: the answer to the editor's `initialize`, then the bridge.

An editor starts the agent and waits for the answer to `initialize` before it
shows it. That answer needs neither trio nor the client library nor the
daemon, which together cost a few hundred milliseconds to import and reach;
so the first message is read and, when it is `initialize`, answered here with
plain reads and writes, and the bridge takes over from there (with whatever
else was read), importing and connecting while the editor reads the answer.
"""

from __future__ import annotations

import os

import agentd
from agentctl.acp._jsonrpc import INVALID_PARAMS, Connection, Request, RpcFailure

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["PROTOCOL_VERSION", "field", "initialize_result", "main"]

PROTOCOL_VERSION = 1
READ_SIZE = 65536


def field(params: Any, name: str, kind: type, *, required: bool = True) -> Any:
    """params[name], checked: a wrong or missing one is -32602 naming it."""
    if not isinstance(params, dict):
        raise RpcFailure(INVALID_PARAMS, "params must be an object")
    if name not in params or params[name] is None:
        if required:
            raise RpcFailure(INVALID_PARAMS, f"{name}: required")
        return None
    value = params[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise RpcFailure(INVALID_PARAMS, f"{name}: must be {'a string' if kind is str else kind.__name__}")
    return value


def initialize_result(params: Any) -> dict[str, Any]:
    field(params, "protocolVersion", int)
    # Version 1 is the only one: asked for it, or for another, the answer is the one we speak.
    return {
        "protocolVersion": PROTOCOL_VERSION,
        "agentInfo": {"name": "agentd", "title": "agentd", "version": agentd.__version__},
        "agentCapabilities": {
            "loadSession": True,
            "promptCapabilities": {"image": False, "audio": False, "embeddedContext": True},
            "mcpCapabilities": {"http": True, "sse": False},
            "sessionCapabilities": {"list": {}},
        },
        "authMethods": [],
    }


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def main(model: str | None, socket: str | None) -> int:
    rpc = Connection()
    first = None
    while first is None:
        try:
            data = os.read(0, READ_SIZE)
        except OSError:
            return 0
        if not data:
            return 0  # the editor left before saying anything
        rpc.receive_data(data)
        first = rpc.next_event()
    answered = False
    if isinstance(first, Request) and first.method == "initialize":
        try:
            reply = rpc.result(first.id, initialize_result(first.params))
        except RpcFailure as exc:
            reply = rpc.error(first.id, exc.code, exc.message)
        try:
            _write_all(1, reply)
        except OSError:
            return 0  # the editor is gone
        answered = True
    from agentctl.acp._bridge import main as bridge_main

    return bridge_main(model, socket, rpc, None if answered else first, answered)
