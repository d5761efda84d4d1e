"""Shared test fixtures: a real agentd process on a temporary socket, and ways to talk to it.

Nothing of ours is mocked: the daemon is `python -m agentd`, started the way
`agentctl` starts it; clients are the real client library, the real `agentctl`
executable, or raw bytes on the socket when the test is about the wire itself.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from support import WAIT, Daemon, DaemonFactory, Workspace, open_workspace

from agentctl.autostart import spawn_daemon


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short directory: Unix socket paths must stay under 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="agd", dir="/tmp"))
    os.chmod(path, 0o700)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def env(short_tmp: Path) -> dict[str, str]:
    """An environment that points agentd and agentctl at this test's own files only."""
    e = dict(os.environ)
    e["AGENTD_SOCKET"] = str(short_tmp / "agentd.sock")
    e["XDG_RUNTIME_DIR"] = str(short_tmp / "run")
    e["XDG_STATE_HOME"] = str(short_tmp / "state")
    e["XDG_DATA_HOME"] = str(short_tmp / "data")
    e["XDG_CONFIG_HOME"] = str(short_tmp / "config")
    # No real model: whatever keys the machine has, tests talk to echo, scripted
    # and their own loopback servers only.
    for name in (
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_BASE_URL",
        "OLLAMA_HOST",
        "AGENTD_MODEL",
    ):
        e.pop(name, None)
    return e


@pytest.fixture
def start_daemon(short_tmp: Path, env: dict[str, str]) -> Iterator[DaemonFactory]:
    """Start agentd with extra command-line arguments; every daemon is stopped at teardown."""
    started: list[Daemon] = []

    def start(*extra: str, socket_path: Path | None = None) -> Daemon:
        path = socket_path or Path(env["AGENTD_SOCKET"])
        log_path = short_tmp / f"agentd-{len(started)}.log"
        proc = spawn_daemon(path, extra, log_path=log_path, env=env)
        daemon = Daemon(proc, path, log_path)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        if daemon.proc.poll() is None:
            daemon.proc.send_signal(signal.SIGTERM)
            try:
                daemon.proc.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                daemon.proc.kill()
                daemon.proc.wait()
                raise AssertionError("agentd did not exit within 10s of SIGTERM:\n" + daemon.log()) from None


@pytest.fixture
def daemon(start_daemon: DaemonFactory) -> Daemon:
    return start_daemon()


@pytest.fixture
def project(short_tmp: Path) -> Path:
    """A workspace directory."""
    path = short_tmp / "project"
    path.mkdir()
    return path


@pytest.fixture
async def ws(daemon: Daemon, project: Path) -> AsyncIterator[Workspace]:
    async with daemon.client() as client:
        yield await open_workspace(client, project)
