"""Requests from one connection that touch one session take effect in the order they were sent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgpack
from support import WAIT, Daemon, RawConnection, open_raw

HANG = json.dumps({"chunks": ["x"], "hang": True})


async def _session(raw: RawConnection, project: Path) -> dict[str, str]:
    ws: Any = (await raw.call("workspace.open", {"path": str(project)})).result
    ses: Any = (await raw.call("session.create", {"workspace_id": ws["id"]})).result
    return {"workspace_id": ws["id"], "session_id": ses["id"]}


def _request(msgid: int, method: str, params: dict[str, Any]) -> bytes:
    return msgpack.packb([0, msgid, method, [params]])  # type: ignore[no-any-return]


async def _replies(raw: RawConnection, *msgids: int) -> list[tuple[Any, Any]]:
    """(error, result) of each request, in the order asked."""
    replies = []
    for msgid in msgids:
        response = await raw.response(msgid)
        replies.append((response.error, response.result))
    return replies


async def test_cancel_written_with_its_send_cancels_the_run(daemon: Daemon, project: Path) -> None:
    raw = await open_raw(daemon)
    ref = await _session(raw, project)
    for round_ in range(20):
        send = {**ref, "prompt": HANG, "model": "scripted", "run_id": f"r{round_}"}
        # One write: the send's reply has not come back when the cancel is read.
        await raw.send_bytes(_request(1000 + round_, "agent.send", send) + _request(2000 + round_, "agent.cancel", ref))
        (send_error, _), (cancel_error, cancel) = await _replies(raw, 1000 + round_, 2000 + round_)
        assert send_error is None, send_error
        assert cancel_error is None and cancel["cancelled"] is True, (round_, cancel_error, cancel)
        assert cancel["run_id"] == f"r{round_}"
        wait: Any = (await raw.call("run.wait", {"run_id": f"r{round_}", "timeout": WAIT})).result
        assert wait["cancelled"] is True


async def test_delete_written_with_a_send_finds_the_session_busy(daemon: Daemon, project: Path) -> None:
    raw = await open_raw(daemon)
    ref = await _session(raw, project)
    send = {**ref, "prompt": HANG, "model": "scripted", "run_id": "r1"}
    await raw.send_bytes(_request(1, "agent.send", send) + _request(2, "session.delete", ref))
    (send_error, _), (delete_error, _) = await _replies(raw, 1, 2)
    assert send_error is None
    # The send took effect first: the session has a run, so it cannot go.
    assert delete_error is not None and delete_error[0] == 3, delete_error
    cancel: Any = (await raw.call("agent.cancel", ref)).result
    assert cancel["cancelled"] is True
    wait: Any = (await raw.call("run.wait", {"run_id": "r1", "timeout": WAIT})).result
    assert wait["cancelled"] is True and wait["error"] is None


async def test_delete_then_send_written_together_refuses_the_send(daemon: Daemon, project: Path) -> None:
    raw = await open_raw(daemon)
    ref = await _session(raw, project)
    send = {**ref, "prompt": "hello", "run_id": "r1"}
    await raw.send_bytes(_request(1, "session.delete", ref) + _request(2, "agent.send", send))
    (delete_error, _), (send_error, _) = await _replies(raw, 1, 2)
    assert delete_error is None
    assert send_error is not None and send_error[0] == 2, send_error
    missing: Any = (await raw.call("run.get", {"run_id": "r1"})).error
    assert missing is not None and missing[0] == 2
