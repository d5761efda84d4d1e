"""Slow and vanishing clients while runs stream and tools run: nothing waits past the must-deliver timeout,
every subscriber connected throughout gets every run.complete, and nothing is left behind.

The driver is bench/_stress/_clients.py's, which the soak runs too. Its seed is
random unless AGENTD_STRESS_SEED names one; every failure says which it was.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import trio
from support import WAIT, DaemonFactory

from agentctl.client import open_client
from bench._stress._clients import drive_clients
from bench._stress._health import health, settled_leaks

MUST_DELIVER_TIMEOUT = 2.0
# Long enough for every kind of client to have its turn several times, on two loaded cores.
BUDGET = 15.0


def stress_seed() -> int:
    given = os.environ.get("AGENTD_STRESS_SEED")
    return int(given) if given else random.SystemRandom().randrange(2**32)


async def test_stalled_half_closed_vanishing_and_churning_clients_keep_the_promise(
    start_daemon: DaemonFactory, project: Path
) -> None:
    seed = stress_seed()
    # Shown with any failure, an exception out of the driver included.
    print(f"seed {seed}: AGENTD_STRESS_SEED={seed} pytest {__file__}")
    daemon = start_daemon(
        "--must-deliver-timeout",
        str(MUST_DELIVER_TIMEOUT),
        # Small queues, so pausers lose lossy events and are told: besides its queue, a subscriber has the batch
        # its writer took and what its socket holds, and with 64 a pause inside a quarter of the timeout seldom
        # outlasts all that on a machine busy enough to publish slowly.
        "--subscriber-buffer",
        "16",
        # Workspaces close soon after the last client goes, so the leak check sees them go.
        "--idle-grace",
        "0.5",
    )
    async with open_client(daemon.socket_path) as client:
        before = await health(daemon.proc.pid, client)
    try:
        stats = await drive_clients(
            daemon.socket_path,
            project,
            seed,
            trio.current_time() + BUDGET,
            must_deliver_timeout=MUST_DELIVER_TIMEOUT,
        )
    finally:
        # Whom the daemon cut off, and why: what a violation is to be read against.
        print("\n".join(line for line in daemon.log().splitlines() if "WARNING" in line or "ERROR" in line))
    where = f"seed {seed}; counts {stats.counts}"
    print(where)
    assert not stats.violations, "\n".join([*stats.violations, where])
    counts = stats.counts
    # Every kind of client had its turn, and the runs did what they were scripted to.
    for name in ("runs_stream", "runs_tools", "runs_ask", "stalled_cut", "pausers", "half_closed"):
        assert counts.get(name, 0) >= 1, f"no {name}: {where}"
    assert counts.get("left_mid_must_deliver", 0) >= 2, where
    assert counts.get("pauser_gaps", 0) >= 1, where
    assert counts.get("permission_requests", 0) >= 1, where
    assert counts["churned"] >= 200, where
    assert (await daemon.exited() if daemon.proc.poll() is not None else None) is None, daemon.log()
    found, after = await settled_leaks(daemon.socket_path, daemon.proc.pid, before, WAIT)
    print(f"before {before.summary()}, after {after.summary()}")
    assert found == [], where
    assert "Traceback" not in daemon.log()
