"""What every benchmark needs: a daemon of its own, percentiles, memory readings, a result row."""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agentctl.autostart import spawn_daemon

__all__ = ["Daemon", "Row", "bench_env", "daemon", "percentile", "rss_kb", "summarize_ms"]


class Daemon:
    def __init__(self, proc: subprocess.Popen[bytes], socket_path: Path, workdir: Path) -> None:
        self.proc = proc
        self.socket_path = socket_path
        self.workdir = workdir

    @property
    def pid(self) -> int:
        return self.proc.pid

    def project(self, name: str = "project") -> Path:
        path = self.workdir / name
        path.mkdir(exist_ok=True)
        return path


def bench_env(workdir: Path) -> dict[str, str]:
    """An environment that keeps the benchmark's daemon, logs and state in `workdir`."""
    env = dict(os.environ)
    env["AGENTD_SOCKET"] = str(workdir / "agentd.sock")
    env["XDG_RUNTIME_DIR"] = str(workdir / "run")
    env["XDG_STATE_HOME"] = str(workdir / "state")
    env["XDG_DATA_HOME"] = str(workdir / "data")
    env["XDG_CONFIG_HOME"] = str(workdir / "config")
    return env


@contextmanager
def daemon(*extra_args: str) -> Iterator[Daemon]:
    """A fresh agentd on a private socket, stopped (SIGTERM) at the end."""
    workdir = Path(tempfile.mkdtemp(prefix="agb", dir="/tmp"))
    socket_path = workdir / "agentd.sock"
    proc = spawn_daemon(socket_path, extra_args, log_path=workdir / "agentd.log", env=bench_env(workdir))
    try:
        yield Daemon(proc, socket_path, workdir)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100), nearest rank; nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def summarize_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p99/mean of durations given in seconds, reported in milliseconds."""
    return {
        "p50_ms": percentile(seconds, 50) * 1000,
        "p99_ms": percentile(seconds, 99) * 1000,
        "mean_ms": statistics.fmean(seconds) * 1000 if seconds else float("nan"),
    }


def rss_kb(pid: int) -> dict[str, int]:
    """Resident memory of a live process: now (VmRSS) and its peak (VmHWM), in KiB."""
    out = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return {"rss_kb": out["VmRSS"], "peak_rss_kb": out["VmHWM"]}


class Row:
    """One line of the printed table: what was measured, the number, and the target it answers to."""

    def __init__(self, section: str, what: str, value: str, target: str = "", ok: bool | None = None) -> None:
        self.section = section
        self.what = what
        self.value = value
        self.target = target
        self.ok = ok

    def as_dict(self) -> dict[str, Any]:
        return {"section": self.section, "what": self.what, "value": self.value, "target": self.target, "ok": self.ok}
