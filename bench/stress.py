"""`python -m bench.stress [--minutes N] [--seed S] [--only DRIVER,...]`: every fault driver at once, then the promise.

The soak. One daemon takes the lifecycle schedule (its runs call an MCP
server's tools too, and kill it), the slow and vanishing clients and the
protocol fuzzing together; a second one is killed with
SIGKILL and started again, round after round, with its own traffic (a daemon
that is killed cannot host the others' checks). Each driver is the one its
test runs for a few seconds (bench/_stress); here they run side by side until
the time is up, wind down, and then:

- every run the lifecycle schedule had accepted has its one run.complete, and
  `run.wait` agrees (`Ledger.settle`); every driver's own checks held;
- the shared daemon holds no more fds, tasks, clients, subscriptions,
  workspaces or active runs than before, nor much more memory
  (`_health.settled_leaks`), and neither daemon logged a traceback;
- both databases pass `PRAGMA integrity_check`.

It prints a summary (runs, tool calls, events, drops, disconnects; fds, RSS and
tasks at the start, the end and their highest) and every violation with the
seed that reproduces it, and exits 1 on any violation.
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import shutil
import sqlite3
import sys
import tempfile
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import trio

from ._common import bench_env
from ._stress._clients import drive_clients
from ._stress._faults import INTEGRITY_OK, OwnedDaemon, integrity_check, kill_loop
from ._stress._fuzz import drive_fuzz
from ._stress._health import MCP_SDK_RSS, RSS_SLACK, Health, health, settled_leaks
from ._stress._ledger import Ledger
from ._stress._lifecycle import drive_lifecycle, mcp_config

DRIVERS = ("lifecycle", "clients", "fuzz", "kills")
DEFAULT_MINUTES = 2.0
MAX_MINUTES = 24 * 60.0
# How long the drivers may take to wind down once the time is up (cancel what runs, wait for every run.complete,
# the kill loop's last round), and then the checks: past it, the soak itself is a violation.
WIND_DOWN = 120.0
SETTLE = 30.0
# The shared daemon's settings: small queues so slow subscribers lose lossy events, short bounds so timeouts fire.
MUST_DELIVER_TIMEOUT = 2.0
IDLE_GRACE = 0.3
PERMISSION_TIMEOUT = 2.0
SHARED_ARGS = (
    "--must-deliver-timeout",
    str(MUST_DELIVER_TIMEOUT),
    "--subscriber-buffer",
    "64",
    "--idle-grace",
    str(IDLE_GRACE),
)
KILLED_ARGS = ("--idle-grace", "0.5", "--must-deliver-timeout", "2")
# The kill loop's rounds go on until the time is up: one takes seconds, so this is never what ends them.
MAX_KILLS = 1_000_000
SAMPLE_EVERY = 0.5
# A churning client's whole life, here: its workspace.open may wait for the workspace's close (its MCP server's
# stop, seconds), its subscribe for a replay of the whole log, with four drivers on the daemon; the dedicated
# test (tests/test_vanishing_clients.py) holds it to the must-deliver timeout and 5 s.
CHURN_BOUND = 30.0
MCP = "box"
_PROVIDER_ENV = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL",
    "OLLAMA_HOST",
    "AGENTD_MODEL",
)


@attrs.define
class Report:
    minutes: float
    seed: int
    drivers: tuple[str, ...]
    counts: dict[str, dict[str, int]] = attrs.Factory(dict)
    violations: list[str] = attrs.Factory(list)
    start: Health | None = None
    end: Health | None = None
    highest: dict[str, int] = attrs.Factory(dict)
    tool_calls: int = 0

    @property
    def reproduce(self) -> str:
        return f"python -m bench.stress --minutes {self.minutes:g} --seed {self.seed} --only {','.join(self.drivers)}"

    def exit_status(self) -> int:
        return 1 if self.violations else 0

    def totals(self) -> dict[str, int]:
        """The headline numbers, summed over the drivers."""
        c = {name: Counter(self.counts.get(name, {})) for name in DRIVERS}
        lifecycle, clients, fuzz, kills = c["lifecycle"], c["clients"], c["fuzz"], c["kills"]
        return {
            "runs": lifecycle["runs"] + clients["runs"] + clients["churn_runs_accepted"] + kills["runs"],
            "tool_calls": self.tool_calls,
            "events": lifecycle["ledger_events"] + clients["observed_events"] + kills["events"],
            "dropped": self.end.events_dropped if self.end is not None else 0,
            "disconnects": lifecycle["disconnects"]
            + sum(clients[name] for name in ("churned", "stalled_cut", "left_mid_must_deliver", "half_closed"))
            + fuzz["closed_by_daemon"]
            + kills["kills"],
            "fuzz_connections": fuzz["connections"],
            "kills": kills["kills"],
        }

    def text(self) -> str:
        lines = [f"soak: {self.minutes:g} min, seed {self.seed}, drivers {', '.join(self.drivers)}"]
        lines.append("  " + "  ".join(f"{key} {value}" for key, value in self.totals().items()))
        if self.start is not None and self.end is not None:
            start, end = self.start.summary(), self.end.summary()
            lines.append("  shared daemon   start   end  highest")
            for key in start:
                lines.append(f"  {key:<14} {start[key]:>6} {end[key]:>5} {self.highest.get(key, end[key]):>8}")
        for name, counts in self.counts.items():
            lines.append(f"  {name}: {json.dumps(dict(sorted(counts.items())))}")
        if self.violations:
            lines.append(f"{len(self.violations)} violation(s); reproduce: {self.reproduce}")
            lines.extend(f"  - {violation}" for violation in self.violations)
        else:
            lines.append("no violation")
        return "\n".join(lines)


def _env(workdir: Path, config_text: str) -> dict[str, str]:
    env = bench_env(workdir)
    # No real model: the drivers speak to the scripted one only.
    for name in _PROVIDER_ENV:
        env.pop(name, None)
    config = workdir / "config" / "agentd" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(config_text)
    return env


def _owned(workdir: Path, args: tuple[str, ...], config_text: str = "") -> OwnedDaemon:
    workdir.mkdir(parents=True)
    env = _env(workdir, config_text)
    return OwnedDaemon(
        socket_path=Path(env["AGENTD_SOCKET"]),
        data_dir=Path(env["XDG_DATA_HOME"]) / "agentd",
        log_dir=workdir / "logs",
        env=env,
        args=args,
    )


def _projects(root: Path, *names: str) -> list[Path]:
    paths = [root / name for name in names]
    for path in paths:
        path.mkdir(parents=True)
    return paths


async def _in_a_thread(drive: Callable[[float], Awaitable[Any]], deadline: float) -> Any:
    """`drive(deadline)` on a trio loop of its own, in a thread.

    Building and checking fuzzed messages (16 MiB ones among them) holds a loop
    for long stretches; on this one, the other drivers' subscribers would stop
    reading, and the daemon would rightly cut them off as too slow.
    """
    seconds = deadline - trio.current_time()

    async def there() -> Any:
        # Each trio loop has a clock of its own: the deadline is carried over as what is left of it.
        return await drive(trio.current_time() + seconds)

    return await trio.to_thread.run_sync(trio.run, there)


def _tool_results(db_path: Path) -> int:
    """Tool results the store keeps (those of deleted sessions are gone with them)."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM messages WHERE role = 'tool'").fetchone()[0])
    finally:
        conn.close()


class _Soak:
    def __init__(self, report: Report, workdir: Path) -> None:
        self.report = report
        self.workdir = workdir
        # Every workspace of the shared daemon has the toolbox MCP server; the lifecycle's runs call it, and kill it.
        shared_config = f"[permissions]\ntimeout = {PERMISSION_TIMEOUT}\n\n{mcp_config(MCP)}"
        self.shared = _owned(workdir / "shared", SHARED_ARGS, shared_config)
        self.killed = _owned(workdir / "killed", KILLED_ARGS)
        self.ledger = Ledger(how_to_reproduce=f"seed {report.seed}: {report.reproduce}")
        rng = random.Random(report.seed)
        self.seeds = {name: rng.randrange(2**32) for name in DRIVERS}

    def _violate(self, text: str) -> None:
        self.report.violations.append(text)

    async def _guarded(self, name: str, drive: Callable[[], Awaitable[Any]]) -> None:
        """A driver that raises is a violation of its own, and does not stop the others."""
        try:
            stats = await drive()
        except Exception as exc:  # noqa: BLE001 - reported, with its traceback, as the soak's finding
            self._violate(f"the {name} driver raised: {''.join(traceback.format_exception(exc)).strip()}")
            return
        self.report.counts[name] = dict(stats.counts)
        self.report.violations.extend(stats.violations)

    async def _sample(self) -> None:
        async with self.shared.client() as client:
            while True:
                now = (await health(self.shared.pid, client)).summary()
                for key, value in now.items():
                    self.report.highest[key] = max(self.report.highest.get(key, 0), value)
                await trio.sleep(SAMPLE_EVERY)

    async def run(self) -> None:
        report = self.report
        await self.shared.start()
        async with self.shared.client() as client:
            report.start = await health(self.shared.pid, client)
        deadline = trio.current_time() + report.minutes * 60
        with trio.move_on_after(report.minutes * 60 + WIND_DOWN) as bound:
            async with trio.open_nursery() as sampling:
                sampling.start_soon(self._sample)
                async with trio.open_nursery() as drivers:
                    self._start_drivers(drivers, deadline)
                sampling.cancel_scope.cancel()
        if bound.cancelled_caught:
            self._violate(f"the drivers had not wound down {WIND_DOWN:.0f} s after the time was up")
        await self._settle()

    def _start_drivers(self, nursery: trio.Nursery, deadline: float) -> None:
        chosen, seeds, shared = self.report.drivers, self.seeds, self.shared
        if "lifecycle" in chosen:
            projects = _projects(self.workdir / "projects", "life-0", "life-1")
            nursery.start_soon(
                self._guarded,
                "lifecycle",
                lambda: drive_lifecycle(
                    shared.socket_path,
                    projects,
                    seeds["lifecycle"],
                    deadline,
                    self.ledger,
                    reproduce=self.ledger.how_to_reproduce,
                    idle_grace=IDLE_GRACE,
                    permission_timeout=PERMISSION_TIMEOUT,
                    mcp=MCP,
                ),
            )
        if "clients" in chosen:
            root = _projects(self.workdir / "projects", "clients")[0]
            nursery.start_soon(
                self._guarded,
                "clients",
                lambda: drive_clients(
                    shared.socket_path,
                    root,
                    seeds["clients"],
                    deadline,
                    must_deliver_timeout=MUST_DELIVER_TIMEOUT,
                    churn_bound=CHURN_BOUND,
                ),
            )
        if "fuzz" in chosen:
            fuzzed = _projects(self.workdir / "projects", "fuzzed")[0]
            # Messages over the size limit too: each takes 16 MiB to send, and once leaked 32 MiB.
            fuzz = functools.partial(
                drive_fuzz, shared.socket_path, shared.pid, seeds["fuzz"], project=fuzzed, huge=True
            )
            nursery.start_soon(self._guarded, "fuzz", lambda: _in_a_thread(fuzz, deadline))
        if "kills" in chosen:
            projects = _projects(self.workdir / "projects", "killed-0", "killed-1")
            nursery.start_soon(self._guarded, "kills", lambda: self._kills(projects, deadline))

    async def _kills(self, projects: list[Path], deadline: float) -> Any:
        await self.killed.start()
        try:
            return await kill_loop(self.killed, projects, self.seeds["kills"], MAX_KILLS, deadline=deadline)
        finally:
            status = await self.killed.stop()
            if status not in (0, None):
                self._violate(f"the killed daemon's last life exited with status {status} when stopped")

    async def _settle(self) -> None:
        report, shared = self.report, self.shared
        with trio.move_on_after(SETTLE * 2) as bound:
            if "lifecycle" in report.drivers:
                async with shared.client() as client:
                    # Its own (new) violations are appended to the driver's, which the report has already.
                    before = len(self.ledger.violations())
                    report.violations.extend((await self.ledger.settle(client, SETTLE))[before:])
            assert report.start is not None
            found, report.end = await settled_leaks(
                shared.socket_path, shared.pid, report.start, SETTLE, rss_slack=RSS_SLACK + MCP_SDK_RSS
            )
            report.violations.extend(found)
        if bound.cancelled_caught:
            self._violate(f"the checks once idle took over {SETTLE * 2:.0f} s")
        status = await shared.stop()
        if status != 0:
            self._violate(f"the shared daemon exited with status {status} when stopped")
        for name, daemon in (("shared", shared), ("killed", self.killed)):
            if daemon.lives == 0:
                continue
            if "Traceback" in (log := daemon.log()):
                at = log.index("Traceback")
                self._violate(f"the {name} daemon logged a traceback: {log[at : at + 2000]}")
            result = await integrity_check(daemon.db_path)
            if result != INTEGRITY_OK:
                self._violate(f"the {name} daemon's database fails PRAGMA integrity_check: {result}")
            report.tool_calls += await trio.to_thread.run_sync(_tool_results, daemon.db_path)


async def soak(minutes: float, seed: int, drivers: tuple[str, ...]) -> Report:
    """Run the drivers at once for `minutes`, then check; the report says what happened and what is wrong."""
    report = Report(minutes, seed, drivers)
    # Short: a Unix socket's path must fit in 108 bytes.
    workdir = Path(tempfile.mkdtemp(prefix="ags", dir="/tmp"))
    try:
        await _Soak(report, workdir).run()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return report


def _minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of minutes: {text!r}") from None
    if not 0 < value <= MAX_MINUTES:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most {MAX_MINUTES:g}: {text}")
    return value


def _drivers(text: str) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    unknown = [name for name in chosen if name not in DRIVERS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"unknown driver(s) {', '.join(unknown) or '(none)'}; of {', '.join(DRIVERS)}")
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stress", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=_minutes, default=DEFAULT_MINUTES, help="how long the drivers run")
    parser.add_argument("--seed", type=int, default=None, help="fixes every choice the drivers make (not timing)")
    parser.add_argument("--only", type=_drivers, default=DRIVERS, help=f"a subset of {','.join(DRIVERS)}")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    report = trio.run(soak, args.minutes, seed, args.only)
    print(report.text(), flush=True)
    return report.exit_status()


if __name__ == "__main__":
    sys.exit(main())
