"""Error replies, said for someone at a shell: what happened, and the command to type about it.

The daemon's messages speak protocol (`conflict: ... cancel it first
(agent.cancel)`); a user needs `agentctl cancel`. Replies this module does not
know keep their message, without the code's name.
"""

from __future__ import annotations

from agentctl.errors import ErrorCode, RpcError

__all__ = ["explain", "is_unknown_session"]

_BUSY = " has a run in progress; cancel it first (agent.cancel)"
_CLOSING = " is closing"


def is_unknown_session(exc: RpcError) -> bool:
    """Whether the reply says the session named does not exist (here)."""
    return exc.code == ErrorCode.NOT_FOUND and exc.message.startswith(
        ("session: no session matches", "session_id: no such session")
    )


def explain(exc: RpcError) -> str:
    message = exc.message
    if exc.code == ErrorCode.CONFLICT and message.startswith("session ") and message.endswith(_BUSY):
        session_id = message[len("session ") : -len(_BUSY)]
        return f"session {session_id} is running a prompt; cancel it first: agentctl cancel --session {session_id}"
    if exc.code == ErrorCode.CONFLICT and message.startswith("workspace ") and message.endswith(_CLOSING):
        return "this directory's workspace is closing (its last client left); run the command again"
    if exc.code == ErrorCode.CONFLICT and message.startswith("not idle: "):
        return (
            f"agentd is not idle ({message.removeprefix('not idle: ')});"
            " `agentctl stop` without --if-idle stops it anyway, cancelling the runs"
        )
    if exc.code == ErrorCode.SHUTTING_DOWN:
        return "agentd is shutting down; run the command again once it has stopped (`agentctl status` exits 3 then)"
    if exc.code == ErrorCode.NOT_FOUND and message.startswith("run_id: no such run "):
        run_id = message.removeprefix("run_id: no such run ")
        return f"agentd knows no run {run_id} (a run id is what `agentctl run --detach` prints)"
    if message.startswith("session: "):
        # agentctl's own resolving of an id prefix (`_sessions`), in the daemon's manner.
        return message.removeprefix("session: ")
    if exc.code == ErrorCode.INTERNAL:
        return f"{message} (a bug in agentd: its log says more)"
    return message
