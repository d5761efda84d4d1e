"""`agentctl diff | undo`: what a run did to the workspace's files, and putting it back.

Both default to the last run of the current session: the most recently
active session of this directory's workspace (the one `agentctl run -c`
continues), or `--session`. `--run` names any run instead.

`diff` writes only the diff to stdout (so it can be piped to `git apply -R`
or a pager), in colour on a terminal; what it has to say besides goes to stderr.
"""

from __future__ import annotations

import json
import os
import sys

from agentctl._admin import EXIT_ERROR, EXIT_OK, _Failed, _open, _session_of, _with_client
from agentctl._output import emit
from agentctl.errors import ErrorCode, RpcError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any

    from agentctl.blocking import BlockingClient

__all__ = ["diff", "undo"]

_RED, _GREEN, _CYAN, _BOLD, _RESET = "\x1b[31m", "\x1b[32m", "\x1b[36m", "\x1b[1m", "\x1b[0m"
# What the run did, undone: said for each file `undo` put back.
_UNDONE = {"created": "removed {} (the run created it)", "changed": "restored {}", "deleted": "recreated {}"}


class _Nothing(Exception):
    """Nothing to show or undo, said for a person: not an error."""


def _target(client: BlockingClient, args: argparse.Namespace) -> dict[str, str]:
    """The params naming the run: `--run`, else the current session's last run."""
    if args.run:
        return {"run_id": args.run}
    workspace = _open(client, args)
    if args.session:
        session_id = _session_of(client, workspace, args.session)
    else:
        sessions: list[dict[str, Any]] = client.call("session.list", {"workspace_id": workspace[0]})
        if not sessions:
            raise _Nothing(f"no session in this directory's workspace ({workspace[1]}), so no run to {args.command}")
        session_id = max(sessions, key=lambda s: s["updated_at"])["id"]
    return {"workspace_id": workspace[0], "session_id": session_id}


def _call(client: BlockingClient, method: str, params: dict[str, Any], command: str) -> Any:
    """The reply; the daemon's refusals that mean there is nothing to do, or what to type, said so."""
    try:
        return client.call(method, params)
    except RpcError as exc:
        message = exc.message
        if exc.code == ErrorCode.NOT_FOUND and message.endswith(" has no runs"):
            raise _Nothing(f"{message}, so nothing to {command}") from None
        if exc.code == ErrorCode.CONFLICT and message.endswith(" was already reverted"):
            raise _Nothing(
                f"{message.removesuffix(' was already reverted')} was already undone; nothing to undo"
            ) from None
        if exc.code == ErrorCode.CONFLICT and " is still " in message:
            run_state = message.split(";", 1)[0]
            raise _Failed(f"{run_state}; undo it once it has ended (agentctl cancel ends it now)") from None
        raise


def _colour(diff: str) -> str:
    out = []
    for line in diff.splitlines(keepends=True):
        if line.startswith(("--- ", "+++ ")):
            out.append(f"{_BOLD}{line.rstrip(chr(10))}{_RESET}\n")
        elif line.startswith("@@"):
            out.append(f"{_CYAN}{line.rstrip(chr(10))}{_RESET}\n")
        elif line.startswith("+"):
            out.append(f"{_GREEN}{line.rstrip(chr(10))}{_RESET}\n")
        elif line.startswith("-"):
            out.append(f"{_RED}{line.rstrip(chr(10))}{_RESET}\n")
        else:
            out.append(line)
    return "".join(out)


def _use_colour() -> bool:
    return sys.stdout is not None and sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def _counted(files: list[dict[str, Any]]) -> str:
    kinds = [kind for kind in ("created", "changed", "deleted") if any(f["action"] == kind for f in files)]
    parts = ", ".join(f"{sum(1 for f in files if f['action'] == kind)} {kind}" for kind in kinds)
    return f"{len(files)} file{'' if len(files) == 1 else 's'} ({parts})"


def diff(args: argparse.Namespace) -> int:
    def body(client: BlockingClient) -> int:
        try:
            listed = _call(client, "run.changes", _target(client, args), "diff")
        except _Nothing as exc:
            print(f"agentctl diff: {exc}", file=sys.stderr)
            return EXIT_OK
        if args.json:
            emit(json.dumps(listed) + "\n")
            return EXIT_OK
        files: list[dict[str, Any]] = listed["files"]
        run_id = listed["run_id"]
        if not files:
            print(f"agentctl diff: run {run_id} changed no files", file=sys.stderr)
            return EXIT_OK
        undone = " (undone since)" if listed["reverted_at"] is not None else ""
        print(f"agentctl diff: run {run_id}: {_counted(files)}{undone}", file=sys.stderr)
        for f in files:
            if f["changed_since"] and not f["reverted"]:
                print(f"agentctl diff: {f['path']} has changed since the run", file=sys.stderr)
        text = "".join(f["diff"] for f in files)
        emit(_colour(text) if _use_colour() else text)
        return EXIT_OK

    return _with_client(args, body, autostart=True)


def undo(args: argparse.Namespace) -> int:
    def body(client: BlockingClient) -> int:
        try:
            params = _target(client, args)
            result = _call(client, "run.revert", {**params, "force": bool(args.force)}, "undo")
        except _Nothing as exc:
            emit(f"{exc}\n")
            return EXIT_OK
        if args.json:
            emit(json.dumps(result) + "\n")
            return EXIT_OK if not result["refused"] else EXIT_ERROR
        run_id = result["run_id"]
        reverted: list[dict[str, Any]] = result["reverted"]
        refused: list[dict[str, Any]] = result["refused"]
        if not reverted and not refused:
            emit(f"run {run_id} changed no files; nothing to undo\n")
            return EXIT_OK
        lines = [_UNDONE[f["action"]].format(f["path"]) + "\n" for f in reverted]
        if reverted:
            lines.append(f"undid run {run_id}: {len(reverted)} file{'' if len(reverted) == 1 else 's'} put back\n")
        emit("".join(lines))
        if refused:
            for f in refused:
                print(f"agentctl undo: {f['path']}: {f['reason']}", file=sys.stderr)
            if not reverted and not args.force:
                print(
                    f"agentctl undo: nothing undone; `agentctl undo --run {run_id} --force` puts back"
                    " what it can, files changed since included",
                    file=sys.stderr,
                )
            return EXIT_ERROR
        return EXIT_OK

    return _with_client(args, body, autostart=True)
