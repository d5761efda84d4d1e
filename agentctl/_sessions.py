"""Session references as people type them: a full id, or enough of its start to be unambiguous.

Session ids look like `ses_<32 hex digits>`. A reference may be the whole id or
a prefix of it, with or without the `ses_` part (`ses_ab12` and `ab12` mean the
same). No printing here: `agentctl run --session` resolves through this too.
"""

from __future__ import annotations

from agentctl.errors import ErrorCode, RpcError

# typing costs milliseconds to import, and agentctl's start-up is measured in them;
# annotations are strings here, so only type checkers need these names.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from agentctl.blocking import BlockingClient

__all__ = ["ID_PREFIX", "not_here", "resolve_session"]

ID_PREFIX = "ses_"
# How many candidates an ambiguous reference's error names.
_MAX_LISTED = 5


def resolve_session(client: BlockingClient, workspace_id: str, ref: str) -> str:
    """The full id of the session of `workspace_id` that `ref` names, with one `session.list`.

    An exact id wins, even if it also starts another id. Otherwise `ref` must
    start exactly one id: RpcError NOT_FOUND when it starts none, CONFLICT
    (naming the candidates, most recently active first) when it starts several.
    """
    sessions = client.call("session.list", {"workspace_id": workspace_id})
    ids: list[str] = [s["id"] for s in sessions]  # most recently updated first
    full = ref if ref.startswith(ID_PREFIX) else ID_PREFIX + ref
    if full in ids:
        return full
    if ref in ids:  # an id of another shape, should the store ever make one
        return ref
    matches = [i for i in ids if i.startswith(full)] if ref else []
    if not matches:
        raise RpcError(ErrorCode.NOT_FOUND, f"session: no session matches {ref!r}")
    if len(matches) > 1:
        listed = ", ".join(matches[:_MAX_LISTED]) + (", ..." if len(matches) > _MAX_LISTED else "")
        raise RpcError(
            ErrorCode.CONFLICT,
            f"session: {ref!r} matches {len(matches)} sessions: {listed}; give more characters",
        )
    return matches[0]


def _matches(ref: str, session_id: str) -> bool:
    full = ref if ref.startswith(ID_PREFIX) else ID_PREFIX + ref
    return bool(ref) and (session_id == ref or session_id.startswith(full))


def not_here(client: BlockingClient, ref: str, cwd: str) -> str:
    """Why `ref` names no session of the workspace of `cwd`, and where it is instead (`session.list_all`)."""
    try:
        groups = client.call("session.list_all")
    except RpcError:
        groups = []
    elsewhere = [
        group["workspace"]["path"]
        for group in groups
        if group["workspace"]["path"] != cwd and any(_matches(ref, s["id"]) for s in group["sessions"])
    ]
    if len(elsewhere) == 1:
        import shlex

        return (
            f"session {ref!r} is not in this directory's workspace ({cwd}) but in that of {elsewhere[0]}:"
            f" pass --cwd {shlex.quote(elsewhere[0])}"
        )
    if elsewhere:
        return (
            f"no session matches {ref!r} in this directory's workspace ({cwd}); sessions of {', '.join(elsewhere)} do"
        )
    return (
        f"no session matches {ref!r} in this directory's workspace ({cwd});"
        " `agentctl sessions --all` lists the sessions of every directory"
    )
