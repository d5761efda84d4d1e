"""MCP tools: what a call through an MCP server costs a run, and what starting a server costs everyone else.

Measured in one daemon, with the tests' toolbox server (tests/mcp_servers/toolbox.py, over stdio):

- a run of the `scripted` model whose one tool call is the server's `add`,
  against the same run calling the built-in `view`, alternating: the ratio is
  the MCP round trip's share of a run;
- the daemon's answers to `ping` every 10 ms while the first MCP server of
  its life starts (spawn, the SDK's imports, `initialize`, `tools/list`),
  against the same pings before: the worst stall other clients see.

    python -m bench.mcp [--quick]
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import trio

from agentctl.client import open_client

from ._common import Row, daemon, percentile

__all__ = ["run"]

SECTION = "mcp"
TOOLBOX = str(Path(__file__).resolve().parent.parent / "tests" / "mcp_servers" / "toolbox.py")


async def _pings(client: Any, stop: trio.Event, out: list[float]) -> None:
    while not stop.is_set():
        start = time.perf_counter()
        await client.call("ping")
        out.append(time.perf_counter() - start)
        await trio.sleep(0.01)


async def _timed_run(client: Any, workspace_id: str, session_id: str, call: dict[str, Any]) -> float:
    script = {"steps": [{"tool_calls": [call]}]}
    start = time.perf_counter()
    sent = await client.call(
        "agent.send",
        {
            "workspace_id": workspace_id,
            "session_id": session_id,
            "prompt": json.dumps(script),
            "model": "scripted",
            "allow": ["*"],
        },
    )
    done = await client.call("run.wait", {"run_id": sent["run_id"], "timeout": 60})
    if done["error"] is not None:
        raise RuntimeError(f"run failed: {done['error']}")
    return time.perf_counter() - start


async def _measure(rounds: int) -> dict[str, Any]:
    with daemon() as d:
        project = d.project()
        (project / "notes.txt").write_text("one line\n")
        async with open_client(d.socket_path) as client:
            ws = await client.call("workspace.open", {"path": str(project)})
            session = await client.call("session.create", {"workspace_id": ws["id"], "title": "bench"})
            idle: list[float] = []
            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_pings, client, stop, idle)
                await trio.sleep(2)
                stop.set()
            starting: list[float] = []
            stop = trio.Event()
            started = time.perf_counter()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_pings, client, stop, starting)
                spec = {"name": "box", "command": [sys.executable, TOOLBOX]}
                await client.call(
                    "session.mcp_servers", {"workspace_id": ws["id"], "session_id": session["id"], "servers": [spec]}
                )
                with trio.fail_after(60):
                    while True:
                        listed = await client.call("mcp.list", {"workspace_id": ws["id"]})
                        if listed["servers"][0]["state"] == "ready":
                            break
                        await trio.sleep(0.02)
                ready_s = time.perf_counter() - started
                stop.set()
            builtin: list[float] = []
            mcp: list[float] = []
            view = {"name": "view", "arguments": {"path": "notes.txt"}}
            add = {"name": "mcp__box__add", "arguments": {"a": 1, "b": 2}}
            for _ in range(rounds):
                builtin.append(await _timed_run(client, ws["id"], session["id"], view))
                mcp.append(await _timed_run(client, ws["id"], session["id"], add))
    return {
        "server_ready_s": ready_s,
        "ping_idle_max_ms": max(idle) * 1000,
        "ping_idle_p99_ms": percentile(idle, 99) * 1000,
        "ping_starting_max_ms": max(starting) * 1000,
        "ping_starting_p99_ms": percentile(starting, 99) * 1000,
        "run_builtin_ms": statistics.median(builtin) * 1000,
        "run_mcp_ms": statistics.median(mcp) * 1000,
        "run_ratio": statistics.median(mcp) / statistics.median(builtin),
    }


def run(quick: bool = False) -> tuple[dict[str, Any], list[Row]]:
    results = trio.run(_measure, 10 if quick else 60)
    rows = [
        Row(
            SECTION,
            "a run calling an MCP tool (stdio), against calling the built-in view",
            f"{results['run_ratio']:.2f}x ({results['run_mcp_ms']:.1f} ms against {results['run_builtin_ms']:.1f} ms)",
        ),
        Row(
            SECTION,
            "longest ping while the first MCP server starts, against idle",
            f"{results['ping_starting_max_ms']:.1f} ms against {results['ping_idle_max_ms']:.1f} ms"
            f" (ready after {results['server_ready_s']:.2f} s)",
        ),
    ]
    return results, rows


def _main() -> None:
    results, rows = run(quick="--quick" in sys.argv[1:])
    for row in rows:
        print(f"{row.what:70} {row.value}")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    _main()
