"""Requests from one connection that touch one session take effect in the order they were sent."""

from __future__ import annotations

import json
from pathlib import Path

import msgpack
from support import WAIT, Daemon, open_raw

from agentd.rpc import Response

HANG = json.dumps({"chunks": ["x"], "hang": True})


async def _session(raw: object, project: Path) -> tuple[str, str]:
    ws = await raw.call("workspace.open", {"path": str(project)})  # type: ignore[attr-defined]
    ses = await raw.call("session.create", {"workspace_id": ws.result["id"]})  # type: ignore[attr-defined]
    return ws.result["id"], ses.result["id"]


def _request(msgid: int, method: str, params: dict[str, object]) -> bytes:
    return msgpack.packb([0, msgid, method, [params]])  # type: ignore[no-any-return]


async def _replies(raw: object, *msgids: int) -> dict[int, Response]:
    return {m: await raw.response(m) for m in msgids}  # type: ignore[attr-defined]


async def test_cancel_written_with_its_send_cancels_the_run(daemon: Daemon, project: Path) -> None:
    raw = await open_raw(daemon)
    workspace_id, session_id = await _session(raw, project)
    for round_ in range(20):
        ref = {"workspace_id": workspace_id, "session_id": session_id}
        send = {**ref, "prompt": HANG, "model": "scripted", "run_id": f"r{round_}"}
        # One write: the send's reply has not come back when the cancel is read.
        await raw.send_bytes(_request(1000 + round_, "agent.send", send) + _request(2000 + round_, "agent.cancel", ref))
        replies = await _replies(raw, 1000 + round_, 2000 + round_)
        assert replies[1000 + round_].error is None, replies[1000 + round_].error
        cancel = replies[2000 + round_]
        assert cancel.error is None and cancel.result["cancelled"] is True, (round_, cancel)
        assert cancel.result["run_id"] == f"r{round_}"
        wait = await raw.call("run.wait", {"run_id": f"r{round_}", "timeout": WAIT})
        assert wait.error is None and wait.result["cancelled"] is True


async def test_delete_written_with_a_send_finds_the_session_busy(daemon: Daemon, project: Path) -> None:
    raw = await open_raw(daemon)
    workspace_id, session_id = await _session(raw, project)
    ref = {"workspace_id": workspace_id, "session_id": session_id}
    send = {**ref, "prompt": HANG, "model": "scripted", "run_id": "r1"}
    await raw.send_bytes(_request(1, "agent.send", send) + _request(2, "session.delete", ref))
    replies = await _replies(raw, 1, 2)
    assert replies[1].error is None
    # The send took effect first: the session has a run, so it cannot go.
    assert replies[2].error is not None and replies[2].error[0] == 3, replies[2]
    cancel = await raw.call("agent.cancel", ref)
    assert cancel.result["cancelled"] is True
    wait = await raw.call("run.wait", {"run_id": "r1", "timeout": WAIT})
    assert wait.result["cancelled"] is True and wait.result["error"] is None


async def test_delete_then_send_written_together_refuses_the_send(daemon: Daemon, project: Path) -> None:
    raw = await open_raw(daemon)
    workspace_id, session_id = await _session(raw, project)
    ref = {"workspace_id": workspace_id, "session_id": session_id}
    send = {**ref, "prompt": "hello", "run_id": "r1"}
    await raw.send_bytes(_request(1, "session.delete", ref) + _request(2, "agent.send", send))
    replies = await _replies(raw, 1, 2)
    assert replies[1].error is None
    assert replies[2].error is not None and replies[2].error[0] == 2, replies[2]
    missing = await raw.call("run.get", {"run_id": "r1"})
    assert missing.error is not None and missing.error[0] == 2
