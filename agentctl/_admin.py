"""`agentctl status | sessions | show | rm | cancel | stop | models`: small requests, printed for people or as JSON."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from agentctl._explain import explain, is_unknown_session
from agentctl._output import emit
from agentctl._sessions import not_here, resolve_session
from agentctl._version import version_mismatch
from agentctl.autostart import DaemonUnavailable, ensure_daemon
from agentctl.blocking import BlockingClient
from agentctl.errors import ConnectionLost, RpcError
from agentd.paths import resolve_socket_path, socket_path_problem
from agentd.trust import UntrustedSocket

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


class _Failed(Exception):
    """A command's own error, already put for a person."""


def _with_client(
    args: argparse.Namespace,
    body: Callable[[BlockingClient], int],
    *,
    autostart: bool,
    not_running_code: int = EXIT_NOT_RUNNING,
) -> int:
    name = f"agentctl {args.command}"
    socket_path = resolve_socket_path(args.socket)
    try:
        if autostart:
            ensure_daemon(socket_path)
        client = BlockingClient.connect(socket_path)
    except DaemonUnavailable as exc:
        print(f"{name}: cannot reach agentd: {exc}", file=sys.stderr)
        return EXIT_NOT_RUNNING
    except UntrustedSocket as exc:
        print(f"{name}: refusing to use the socket: {exc}", file=sys.stderr)
        return EXIT_NOT_RUNNING
    except OSError:
        # Connecting is the probe: a separate one would count as another client.
        problem = socket_path_problem(socket_path)
        if problem is not None:
            print(f"{name}: {problem}", file=sys.stderr)
            return EXIT_NOT_RUNNING
        if not_running_code == EXIT_OK:
            emit("agentd is not running\n")
        else:
            print(f"{name}: agentd is not running (socket {socket_path})", file=sys.stderr)
        return not_running_code
    # Only the socket's failures are a lost daemon: a closed stdout is
    # `StdoutClosed`, which goes past these to `cli.main`.
    try:
        with client:
            return body(client)
    except _Failed as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except RpcError as exc:
        print(f"{name}: {explain(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except ConnectionLost as exc:
        print(f"{name}: lost the connection to agentd: {exc}", file=sys.stderr)
        return EXIT_NOT_RUNNING


def _cwd(args: argparse.Namespace) -> str:
    return os.path.abspath(args.cwd or os.getcwd())


def _open(client: BlockingClient, args: argparse.Namespace) -> tuple[str, str]:
    """The workspace of `--cwd` (else the current directory): its id and its path as agentd resolved it."""
    workspace = client.call("workspace.open", {"path": _cwd(args)})
    return str(workspace["id"]), str(workspace["path"])


def _session_of(client: BlockingClient, workspace: tuple[str, str], ref: str) -> str:
    """The session `ref` names in `workspace`; not found says where it is instead."""
    try:
        return resolve_session(client, workspace[0], ref)
    except RpcError as exc:
        if is_unknown_session(exc):
            raise _Failed(not_here(client, ref, workspace[1])) from None
        raise


def _title(session: dict[str, Any]) -> str:
    """A session's title for people: the daemon gives `New session` when none was set."""
    return str(session["title"]) or "(untitled)"


def status(args: argparse.Namespace) -> int:
    def body(client: BlockingClient) -> int:
        info = client.call("server.status")
        if args.json:
            emit(json.dumps(info) + "\n")
        else:
            emit("".join(f"{key}: {value}\n" for key, value in info.items()))
        # On stderr, so what stdout says (and its JSON) keeps one shape.
        mismatch = version_mismatch(info.get("version"))
        if mismatch is not None:
            print(f"agentctl status: {mismatch}", file=sys.stderr)
        return EXIT_OK

    return _with_client(args, body, autostart=False)


def _session_line(s: dict[str, Any]) -> str:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(s["updated_at"]))
    busy = " busy" if s["busy"] else ""
    return f"{s['id']}  {when}  {s['message_count']:>4} msgs{busy}  {_title(s)}\n"


def sessions(args: argparse.Namespace) -> int:
    def body(client: BlockingClient) -> int:
        if args.all_:
            groups: list[dict[str, Any]] = client.call("session.list_all")
            if args.json:
                emit(json.dumps(groups) + "\n")
                return EXIT_OK
            blocks = [
                group["workspace"]["path"] + "\n" + "".join("  " + _session_line(s) for s in group["sessions"])
                for group in groups
            ]
            emit("\n".join(blocks))
            return EXIT_OK
        workspace_id, _path = _open(client, args)
        found: list[dict[str, Any]] = client.call("session.list", {"workspace_id": workspace_id})
        if args.json:
            emit(json.dumps(found) + "\n")
            return EXIT_OK
        emit("".join(_session_line(s) for s in found))
        return EXIT_OK

    return _with_client(args, body, autostart=True)


def _message_heading(message: dict[str, Any]) -> str:
    reason = message["finish_reason"]
    if reason is None:
        return f"## {message['role']} (in progress)"
    if reason != "stop":
        return f"## {message['role']} ({reason})"
    return f"## {message['role']}"


def _part_lines(message: dict[str, Any]) -> list[str]:
    """A line per tool call an assistant message made, or per result a tool message holds."""
    lines = []
    for part in message.get("parts") or ():
        if part.get("type") == "tool_call":
            lines.append(f"> {part.get('name')} {_clipped(part.get('arguments'))}")
        elif part.get("type") == "tool_result":
            status = part.get("status")
            how = part.get("summary") if status == "ok" else f"{status}: {part.get('summary')}"
            lines.append(f"< {part.get('name')}: {_clipped(how)}")
    return lines


def _clipped(text: object, limit: int = 200) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _run_ending(run: dict[str, Any]) -> str | None:
    """What a finished run that did not succeed ended with, for under its answer; None if it succeeded."""
    rc = run.get("complete")
    if rc is None:
        return None
    if rc.get("cancelled"):
        return "(run cancelled)"
    if rc.get("error"):
        return f"(run failed: {rc['error']})"
    return None


def show(args: argparse.Namespace) -> int:
    def body(client: BlockingClient) -> int:
        workspace = _open(client, args)
        session_id = _session_of(client, workspace, args.session)
        ref = {"workspace_id": workspace[0], "session_id": session_id}
        # Both at once: neither depends on the other's reply.
        get, messages_request = client.request("session.get", ref), client.request("session.messages", ref)
        session = client.wait(get)
        messages: list[dict[str, Any]] = client.wait(messages_request)
        if args.json:
            emit(json.dumps(messages) + "\n")
            return EXIT_OK
        # A run whose last message is not a finished answer failed, was
        # cancelled, or is still going: its RunComplete says which, and why.
        last_of_run: dict[str, dict[str, Any]] = {}
        for message in messages:
            if message["run_id"]:
                last_of_run[message["run_id"]] = message
        unsure = [
            run_id
            for run_id, last in last_of_run.items()
            if last["role"] != "assistant" or last["finish_reason"] != "stop"
        ]
        requests = {run_id: client.request("run.get", {"run_id": run_id}) for run_id in unsure}
        endings: dict[str, str] = {}
        for run_id, msgid in requests.items():
            try:
                ending = _run_ending(client.wait(msgid))
            except RpcError:
                continue  # a run the store no longer holds: nothing to add
            if ending is not None:
                endings[run_id] = ending
        count = len(messages)
        blocks = [f"# {_title(session)} ({session_id}, {count} message{'' if count == 1 else 's'})"]
        for message in messages:
            text = "\n".join(filter(None, [message["text"].rstrip("\n"), *_part_lines(message)]))
            block = f"{_message_heading(message)}\n{text}" if text else _message_heading(message)
            run_id = message["run_id"]
            if run_id in endings and last_of_run[run_id] is message:
                block += "\n" + endings[run_id]
            blocks.append(block)
        emit("\n\n".join(blocks) + "\n")
        return EXIT_OK

    return _with_client(args, body, autostart=True)


def rm(args: argparse.Namespace) -> int:
    def body(client: BlockingClient) -> int:
        workspace = _open(client, args)
        session_id = _session_of(client, workspace, args.session)
        removed = client.call("session.delete", {"workspace_id": workspace[0], "session_id": session_id})
        emit(f"removed {removed['id']} ({_title(removed)})\n")
        return EXIT_OK

    return _with_client(args, body, autostart=True)


def cancel(args: argparse.Namespace) -> int:
    def body(client: BlockingClient) -> int:
        workspace = _open(client, args)
        if args.session:
            targets = [_session_of(client, workspace, args.session)]
        else:
            listed = client.call("session.list", {"workspace_id": workspace[0]})
            targets = [s["id"] for s in listed if s["busy"]]
        if not targets:
            emit("nothing to cancel\n")
        for session_id in targets:
            result = client.call("agent.cancel", {"workspace_id": workspace[0], "session_id": session_id})
            emit(f"{session_id}: cancelled {result['run_id'] or 'nothing'}, cleared {result['cleared']} queued\n")
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
            emit("agentd stopped\n")
            return EXIT_OK
        print(f"agentctl stop: agentd did not stop within {STOP_TIMEOUT:.0f}s", file=sys.stderr)
        return EXIT_ERROR

    # Stopping a daemon that is not running has nothing left to do.
    return _with_client(args, body, autostart=False, not_running_code=EXIT_OK)


def models(args: argparse.Namespace) -> int:
    def body(client: BlockingClient) -> int:
        listed = client.call("models.list")
        if args.json:
            emit(json.dumps(listed) + "\n")
            return EXIT_OK
        lines = []
        for model in listed["models"]:
            mark = "*" if model.get("default") else " "
            where = f"{model['provider']}/{model['model']}" if model.get("provider") and model.get("model") else ""
            lines.append(f"{mark} {model['name']:<32} {where}\n")
        note = listed.get("default_model_note")
        if note:
            lines.append(f"({note})\n")
        emit("".join(lines))
        for mistake in listed.get("config_mistakes", ()):
            print(f"agentctl: {mistake}", file=sys.stderr)
        return EXIT_OK

    return _with_client(args, body, autostart=True)
