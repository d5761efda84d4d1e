"""What `agent.send` answers before a run exists: a model it cannot resolve, and how many runs are ahead."""

from __future__ import annotations

from typing import Any

import pytest
from support import Workspace

from agentctl.client import RpcError

HANG: dict[str, Any] = {"chunks": ["started "], "hang": True}


async def test_a_model_the_registry_cannot_resolve_is_refused_before_anything_is_stored(ws: Workspace) -> None:
    session_id = await ws.new_session()
    with pytest.raises(RpcError) as refused:
        await ws.send(session_id, "hi", model="no-such-model", run_id="run-refused")
    assert refused.value.code == 1
    assert refused.value.message.startswith("model: unknown model 'no-such-model' (available: echo, scripted")
    ref = {"workspace_id": ws.id, "session_id": session_id}
    assert await ws.client.call("session.messages", ref) == []
    session = await ws.client.call("session.get", ref)
    assert session["title"] == "test" and session["message_count"] == 0
    with pytest.raises(RpcError) as unknown:
        await ws.client.call("run.get", {"run_id": "run-refused"})
    assert unknown.value.code == 2
    # The run id was never used: it can name a run that is accepted.
    reply = await ws.send(session_id, "hi", model="echo", run_id="run-refused")
    assert (await ws.events.until_complete(reply["run_id"]))["text"] == "hi"


async def test_the_reply_says_how_many_runs_are_ahead_in_the_session(ws: Workspace) -> None:
    session_id = await ws.new_session()
    first = await ws.send(session_id, HANG)
    assert (first["queued"], first["ahead"]) == (False, 0)
    second = await ws.send(session_id, "second")
    third = await ws.send(session_id, "third")
    assert (second["queued"], second["ahead"]) == (True, 1)
    assert (third["queued"], third["ahead"]) == (True, 2)
    # Sent again, an accepted run is not counted as new work.
    again = await ws.send(session_id, "third", run_id=third["run_id"])
    assert again == {"run_id": third["run_id"], "queued": True, "state": "queued", "ahead": 0}
    other = await ws.send(await ws.new_session("other"), "elsewhere")
    assert (other["queued"], other["ahead"]) == (False, 0)
    await ws.cancel(session_id)
    for reply in (first, second, third):
        assert (await ws.events.until_complete(reply["run_id"]))["cancelled"] is True


@pytest.mark.parametrize(
    ("run_id", "said"),
    [
        ("", "run_id: must be 1 to 128 characters"),
        ("r" * 129, "run_id: must be 1 to 128 characters"),
        ("\x00", "run_id: '\\x00' has a control character; printable characters only"),
        ("run\x1b[2J", "run_id: 'run\\x1b[2J' has a control character; printable characters only"),
        ("two\nlines", "run_id: 'two\\nlines' has a control character; printable characters only"),
    ],
)
async def test_a_run_id_that_is_empty_too_long_or_has_a_control_character_is_refused_by_name(
    ws: Workspace, run_id: str, said: str
) -> None:
    session_id = await ws.new_session()
    with pytest.raises(RpcError) as refused:
        await ws.send(session_id, "hi", run_id=run_id)
    assert (refused.value.code, refused.value.message) == (1, said)
    # Nothing was stored, and a fine id of 128 characters, not all ASCII, is taken.
    assert await ws.client.call("session.messages", {"workspace_id": ws.id, "session_id": session_id}) == []
    reply = await ws.send(session_id, "hi", run_id="é" * 128)
    assert (await ws.events.until_complete(reply["run_id"]))["text"] == "hi"
