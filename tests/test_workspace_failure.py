"""A failure inside a workspace closes that workspace, never the daemon."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import trio
from support import WAIT, Daemon, open_workspace


async def test_a_refused_event_number_reservation_closes_that_workspace_only(
    daemon: Daemon, project: Path, short_tmp: Path, env: dict[str, str]
) -> None:
    other_dir = short_tmp / "other"
    other_dir.mkdir()
    async with daemon.client() as client, daemon.client() as other_client:
        ws = await open_workspace(client, project)
        other = await open_workspace(other_client, other_dir)
        session_id = await ws.new_session()
        # 60,000 deltas in two bursts: the second crosses the point where the
        # workspace reserves its next block of event numbers (half of 100,000);
        # then the run waits, still running when that fails.
        reply = await ws.send(session_id, {"chunks": ["a", "b"], "repeat": 30_000, "delay_ms": 1100, "hang": True})
        await ws.events.until(lambda e: e["type"] == "message.delta")
        blocker = sqlite3.connect(Path(env["XDG_DATA_HOME"]) / "agentd" / "agentd.db", isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            with trio.fail_after(90):
                rc = await ws.events.until_complete(reply["run_id"], timeout=90)
                closed = await ws.events.until(lambda e: e["type"] == "workspace.closed", timeout=30)
            # Reads still work meanwhile, and the daemon still answers.
            assert await other_client.call("ping") == {}
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        # Its run ends errored, saying why: nobody cancelled it.
        assert rc["cancelled"] is False
        assert "the workspace failed: reserving event numbers failed" in rc["error"], rc
        assert "locked" in rc["error"]
        assert closed["payload"]["reason"] == "failed"
        assert "reserving event numbers failed" in closed["payload"]["error"]
        # The other workspace goes on as if nothing happened.
        other_session = await other.new_session()
        done = await other.send(other_session, "still here")
        assert (await other.events.until_complete(done["run_id"]))["text"] == "still here"
        # And the failed one opens again.
        again = await open_workspace(client, project)
        rerun = await again.send(session_id, "again")
        assert (await again.events.until_complete(rerun["run_id"]))["error"] is None
    assert daemon.proc.poll() is None
    assert daemon.terminate(WAIT) == 0
