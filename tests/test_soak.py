"""The soak, `python -m bench.stress`, as CI runs it: its default two minutes, every driver at once, no violation.

Its seed is random unless AGENTD_STRESS_SEED names one; a failure prints the
command that runs it again.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from bench._stress._health import Health
from bench.stress import DEFAULT_MINUTES, DRIVERS, SETTLE, WIND_DOWN, Report

ROOT = Path(__file__).resolve().parent.parent
# The soak's own bounds, and its daemons' starts and stops.
SOAK_BOUND = DEFAULT_MINUTES * 60 + WIND_DOWN + 2 * SETTLE + 60


async def stress(*args: str, timeout: float) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(timeout):
        return await trio.run_process(
            [sys.executable, "-m", "bench.stress", *args],
            cwd=ROOT,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


async def test_the_soak_runs_every_driver_at_once_and_finds_no_violation() -> None:
    seed = int(os.environ.get("AGENTD_STRESS_SEED") or random.SystemRandom().randrange(2**32))
    done = await stress("--seed", str(seed), timeout=SOAK_BOUND)
    out = done.stdout.decode()
    where = f"seed {seed}; stdout:\n{out}\nstderr:\n{done.stderr.decode()[-4000:]}"
    assert done.returncode == 0, where
    assert "no violation" in out, where
    assert f"soak: {DEFAULT_MINUTES:g} min, seed {seed}, drivers {', '.join(DRIVERS)}" in out, where
    # Every driver did its part: the summary's headline numbers are all there, and none is 0.
    [totals] = [line for line in out.splitlines() if line.startswith("  runs ")]
    numbers = dict(zip(totals.split()[::2], map(int, totals.split()[1::2]), strict=True))
    for name in ("runs", "tool_calls", "events", "dropped", "disconnects", "fuzz_connections", "kills"):
        assert numbers[name] > 0, f"{name} is 0: {where}"
    for name in ("fds", "rss_mib", "tasks"):
        assert any(line.split()[:1] == [name] for line in out.splitlines()), where


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("--minutes", "0"), "argument --minutes: must be more than 0"),
        (("--minutes", "soon"), "argument --minutes: not a number of minutes: 'soon'"),
        (("--minutes", "100000"), "argument --minutes: must be more than 0 and at most 1440"),
        (("--only", "lifecycle,naps"), "argument --only: unknown driver(s) naps; of lifecycle, clients, fuzz, kills"),
        (("--only", ","), "argument --only: unknown driver(s) (none)"),
        (("--seed", "x"), "argument --seed: invalid int value: 'x'"),
    ],
)
async def test_bad_arguments_are_refused_by_name(args: tuple[str, ...], said: str) -> None:
    done = await stress(*args, timeout=30)
    assert done.returncode == 2
    assert said in done.stderr.decode()


def test_a_violation_makes_the_exit_status_1_and_is_printed_with_how_to_reproduce() -> None:
    idle = Health(fds={}, rss=0, clients=1, subscriptions=0, workspaces=0, active_runs=0, tasks=7, events_dropped=0)
    report = Report(0.5, 42, ("lifecycle", "kills"), start=idle, end=idle)
    assert report.exit_status() == 0 and "no violation" in report.text()
    report.violations.append("run r1 has a second run.complete")
    assert report.exit_status() == 1
    text = report.text()
    assert "1 violation(s); reproduce: python -m bench.stress --minutes 0.5 --seed 42 --only lifecycle,kills" in text
    assert "  - run r1 has a second run.complete" in text
