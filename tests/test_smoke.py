"""The shortest path through the daemon: open, create, send, stream, complete."""

from __future__ import annotations

from support import Workspace


async def test_echo_run_streams_prompt_and_completes_once(ws: Workspace) -> None:
    session_id = await ws.new_session()
    reply = await ws.send(session_id, "hello brave new world")
    assert reply["queued"] is False
    rc = await ws.events.until_complete(reply["run_id"])
    assert rc["text"] == "hello brave new world"
    assert rc["error"] is None and rc["cancelled"] is False
    deltas = [e["payload"] for e in ws.events.of_type("message.delta")]
    assert "".join(d["text"] for d in deltas) == "hello brave new world"
    offsets = [d["offset"] for d in deltas]
    assert offsets == sorted(offsets) and offsets[0] == 0
    seqs = [e["seq"] for e in ws.events.seen]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
