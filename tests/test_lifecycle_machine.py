"""The run lifecycle under seeded random schedules against a real daemon: the promise is checked after every step.

Each seed is one daemon and one `drive_lifecycle()` schedule (bench/_stress):
prompts that succeed, fail, hang and call tools (the toolbox MCP server's too, which one
of them kills), cancels, queue clears,
permission answers from one client, two or none (the permission timeout is
short here), connections and subscriptions coming and going, workspaces
closed and opened again, sessions deleted and runs reverted. Then
`Ledger.settle()`: every accepted run has its one run.complete, `run.wait`
agrees, `server.status` is idle.

A failure names its seed; `AGENTD_STRESS_SEED=N pytest tests/test_lifecycle_machine.py`
runs that seed alone (with more steps if `AGENTD_STRESS_STEPS` says so).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
from support import WAIT, DaemonFactory, write_config

from bench._stress._health import MCP_SDK_RSS, RSS_SLACK, health, settled_leaks
from bench._stress._ledger import Ledger
from bench._stress._lifecycle import drive_lifecycle, mcp_config, reproduce_hint

SEED_ENV = "AGENTD_STRESS_SEED"
STEPS_ENV = "AGENTD_STRESS_STEPS"
# Three seeds of 50 steps take some 5 to 10 s each on an idle machine; a loaded one may take several times that.
SEEDS = (20261202, 7, 1414)
STEPS = 150
# One seed's schedule stops taking steps after this long, whatever its step count.
SCHEDULE_BUDGET = 15.0
# A short idle grace, so a released workspace closes while the schedule goes on; a short permission timeout,
# so a request nobody answers ends during it.
IDLE_GRACE = 0.3
DAEMON_ARGS = ("--idle-grace", str(IDLE_GRACE), "--must-deliver-timeout", "5")
PERMISSION_TIMEOUT = 0.5
# Every workspace has the toolbox MCP server under this name; some runs call it, and one of its tools kills it.
MCP = "box"


def seeds() -> list[int]:
    chosen = os.environ.get(SEED_ENV)
    return [int(chosen)] if chosen else list(SEEDS)


@pytest.mark.parametrize("seed", seeds())
async def test_lifecycle_by_seed_keeps_the_promise(
    start_daemon: DaemonFactory, env: dict[str, str], short_tmp: Path, seed: int
) -> None:
    write_config(env, f"[permissions]\ntimeout = {PERMISSION_TIMEOUT}\n\n{mcp_config(MCP)}")
    daemon = start_daemon(*DAEMON_ARGS)
    projects = []
    for name in ("p0", "p1"):
        (short_tmp / name).mkdir()
        projects.append(short_tmp / name)
    ledger = Ledger(how_to_reproduce=reproduce_hint(seed))
    async with daemon.client() as client:
        before = await health(daemon.proc.pid, client)
    steps = int(os.environ.get(STEPS_ENV, STEPS))
    # The schedule's own bound, then each of its steps' (10 s), then winding down and settling.
    with trio.fail_after(SCHEDULE_BUDGET + 4 * WAIT):
        deadline = trio.current_time() + SCHEDULE_BUDGET
        stats = await drive_lifecycle(
            daemon.socket_path,
            projects,
            seed,
            deadline,
            ledger,
            steps=steps,
            idle_grace=IDLE_GRACE,
            permission_timeout=PERMISSION_TIMEOUT,
            mcp=MCP,
        )
        async with daemon.client() as client:
            settled = await ledger.settle(client, WAIT)
        # Idle again: the clients, subscriptions, workspaces (their MCP servers), tasks and fds are all gone.
        leaked, _ = await settled_leaks(
            daemon.socket_path, daemon.proc.pid, before, WAIT, rss_slack=RSS_SLACK + MCP_SDK_RSS
        )
    print(f"seed {seed}: {stats.counts}")
    assert stats.violations == [], "\n".join(stats.violations)
    assert settled == [], "\n".join(settled)
    assert leaked == [], f"{reproduce_hint(seed)}: {leaked}"
    assert stats.counts["steps"] >= 1
    log = daemon.log()
    assert "Traceback" not in log and " ERROR " not in log, f"{reproduce_hint(seed)}\n{log}"
