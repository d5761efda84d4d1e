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


# Linux counts a forked child's peak RSS from its parent's size at the fork,
# so a child of this (large) benchmark process would report the benchmark's
# memory. GNU time is a small process in between, and its children report
# their own; without it, no memory is reported rather than a wrong one.
_TIME = "/usr/bin/time" if os.path.exists("/usr/bin/time") else None


def _once(argv: list[str], env: dict[str, str], cwd: Path, *, measure_memory: bool = False) -> tuple[float, int | None]:
    """Wall seconds and peak RSS (KiB, or None) of one run of `argv`, which must succeed.

    Memory is measured on request only: the wrapper's own start would be
    counted in the wall time.
    """
    wrap = measure_memory and _TIME is not None
    wrapped = [_TIME, "-f", "%M", *argv] if wrap and _TIME else argv
    start = time.perf_counter()
    # stdin from /dev/null: `agentctl run` reads a stdin that is not a terminal, with its arguments.
    proc = subprocess.run(
        wrapped,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=False,
    )
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} exited {proc.returncode}: {proc.stderr.decode(errors='replace')}")
    peak = int(proc.stderr.decode().strip().splitlines()[-1]) if wrap else None
    return elapsed, peak


def _series(argv: list[str], env: dict[str, str], cwd: Path, n: int) -> dict[str, Any]:
    _, peak = _once(argv, env, cwd, measure_memory=True)  # also warms the page cache
    times = [_once(argv, env, cwd)[0] for _ in range(n)]
    return {"n": n, "median_ms": statistics.median(times) * 1000, "min_ms": min(times) * 1000, "peak_rss_kb": peak}


def _cold(env: dict[str, str], cwd: Path, n: int) -> dict[str, Any]:
    """agentctl run with no daemon: it starts one; each is stopped before the next run."""
    argv = [*_agentctl(), "run", "--model", "echo", "hello"]
    times = []
    for _ in range(n):
        times.append(_once(argv, env, cwd)[0])
        _stop(env)
    _, peak = _once(argv, env, cwd, measure_memory=True)
    _stop(env)
    return {"n": n, "median_ms": statistics.median(times) * 1000, "min_ms": min(times) * 1000, "peak_rss_kb": peak}


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
    peak = result["peak_rss_kb"]
    memory = f"{peak / 1024:.1f} MiB peak" if peak is not None else "peak memory not measured (no /usr/bin/time)"
    return f"{result['median_ms']:.1f} ms, {memory}"


if __name__ == "__main__":
    data, table = run(quick="--quick" in sys.argv)
    for row in table:
        print(f"{row.what:<28} {row.value:<44} {row.target}")
    print(json.dumps(data, indent=2))
