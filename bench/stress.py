"""The soak: every fault driver at once against one daemon, for a bounded time, then the promise is checked.

    python -m bench.stress [--minutes N] [--seed S]

Runs, side by side on one daemon of its own, the lifecycle schedule (runs,
tools, permissions, cancels, closes, reverts from several clients, every
event watched by an observer), protocol fuzzing (garbage values and bytes on
their own connections) and slow and vanishing clients, for N minutes (default
2, as CI runs it). Then it waits for the daemon to be idle, checks that every
accepted run has exactly one RunComplete and that nothing leaked (file
descriptors, tasks, clients, subscriptions, memory), and prints a summary:
what was done, the drops and disconnects, the largest RSS, and fds and tasks
at the end against the start. Any violation is printed with how to run the
same soak again, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from typing import Any

import trio

from agentctl.client import open_client

from ._common import daemon, rss_kb
from ._stress._clients import drive_clients
from ._stress._fuzz import drive_fuzz
from ._stress._health import health, leaks
from ._stress._ledger import Ledger
from ._stress._lifecycle import drive_lifecycle

__all__ = ["main", "soak"]

# How long the daemon may take to be idle once the drivers stopped: a hung run would be a violation.
SETTLE_TIMEOUT = 60.0
# A short must-deliver timeout, so a subscriber that stops reading is let go within the soak.
DAEMON_ARGS = ("--must-deliver-timeout", "2", "--idle-grace", "0.5")


async def _sample_rss(pid: int, peak: list[int]) -> None:
    while True:
        try:
            peak[0] = max(peak[0], rss_kb(pid)["rss_kb"])
        except (FileNotFoundError, ProcessLookupError):
            return
        await trio.sleep(0.5)


async def soak(minutes: float, seed: int) -> tuple[dict[str, Any], list[str]]:
    """Run the soak; (summary, violations)."""
    rng = random.Random(seed)
    seeds = {name: rng.randrange(2**32) for name in ("lifecycle", "fuzz", "clients")}
    again = f"python -m bench.stress --minutes {minutes:g} --seed {seed}"
    violations: list[str] = []
    summary: dict[str, Any] = {"seed": seed, "minutes": minutes, "seeds": seeds}
    with daemon(*DAEMON_ARGS) as d:
        lifecycle_projects = [d.project(f"lifecycle-{i}") for i in range(2)]
        clients_project = d.project("clients")
        async with open_client(d.socket_path) as client:
            before = await health(d.pid, client)
            peak = [before.rss_kb]
            ledger = Ledger()
            started = time.monotonic()
            deadline = trio.current_time() + minutes * 60
            results: dict[str, Any] = {}

            async def run(name: str, driver: Any, *args: Any) -> None:
                results[name] = await driver(*args)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(_sample_rss, d.pid, peak)
                async with trio.open_nursery() as drivers:
                    drivers.start_soon(
                        run, "lifecycle", drive_lifecycle, d.socket_path, lifecycle_projects,
                        seeds["lifecycle"], deadline, ledger,
                    )  # fmt: skip
                    drivers.start_soon(run, "fuzz", drive_fuzz, d.socket_path, seeds["fuzz"], deadline)
                    drivers.start_soon(
                        run, "clients", drive_clients, d.socket_path, clients_project, seeds["clients"], deadline
                    )
                violations += ledger.violations()
                violations += await ledger.settle(client, SETTLE_TIMEOUT)
                nursery.cancel_scope.cancel()
            after = await health(d.pid, client)
            violations += leaks(before, after)
            for name, stats in results.items():
                summary[name] = dict(stats.counts)
                violations += [f"{name}: {v}" for v in stats.violations]
            summary["ledger"] = dict(ledger.counts)
            summary["seconds"] = round(time.monotonic() - started, 1)
            summary["max_rss_kb"] = max(peak[0], after.rss_kb)
            summary["fds"] = {"start": before.fds, "end": after.fds}
            summary["tasks"] = {"start": before.tasks, "end": after.tasks}
            summary["events_dropped"] = after.status.get("events_dropped")
    return summary, [f"{v} (again: {again})" for v in violations]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stress", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=2.0, help="how long the drivers run (default 2)")
    parser.add_argument("--seed", type=int, default=None, help="the seed to run again (default: a new one)")
    args = parser.parse_args(argv)
    if not 0 < args.minutes <= 24 * 60:
        parser.error("--minutes must be more than 0 and at most a day")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    print(f"soak: seed {seed}, {args.minutes:g} minutes", flush=True)
    summary, violations = trio.run(soak, args.minutes, seed)
    print(json.dumps(summary, indent=2))
    for violation in violations:
        print(f"VIOLATION: {violation}", file=sys.stderr)
    print(f"soak: {len(violations)} violations", flush=True)
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())


