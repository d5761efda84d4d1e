"""`agentctl status | sessions | cancel | stop`: small requests, printed for people or as JSON."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from agentctl.autostart import DaemonUnavailable, ensure_daemon, is_listening
from agentctl.client import Client, ConnectionLost, RpcError, open_client
from agentd.paths import resolve_socket_path

__all__ = ["cancel", "sessions", "status", "stop"]

EXIT_OK, EXIT_ERROR, EXIT_NOT_RUNNING = 0, 1, 3


def _with_client(
    args: argparse.Namespace,
    body: Callable[[Client], Awaitable[int]],
    *,
    autostart: bool,
) -> int:
    socket_path = resolve_socket_path(args.socket)
    if autostart:
        try:
            ensure_daemon(socket_path)
        except DaemonUnavailable as exc:
            print(f"agentctl: cannot reach agentd: {exc}", file=sys.stderr)
            return EXIT_NOT_RUNNING
    elif not is_listening(socket_path):
        print(f"agentctl: agentd is not running (socket {socket_path})", file=sys.stderr)
        return EXIT_NOT_RUNNING

    async def go() -> int:
        async with open_client(socket_path) as client:
            return await body(client)

    try:
        return trio.run(go)
    except RpcError as exc:
        print(f"agentctl: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except (OSError, ConnectionLost) as exc:
        print(f"agentctl: lost the connection to agentd: {exc}", file=sys.stderr)
        return EXIT_NOT_RUNNING


def _cwd(args: argparse.Namespace) -> str:
    return os.path.abspath(args.cwd or os.getcwd())


def status(args: argparse.Namespace) -> int:
    async def body(client: Client) -> int:
        info = await client.call("server.status")
        if args.json:
            print(json.dumps(info))
        else:
            for key, value in info.items():
                print(f"{key}: {value}")
        return EXIT_OK

    return _with_client(args, body, autostart=False)


def sessions(args: argparse.Namespace) -> int:
    async def body(client: Client) -> int:
        workspace = await client.call("workspace.open", {"path": _cwd(args)})
        found: list[dict[str, Any]] = await client.call("session.list", {"workspace_id": workspace["id"]})
        if args.json:
            print(json.dumps(found))
            return EXIT_OK
        for s in found:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(s["updated_at"]))
            busy = " busy" if s["busy"] else ""
            print(f"{s['id']}  {when}  {s['message_count']:>4} msgs{busy}  {s['title']}")
        return EXIT_OK

    return _with_client(args, body, autostart=True)


def cancel(args: argparse.Namespace) -> int:
    async def body(client: Client) -> int:
        workspace = await client.call("workspace.open", {"path": _cwd(args)})
        if args.session:
            targets = [args.session]
        else:
            listed = await client.call("session.list", {"workspace_id": workspace["id"]})
            targets = [s["id"] for s in listed if s["busy"]]
        if not targets:
            print("nothing to cancel")
        for session_id in targets:
            result = await client.call("agent.cancel", {"workspace_id": workspace["id"], "session_id": session_id})
            print(f"{session_id}: cancelled {result['run_id'] or 'nothing'}, cleared {result['cleared']} queued")
        return EXIT_OK

    return _with_client(args, body, autostart=False)


def stop(args: argparse.Namespace) -> int:
    socket_path = resolve_socket_path(args.socket)
    if not is_listening(socket_path):
        print("agentd is not running")
        return EXIT_OK

    async def body(client: Client) -> int:
        await client.call("server.shutdown", {"if_idle": bool(args.if_idle)})
        # The daemon closes every connection as its last act.
        with trio.move_on_after(10):
            async for _ in client.notifications:
                pass
        print("agentd stopped")
        return EXIT_OK

    return _with_client(args, body, autostart=False)
