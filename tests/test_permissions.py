"""Permissions through a real daemon: permission.grant and permission.list, agent.send's allow, and what clients see."""

from __future__ import annotations

from typing import Any

import pytest
from support import Workspace

from agentctl.client import Client, RpcError


async def call_error(client: Client, method: str, params: dict[str, Any]) -> RpcError:
    with pytest.raises(RpcError) as info:
        await client.call(method, params)
    return info.value


# --- the methods' checks ---------------------------------------------------------------------------------


async def test_a_workspace_with_no_request_waiting_lists_none(ws: Workspace) -> None:
    assert await ws.client.call("permission.list", {"workspace_id": ws.id}) == []


async def test_granting_a_request_the_workspace_never_asked_is_not_found(ws: Workspace) -> None:
    error = await call_error(
        ws.client, "permission.grant", {"workspace_id": ws.id, "request_id": "perm_nope", "action": "allow"}
    )
    assert (error.code, error.message) == (2, "request_id: no permission request 'perm_nope' in this workspace")


async def test_an_unknown_action_is_refused_by_name(ws: Workspace) -> None:
    error = await call_error(
        ws.client, "permission.grant", {"workspace_id": ws.id, "request_id": "perm_nope", "action": "always"}
    )
    assert error.code == 1
    assert error.message == "action: must be one of allow, allow_session, deny, deny_session, not 'always'"


@pytest.mark.parametrize("method", ["permission.grant", "permission.list"])
async def test_the_permission_methods_need_an_open_workspace(ws: Workspace, method: str) -> None:
    params = {"workspace_id": "ws_nope", "request_id": "perm_x", "action": "allow"}
    if method == "permission.list":
        params = {"workspace_id": "ws_nope"}
    error = await call_error(ws.client, method, params)
    assert error.code == 2
    assert "no open workspace 'ws_nope'" in error.message


async def test_grant_params_are_checked_for_type(ws: Workspace) -> None:
    error = await call_error(ws.client, "permission.grant", {"workspace_id": ws.id, "request_id": 7, "action": "allow"})
    assert error.code == 1
    assert "request_id" in error.message


@pytest.mark.parametrize(
    ("allow", "words"),
    [
        (["edit", "bash:"], "allow[1]: 'bash:' is not a usable rule: has an empty prefix after 'bash:'"),
        (["*:rm"], "allow[0]: '*:rm' is not a usable rule: '*' allows every call and takes no prefix"),
        ("edit", "expected an array, got str @ params.allow"),
        ([3], "params.allow[0]"),
    ],
)
async def test_a_send_with_a_rule_that_cannot_be_read_is_refused_and_starts_nothing(
    ws: Workspace, allow: object, words: str
) -> None:
    session_id = await ws.new_session()
    params = {"workspace_id": ws.id, "session_id": session_id, "prompt": "hi", "allow": allow}
    error = await call_error(ws.client, "agent.send", params)
    assert error.code == 1
    assert words in error.message
    messages = await ws.client.call("session.messages", {"workspace_id": ws.id, "session_id": session_id})
    assert messages == []


async def test_a_send_with_rules_is_accepted(ws: Workspace) -> None:
    session_id = await ws.new_session()
    reply = await ws.send(session_id, "hi", allow=["*"], model="echo")
    rc = await ws.events.until_complete(reply["run_id"])
    assert rc["text"] == "hi"
