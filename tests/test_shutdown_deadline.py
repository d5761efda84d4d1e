"""One shutdown deadline: `--graceful-timeout` bounds the whole shutdown, shielded cleanup under way included."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import trio
from support import WAIT, DaemonFactory, delta_reaching, open_raw, open_workspace


async def test_a_run_end_waiting_on_a_stuck_subscriber_does_not_outlast_the_graceful_timeout(
    start_daemon: DaemonFactory, project: Path
) -> None:
    # A must-deliver wait of its own of 30 s, under a shutdown deadline of 1.5 s.
    daemon = start_daemon("--must-deliver-timeout", "30", "--graceful-timeout", "1.5", "--subscriber-buffer", "16")
    stuck = await open_raw(daemon)
    opened = await stuck.call("workspace.open", {"path": str(project)})
    workspace_id: Any = opened.result
    await stuck.call("events.subscribe", {"workspace_id": workspace_id["id"]})
    async with daemon.client() as client:
        ws = await open_workspace(client, project)
        filler, other = await ws.new_session("filler"), await ws.new_session("other")
        # Megabytes of deltas: the stuck subscriber's socket and channel fill up.
        big = await ws.send(filler, {"chunks": ["x" * 4096], "repeat": 600, "hang": True})
        # Its end, or a gap: on a loaded machine this reader, with the same
        # 16 slots, may fall behind the burst too (then the stuck one surely has).
        burst_end = delta_reaching(600 * 4096)
        await ws.events.until(lambda e: burst_end(e) or e["type"] == "events.gap", timeout=WAIT)
        # This run's RunComplete reaches the reading subscriber at once; its
        # delivery to the stuck one is still waiting (for up to 30 s) when the
        # signal comes: shielded cleanup under way.
        done = await ws.send(other, "done")
        assert (await ws.events.until_complete(done["run_id"]))["text"] == "done"
        signalled = time.monotonic()
        daemon.proc.send_signal(signal.SIGTERM)
        assert (await ws.events.until_complete(big["run_id"]))["cancelled"] is True
    with trio.fail_after(WAIT):
        assert await daemon.exited() == 0
    took = time.monotonic() - signalled
    # 1.5 s of grace, then closing the store: not the 30 s the delivery had, nor
    # any fixed bound of its own (the margin is for a loaded machine).
    assert took < 8.0, f"exit took {took:.1f}s after SIGTERM"
    assert "shutdown did not finish within 1.5s" in daemon.log()
