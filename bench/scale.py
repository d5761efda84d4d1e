"""Scale: 1,000 sessions, 100 concurrent runs and 200 connected clients on one daemon.

Measures the daemon's memory idle and at that scale, `ping` latency while the
runs stream, and the time from the first `agent.send` to the last RunComplete.

The 200 clients are trio clients in this process. Pings come from a separate
process with a blocking client, so what they measure is the daemon's answer
time under load, not this process's event loop juggling 200 connections.

    python -m bench.scale [--quick]
"""

from __future__ import annotations

import json
import multiprocessing
import sys
import time
import uuid
from contextlib import AsyncExitStack
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import trio

from agentctl.blocking import BlockingClient
from agentctl.client import Client, ConnectionLost, RpcError, open_client

from ._common import Daemon, Row, daemon, rss_kb, summarize_ms

__all__ = ["run"]

SECTION = "scale"

CHUNKS = 50
DELAY_MS = 10
# Every run streams CHUNKS × DELAY_MS; the rest of the time to the last
# completion is the daemon's overhead (and CPU contention) at this scale.
IDEAL_RUN_S = CHUNKS * DELAY_MS / 1000
IDLE_PINGS = 500
LOAD_TIMEOUT = 180.0
PING_MAX_S = 120.0
TARGET_IDLE_RSS_MB = 60
TARGET_SCALE_RSS_MB = 200
RSS_SAMPLE_S = 0.05


# --- pings, from another process


Ping = tuple[float, float]  # (seconds since "go" when sent, seconds to the reply)


def _pinger(socket_path: str, conn: Connection) -> None:
    """Ping sequentially from "go" until "stop" (or PING_MAX_S); send back every ping."""
    pings: list[Ping] = []
    with BlockingClient.connect(socket_path) as client:
        client.call("ping", timeout=10)
        conn.send("ready")
        if conn.recv() != "go":
            return
        clock = time.perf_counter
        go = clock()
        while not conn.poll() and clock() - go < PING_MAX_S:
            start = clock()
            client.call("ping", timeout=10)
            pings.append((start - go, clock() - start))
    conn.recv()  # "stop", when the deadline came first
    conn.send(pings)


class _PingProcess:
    """A process that pings the daemon while the load runs."""

    def __init__(self, socket_path: Path) -> None:
        self._pings: list[Ping] | None = None
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_pinger, args=(str(socket_path), child), daemon=True)
        self._proc.start()
        child.close()
        if not self._conn.poll(30) or self._conn.recv() != "ready":
            raise RuntimeError("the ping process did not start")

    def go(self) -> None:
        self._conn.send("go")

    def stop(self) -> list[Ping]:
        """The pings since "go"; a second call returns the same."""
        if self._pings is None:
            self._pings = []
            try:
                self._conn.send("stop")
                if self._conn.poll(30):
                    self._pings = self._conn.recv()
            except (OSError, EOFError):
                pass  # it died: no pings to report
            self._proc.join(10)
            if self._proc.is_alive():
                self._proc.kill()
        return self._pings


def _idle_pings(socket_path: Path) -> list[float]:
    """The same sequential pings with nothing else going on: the yardstick."""
    out = []
    with BlockingClient.connect(socket_path) as client:
        for _ in range(IDLE_PINGS):
            start = time.perf_counter()
            client.call("ping", timeout=10)
            out.append(time.perf_counter() - start)
    return out


# --- the load, in trio


async def _connect_all(stack: AsyncExitStack, socket_path: Path, n: int) -> list[Client]:
    # One by one: each open_client holds a nursery that must be entered in this task.
    return [await stack.enter_async_context(open_client(socket_path)) for _ in range(n)]


async def _open_workspaces(clients: list[Client], projects: list[str]) -> list[str]:
    """initialize + workspace.open on every client (round-robin over the projects); the workspace ids."""
    ids: dict[str, str] = {}

    async def one(i: int, client: Client) -> None:
        await client.call("initialize", {"client_name": f"bench-scale-{i}"})
        ws = await client.call("workspace.open", {"path": projects[i % len(projects)]})
        ids[ws["path"]] = ws["id"]

    async with trio.open_nursery() as nursery:
        for i, client in enumerate(clients):
            nursery.start_soon(one, i, client)
    return sorted(ids.values())


async def _create_sessions(clients: list[Client], workspace_ids: list[str], n: int) -> list[tuple[str, str]]:
    """n sessions, round-robin over workspaces and clients: (workspace_id, session_id) in creation order."""
    sessions: list[tuple[str, str] | None] = [None] * n

    async def one(i: int) -> None:
        ws_id = workspace_ids[i % len(workspace_ids)]
        session = await clients[i % len(clients)].call("session.create", {"workspace_id": ws_id, "title": f"s{i}"})
        sessions[i] = (ws_id, session["id"])

    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(one, i)
    return [s for s in sessions if s is not None]


def _script() -> str:
    return json.dumps({"chunks": [f"t{i} " for i in range(CHUNKS)], "delay_ms": DELAY_MS})


async def _run_all(clients: list[Client], sessions: list[tuple[str, str]]) -> dict[str, Any]:
    """One run per session, all at once; each waits for its own RunComplete on the connection that sent it."""
    prompt = _script()
    expected = "".join(json.loads(prompt)["chunks"])
    done_at: list[float] = []
    succeeded: list[str] = []
    failures: list[str] = []

    async def one(i: int, ws_id: str, session_id: str) -> None:
        client = clients[i % len(clients)]
        run_id = f"scale-{i}-{uuid.uuid4().hex[:8]}"
        try:
            await client.call(
                "agent.send",
                {
                    "workspace_id": ws_id,
                    "session_id": session_id,
                    "prompt": prompt,
                    "model": "scripted",
                    "run_id": run_id,
                },
            )
            result = await client.call("run.wait", {"run_id": run_id})
        except (RpcError, ConnectionLost) as exc:
            # One failed run is a result to report, not a reason to abandon the other 99.
            failures.append(f"{run_id}: {exc!r}")
            return
        done_at.append(time.monotonic())
        if result["error"] is None and not result["cancelled"] and result["text"] == expected:
            succeeded.append(run_id)
        else:
            failures.append(f"{run_id}: error={result['error']!r} cancelled={result['cancelled']}")

    start = time.monotonic()
    async with trio.open_nursery() as nursery:
        for i, (ws_id, session_id) in enumerate(sessions):
            nursery.start_soon(one, i, ws_id, session_id)
    return {
        "runs": len(sessions),
        "completed": len(done_at),
        "succeeded": len(succeeded),
        "failed": len(failures),
        "failures": failures[:10],
        "first_send_to_last_complete_s": max(done_at) - start if done_at else float("nan"),
        "first_send_to_first_complete_s": min(done_at) - start if done_at else float("nan"),
    }


async def _sample_rss(pid: int, peak: list[int], stop: trio.Event) -> None:
    """The largest RSS seen while the runs go (VmHWM says the same since start, this says when)."""
    while not stop.is_set():
        peak[0] = max(peak[0], rss_kb(pid)["rss_kb"])
        with trio.move_on_after(RSS_SAMPLE_S):
            await stop.wait()


async def _load(
    d: Daemon, projects: list[str], n_clients: int, n_sessions: int, n_runs: int, pinger: _PingProcess
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with AsyncExitStack() as stack:
        start = time.monotonic()
        clients = await _connect_all(stack, d.socket_path, n_clients)
        workspace_ids = await _open_workspaces(clients, projects)
        out["connect_and_open_s"] = time.monotonic() - start
        start = time.monotonic()
        sessions = await _create_sessions(clients, workspace_ids, n_sessions)
        out["create_sessions_s"] = time.monotonic() - start
        out["workspaces"] = len(workspace_ids)
        out["sessions"] = len(sessions)
        out["rss_before_runs_kb"] = rss_kb(d.pid)["rss_kb"]
        status = await clients[0].call("server.status")
        out["clients_seen_by_daemon"] = status["clients"]
        # Distinct sessions, spread over every workspace by the round-robin above.
        peak = [0]
        stop = trio.Event()
        pinger.go()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_sample_rss, d.pid, peak, stop)
            out.update(await _run_all(clients, sessions[:n_runs]))
            stop.set()
        # Pings while the runs went, not while 200 connections close.
        out["pings"] = pinger.stop()
        out["rss_during_runs_max_kb"] = peak[0]
        out.update({f"after_runs_{k}": v for k, v in rss_kb(d.pid).items()})
    return out


# --- the whole benchmark


def _mb(kb: int) -> float:
    return kb / 1024


def _rows(r: dict[str, Any]) -> list[Row]:
    idle_mb = _mb(r["idle_rss_kb"])
    scale_mb = _mb(max(r["rss_during_runs_max_kb"], r["after_runs_rss_kb"]))
    peak_mb = _mb(r["after_runs_peak_rss_kb"])
    ping, idle = r["ping_under_load"], r["ping_idle"]
    load = r["load"]
    slowest_at = ping["slowest_ms_at_ms"][0][1] if ping["slowest_ms_at_ms"] else float("nan")
    return [
        Row(
            SECTION,
            "idle daemon RSS (right after start)",
            f"{idle_mb:.1f} MB",
            f"< {TARGET_IDLE_RSS_MB} MB",
            idle_mb < TARGET_IDLE_RSS_MB,
        ),
        Row(
            SECTION,
            f"setup: {load['clients']} clients, {load['workspaces']} workspaces, {load['sessions']} sessions",
            f"{load['connect_and_open_s']:.2f} s connect+open, {load['create_sessions_s']:.2f} s sessions; "
            f"RSS {_mb(load['rss_before_runs_kb']):.1f} MB",
        ),
        Row(
            SECTION,
            f"RSS at scale ({load['runs']} runs in flight) / peak",
            f"{scale_mb:.1f} / {peak_mb:.1f} MB",
            f"< {TARGET_SCALE_RSS_MB} MB",
            peak_mb < TARGET_SCALE_RSS_MB,
        ),
        Row(SECTION, "ping p50 / p99 idle", f"{idle['p50_ms']:.2f} / {idle['p99_ms']:.2f} ms ({idle['count']} pings)"),
        Row(
            SECTION,
            "ping p50 / p99 under load",
            f"{ping['p50_ms']:.2f} / {ping['p99_ms']:.2f} ms ({ping['count']} pings; max {ping['max_ms']:.1f} ms, "
            f"{slowest_at:.0f} ms after the first send)",
        ),
        Row(
            SECTION,
            f"first send -> last of {load['runs']} RunCompletes",
            f"{load['first_send_to_last_complete_s']:.2f} s (each run streams {IDEAL_RUN_S:g} s)",
        ),
        Row(
            SECTION,
            "runs completed without error",
            f"{load['succeeded']}/{load['runs']}",
            "all",
            load["succeeded"] == load["runs"],
        ),
    ]


def _ping_summary(latencies: list[float]) -> dict[str, Any]:
    return {**summarize_ms(latencies), "count": len(latencies), "max_ms": max(latencies, default=0.0) * 1000}


def _load_ping_summary(pings: list[Ping]) -> dict[str, Any]:
    """The summary, plus when the slowest pings were sent: bursts (runs starting, ending) show there."""
    out = _ping_summary([latency for _, latency in pings])
    slowest = sorted(pings, key=lambda p: p[1], reverse=True)[:5]
    out["slowest_ms_at_ms"] = [(round(latency * 1000, 2), round(sent * 1000, 1)) for sent, latency in slowest]
    out["over_2ms"] = sum(1 for _, latency in pings if latency > 0.002)
    out["span_s"] = pings[-1][0] if pings else 0.0
    return out


def run(quick: bool = False) -> tuple[dict[str, Any], list[Row]]:
    n_clients, n_workspaces, n_sessions, n_runs = (40, 4, 100, 20) if quick else (200, 10, 1000, 100)
    results: dict[str, Any] = {"chunks": CHUNKS, "delay_ms": DELAY_MS}
    with daemon() as d:
        # Before anything else touches it: what a daemon costs doing nothing.
        results["idle_rss_kb"] = rss_kb(d.pid)["rss_kb"]
        results["ping_idle"] = _ping_summary(_idle_pings(d.socket_path))
        projects = [str(d.project(f"project-{i}")) for i in range(n_workspaces)]
        pinger = _PingProcess(d.socket_path)
        try:
            load = trio.run(_bounded_load, d, projects, n_clients, n_sessions, n_runs, pinger)
        finally:
            pinger.stop()
        load["clients"] = n_clients
        results["ping_under_load"] = _load_ping_summary(load.pop("pings"))
        results["load"] = load
        results["rss_during_runs_max_kb"] = load["rss_during_runs_max_kb"]
        results["after_runs_rss_kb"] = load["after_runs_rss_kb"]
        results["after_runs_peak_rss_kb"] = load["after_runs_peak_rss_kb"]
    return results, _rows(results)


async def _bounded_load(
    d: Daemon, projects: list[str], n_clients: int, n_sessions: int, n_runs: int, pinger: _PingProcess
) -> dict[str, Any]:
    with trio.fail_after(LOAD_TIMEOUT):
        return await _load(d, projects, n_clients, n_sessions, n_runs, pinger)


def _main() -> None:
    results, rows = run(quick="--quick" in sys.argv[1:])
    for row in rows:
        mark = {True: "ok", False: "FAIL", None: ""}[row.ok]
        print(f"{row.what:52} {row.value:62} {row.target:10} {mark}")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    _main()
