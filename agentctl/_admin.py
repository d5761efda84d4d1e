"""`agentctl status | sessions | show | rm | cancel | stop`: small requests, printed for people or as JSON."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from agentctl._sessions import resolve_session
from agentctl.autostart import DaemonUnavailable, ensure_daemon
from agentctl.blocking import BlockingClient
from agentctl.errors import ConnectionLost, RpcError
from agentd.paths import resolve_socket_path

# typing costs milliseconds to import, and agentctl's start-up is measured in them;
# annotations are strings here, so only type checkers need these names.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ["cancel", "models", "rm", "sessions", "show", "status", "stop"]

EXIT_OK, EXIT_ERROR, EXIT_NOT_RUNNING = 0, 1, 3
# How long `stop` waits for the daemon to finish shutting down.
STOP_TIMEOUT = 15.0


def _with_client(
    args: argparse.Namespace,
    body: Callable[[BlockingClient], int],
    *,
    autostart: bool,
    not_running_code: int = EXIT_NOT_RUNNING,
) -> int:
    socket_path = resolve_socket_path(args.socket)
    if autostart:
        try:
            ensure_daemon(socket_path)
        except DaemonUnavailable as exc:
            print(f"agentctl: cannot reach agentd: {exc}", file=sys.stderr)
            return EXIT_NOT_RUNNING
    try:
        client = BlockingClient.connect(socket_path)
    except OSError:
        # Connecting is the probe: a separate one would count as another client.
        if not_running_code == EXIT_OK:
            print("agentd is not running")
        else:
            print(f"agentctl: agentd is not running (socket {socket_path})", file=sys.stderr)
        return not_running_code
    try:
        with client:
            return body(client)
    except RpcError as exc:
        print(f"agentctl: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except (OSError, ConnectionLost) as exc:
        print(f"agentctl: lost the connection to agentd: {exc}", file=sys.stderr)
        return EXIT_NOT_RUNNING


def _cwd(args: argparse.Namespace) -> str:
    return os.path.abspath(args.cwd or os.getcwd())


def _title(session: dict[str, Any]) -> str:
    """A session's title for people: the daemon gives `New session` when none was set."""
    return str(session["title"]) or "(untitled)"


def _emit(text: str) -> None:
    """Write `text` to stdout; a reader that went away (`| head`) is not an error."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # Point stdout at /dev/null so the interpreter's final flush does not complain.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def status(args: argparse.Namespace) -> int:
    def body(client: BlockingClient) -> int:
        info = client.call("server.status")
        if args.json:
            print(json.dumps(info))
        else:
            for key, value in info.items():
                print(f"{key}: {value}")
        return EXIT_OK

    return _with_client(args, body, autostart=False)


def sessions(args: argparse.Namespace) -> int:
    def body(client: BlockingClient) -> int:
        workspace = client.call("workspace.open", {"path": _cwd(args)})
        found: list[dict[str, Any]] = client.call("session.list", {"workspace_id": workspace["id"]})
        if args.json:
            print(json.dumps(found))
            return EXIT_OK
        for s in found:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(s["updated_at"]))
            busy = " busy" if s["busy"] else ""
            print(f"{s['id']}  {when}  {s['message_count']:>4} msgs{busy}  {_title(s)}")
        return EXIT_OK

    return _with_client(args, body, autostart=True)


def _message_heading(message: dict[str, Any]) -> str:
    reason = message["finish_reason"]
    if reason is None:
        return f"## {message['role']} (in progress)"
    if reason != "stop":
        return f"## {message['role']} ({reason})"
    return f"## {message['role']}"


def show(args: argparse.Namespace) -> int:
    def body(client: BlockingClient) -> int:
        workspace_id = client.call("workspace.open", {"path": _cwd(args)})["id"]
        session_id = resolve_session(client, workspace_id, args.session)
        ref = {"workspace_id": workspace_id, "session_id": session_id}
        # Both at once: neither depends on the other's reply.
        get, messages_request = client.request("session.get", ref), client.request("session.messages", ref)
        session = client.wait(get)
        messages: list[dict[str, Any]] = client.wait(messages_request)
        if args.json:
            _emit(json.dumps(messages) + "\n")
            return EXIT_OK
        count = len(messages)
        blocks = [f"# {_title(session)} ({session_id}, {count} message{'' if count == 1 else 's'})"]
        for message in messages:
            text = message["text"].rstrip("\n")
            blocks.append(f"{_message_heading(message)}\n{text}" if text else _message_heading(message))
        _emit("\n\n".join(blocks) + "\n")
        return EXIT_OK

    return _with_client(args, body, autostart=True)


def rm(args: argparse.Namespace) -> int:
    def body(client: BlockingClient) -> int:
        workspace_id = client.call("workspace.open", {"path": _cwd(args)})["id"]
        session_id = resolve_session(client, workspace_id, args.session)
        removed = client.call("session.delete", {"workspace_id": workspace_id, "session_id": session_id})
        print(f"removed {removed['id']} ({_title(removed)})")
        return EXIT_OK

    return _with_client(args, body, autostart=True)


def cancel(args: argparse.Namespace) -> int:
    def body(client: BlockingClient) -> int:
        workspace = client.call("workspace.open", {"path": _cwd(args)})
        if args.session:
            targets = [args.session]
        else:
            listed = client.call("session.list", {"workspace_id": workspace["id"]})
            targets = [s["id"] for s in listed if s["busy"]]
        if not targets:
            print("nothing to cancel")
        for session_id in targets:
            result = client.call("agent.cancel", {"workspace_id": workspace["id"], "session_id": session_id})
            print(f"{session_id}: cancelled {result['run_id'] or 'nothing'}, cleared {result['cleared']} queued")
        return EXIT_OK

    return _with_client(args, body, autostart=False)


def stop(args: argparse.Namespace) -> int:
    def body(client: BlockingClient) -> int:
        client.call("server.shutdown", {"if_idle": bool(args.if_idle)})
        # The daemon closes every connection as its last act.
        deadline = time.monotonic() + STOP_TIMEOUT
        try:
            while time.monotonic() < deadline:
                client.next_notification(deadline - time.monotonic())
        except ConnectionLost:
            print("agentd stopped")
            return EXIT_OK
        print(f"agentctl: agentd did not stop within {STOP_TIMEOUT:.0f}s", file=sys.stderr)
        return EXIT_ERROR

    # Stopping a daemon that is not running has nothing left to do.
    return _with_client(args, body, autostart=False, not_running_code=EXIT_OK)


def models(args: argparse.Namespace) -> int:
    def body(client: BlockingClient) -> int:
        listed = client.call("models.list")
        if args.json:
            print(json.dumps(listed))
            return EXIT_OK
        for model in listed["models"]:
            mark = "*" if model.get("default") else " "
            where = f"{model['provider']}/{model['model']}" if model.get("provider") and model.get("model") else ""
            print(f"{mark} {model['name']:<32} {where}")
        note = listed.get("default_model_note")
        if note:
            print(f"({note})")
        for mistake in listed.get("config_mistakes", ()):
            print(f"agentctl: {mistake}", file=sys.stderr)
        return EXIT_OK

    return _with_client(args, body, autostart=True)
