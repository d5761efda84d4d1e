"""agentctl's cost as a command: wall time and peak memory, against a bare Python start.

`python -c pass` on the same interpreter is the floor for any Python command
here. Measured: `agentctl --version`; `agentctl run --model echo` against a warm
daemon; and the same with no daemon running, so that agentctl starts one (cold).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ._common import Row, bench_env, daemon


def _agentctl() -> list[str]:
    script = Path(sys.executable).parent / "agentctl"
    return [str(script)] if script.exists() else [sys.executable, "-m", "agentctl"]


def _once(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one run of `argv`, which must succeed."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        assert proc.stderr is not None
        raise RuntimeError(f"{argv} exited {proc.returncode}: {proc.stderr.read().decode(errors='replace')}")
    return elapsed, usage.ru_maxrss


def _series(argv: list[str], env: dict[str, str], cwd: Path, n: int) -> dict[str, Any]:
    _once(argv, env, cwd)  # warm the page cache
    runs = [_once(argv, env, cwd) for _ in range(n)]
    times = [t for t, _ in runs]
    return {
        "n": n,
        "median_ms": statistics.median(times) * 1000,
        "min_ms": min(times) * 1000,
        "peak_rss_kb": max(rss for _, rss in runs),
    }


def _cold(env: dict[str, str], cwd: Path, n: int) -> dict[str, Any]:
    """agentctl run with no daemon: it starts one; each is stopped before the next run."""
    argv = [*_agentctl(), "run", "--model", "echo", "hello"]
    runs = []
    for _ in range(n):
        runs.append(_once(argv, env, cwd))
        _stop(env)
    times = [t for t, _ in runs]
    return {
        "n": n,
        "median_ms": statistics.median(times) * 1000,
        "min_ms": min(times) * 1000,
        "peak_rss_kb": max(rss for _, rss in runs),
    }


def _stop(env: dict[str, str]) -> None:
    subprocess.run([*_agentctl(), "stop"], env=env, stdout=subprocess.DEVNULL, check=True, timeout=30)


def run(quick: bool = False) -> tuple[dict[str, Any], list[Row]]:
    n, n_cold = (5, 2) if quick else (30, 5)
    results: dict[str, Any] = {}
    with daemon() as d:
        env = bench_env(d.workdir)
        project = d.project()
        results["python -c pass"] = _series([sys.executable, "-c", "pass"], env, project, n)
        results["agentctl --version"] = _series([*_agentctl(), "--version"], env, project, n)
        results["agentctl run (warm)"] = _series([*_agentctl(), "run", "--model", "echo", "hello"], env, project, n)
    workdir = Path(tempfile.mkdtemp(prefix="agc", dir="/tmp"))
    try:
        env = bench_env(workdir)
        project = workdir / "project"
        project.mkdir()
        results["agentctl run (cold)"] = _cold(env, project, n_cold)
    finally:
        _kill_leftover(workdir)
        shutil.rmtree(workdir, ignore_errors=True)
    return results, rows(results)


def _kill_leftover(workdir: Path) -> None:
    """A daemon a failed cold run left behind must not outlive the benchmark."""
    subprocess.run([*_agentctl(), "stop"], env=bench_env(workdir), capture_output=True, timeout=30, check=False)


def rows(results: dict[str, Any]) -> list[Row]:
    floor = results["python -c pass"]["median_ms"]
    targets = {"agentctl --version": 1.2, "agentctl run (warm)": 2.0}
    out = [Row("agentctl", "python -c pass (floor)", _fmt(results["python -c pass"]))]
    for name in ("agentctl --version", "agentctl run (warm)", "agentctl run (cold)"):
        ratio = results[name]["median_ms"] / floor
        limit = targets.get(name)
        out.append(
            Row(
                "agentctl",
                name,
                f"{_fmt(results[name])}, {ratio:.2f}x floor",
                f"<= {limit}x floor" if limit else "",
                ratio <= limit if limit else None,
            )
        )
    return out


def _fmt(result: dict[str, Any]) -> str:
    return f"{result['median_ms']:.1f} ms, {result['peak_rss_kb'] / 1024:.1f} MiB peak"


if __name__ == "__main__":
    data, table = run(quick="--quick" in sys.argv)
    for row in table:
        print(f"{row.what:<28} {row.value:<44} {row.target}")
    print(json.dumps(data, indent=2))
