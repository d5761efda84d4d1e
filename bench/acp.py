"""`agentctl acp`: how soon an editor gets its `initialize` answer, against `agentctl --version`.

An editor starts the bridge when it opens a project and waits for the answer
to `initialize` before it shows the agent: that wait is measured from the
spawn to the answer's line on stdout, with a daemon running (warm) and with
none (cold: the bridge starts one meanwhile, but answers without it). Also
`session/new` after it (workspace.open, events.subscribe, session.create,
models.list), warm. The reference is `agentctl --version` in the same run.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ._common import Row, bench_env, daemon
from .cli import _agentctl, _kill_leftover, _once, _stop

INITIALIZE = b'{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":1}}\n'


def _session_new(cwd: Path) -> bytes:
    params = {"cwd": str(cwd), "mcpServers": []}
    return json.dumps({"jsonrpc": "2.0", "id": 1, "method": "session/new", "params": params}).encode() + b"\n"


def _bridge_once(env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """Seconds from the spawn to the initialize answer, and from then to the session/new answer."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [*_agentctl(), "acp"],
        env=env,
        cwd=cwd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(INITIALIZE)
        proc.stdin.flush()
        first = json.loads(proc.stdout.readline())
        initialized = time.perf_counter()
        if first.get("result", {}).get("protocolVersion") != 1:
            raise RuntimeError(f"initialize: {first}")
        proc.stdin.write(_session_new(cwd))
        proc.stdin.flush()
        second = json.loads(proc.stdout.readline())
        created = time.perf_counter()
        if "sessionId" not in second.get("result", {}):
            raise RuntimeError(f"session/new: {second}")
        proc.stdin.close()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return initialized - start, created - initialized


def _stats(times: list[float]) -> dict[str, Any]:
    return {"n": len(times), "median_ms": statistics.median(times) * 1000, "min_ms": min(times) * 1000}


def run(quick: bool = False) -> tuple[dict[str, Any], list[Row]]:
    n, n_cold = (5, 2) if quick else (20, 5)
    results: dict[str, Any] = {}
    with daemon() as d:
        env = bench_env(d.workdir)
        project = d.project()
        _once([*_agentctl(), "--version"], env, project)  # warms the page cache
        results["agentctl --version"] = _stats([_once([*_agentctl(), "--version"], env, project)[0] for _ in range(n)])
        warm = [_bridge_once(env, project) for _ in range(n)]
        results["acp initialize (warm)"] = _stats([w[0] for w in warm])
        results["acp session/new (warm)"] = _stats([w[1] for w in warm])
    workdir = Path(tempfile.mkdtemp(prefix="agc", dir="/tmp"))
    try:
        env = bench_env(workdir)
        project = workdir / "project"
        project.mkdir()
        cold = []
        for _ in range(n_cold):
            cold.append(_bridge_once(env, project)[0])
            _stop(env)
        results["acp initialize (cold)"] = _stats(cold)
    finally:
        _kill_leftover(workdir)
        shutil.rmtree(workdir, ignore_errors=True)
    return results, rows(results)


def rows(results: dict[str, Any]) -> list[Row]:
    reference = results["agentctl --version"]["median_ms"]
    out = [Row("acp", "agentctl --version (reference)", f"{reference:.1f} ms")]
    for name in ("acp initialize (warm)", "acp initialize (cold)", "acp session/new (warm)"):
        median = results[name]["median_ms"]
        out.append(Row("acp", name, f"{median:.1f} ms, {median / reference:.2f}x reference"))
    return out


if __name__ == "__main__":
    data, table = run(quick="--quick" in sys.argv)
    for row in table:
        print(f"{row.what:<32} {row.value}")
    print(json.dumps(data, indent=2))
