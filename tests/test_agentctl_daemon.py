"""`agentctl daemon install | uninstall` and `agentctl restart [--now]`, run as the real agentctl.

systemctl is an external program: a small script on PATH records what it was
asked to run; with PATH holding no systemctl at all, install still writes the
units and says what it skipped.
"""

from __future__ import annotations

import fcntl
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from support import WAIT, Daemon, DaemonFactory, delta_reaching, open_workspace, run_agentctl

from agentctl._daemon_units import quote_exec, render_units

AGENTD = str(Path(sys.executable).parent / "agentd")


def fake_systemctl(bin_dir: Path, *, fail: bool = False) -> Path:
    """A systemctl that appends its arguments to a file beside it (and fails like a missing user manager)."""
    record = bin_dir / "systemctl.calls"
    script = bin_dir / "systemctl"
    body = 'echo "Failed to connect to bus: No medium found" >&2; exit 1' if fail else "exit 0"
    script.write_text(f'#!/bin/sh\necho "$*" >> "{record}"\n{body}\n')
    script.chmod(stat.S_IRWXU)
    return record


@pytest.fixture
def bin_dir(short_tmp: Path) -> Path:
    path = short_tmp / "bin"
    path.mkdir()
    return path


def units_dir(env: dict[str, str]) -> Path:
    return Path(env["XDG_CONFIG_HOME"]) / "systemd" / "user"


async def test_install_without_systemctl_writes_both_units_running_this_agentd(
    env: dict[str, str], bin_dir: Path
) -> None:
    env = {**env, "PATH": str(bin_dir)}
    done = await run_agentctl("daemon", "install", env=env)
    out = done.stdout.decode()
    assert done.returncode == 0, done.stderr
    expected = render_units(quote_exec([AGENTD]))
    for name, text in expected.items():
        assert (units_dir(env) / name).read_text() == text
        assert f"wrote {units_dir(env) / name}" in out
    assert f"ExecStart={AGENTD}\n" in expected["agentd.service"]
    assert "skipped: systemctl --user daemon-reload (systemctl is not on PATH)" in out


async def test_install_and_uninstall_run_systemctl_and_say_so(env: dict[str, str], bin_dir: Path) -> None:
    record = fake_systemctl(bin_dir)
    env = {**env, "PATH": f"{bin_dir}{os.pathsep}{env['PATH']}"}
    done = await run_agentctl("daemon", "install", env=env)
    assert done.returncode == 0, done.stderr
    assert record.read_text().splitlines() == ["--user daemon-reload", "--user enable --now agentd.socket"]
    out = done.stdout.decode()
    assert "ran: systemctl --user daemon-reload" in out and "ran: systemctl --user enable --now agentd.socket" in out
    record.unlink()
    done = await run_agentctl("daemon", "uninstall", env=env)
    assert done.returncode == 0, done.stderr
    assert record.read_text().splitlines() == [
        "--user disable --now agentd.socket agentd.service",
        "--user daemon-reload",
    ]
    assert not (units_dir(env) / "agentd.socket").exists() and not (units_dir(env) / "agentd.service").exists()
    assert f"removed {units_dir(env) / 'agentd.service'}" in done.stdout.decode()


async def test_install_reports_a_failing_systemctl_and_does_not_fail(env: dict[str, str], bin_dir: Path) -> None:
    record = fake_systemctl(bin_dir, fail=True)
    env = {**env, "PATH": f"{bin_dir}{os.pathsep}{env['PATH']}"}
    done = await run_agentctl("daemon", "install", env=env)
    assert done.returncode == 0, done.stderr
    assert "failed: systemctl --user daemon-reload (exit 1): Failed to connect to bus" in done.stdout.decode()
    # Enabling after a failed reload would only fail the same way.
    assert record.read_text().splitlines() == ["--user daemon-reload"]
    assert (units_dir(env) / "agentd.service").exists()


async def stop_new_daemon(env: dict[str, str]) -> None:
    done = await run_agentctl("stop", env=env)
    assert done.returncode == 0, done.stderr


def pids_of(out: str) -> tuple[int, int]:
    line = next(line for line in out.splitlines() if line.startswith("agentd restarted: pid "))
    old, new = line.removeprefix("agentd restarted: pid ").split(" -> ")
    return int(old), int(new)


async def test_restart_waits_for_the_active_run_then_replaces_the_daemon(
    start_daemon: DaemonFactory, env: dict[str, str], project: Path
) -> None:
    daemon = start_daemon()
    async with daemon.client() as client:
        ws = await open_workspace(client, project)
        session = await ws.new_session()
        reply = await ws.send(session, {"chunks": ["one ", "two ", "three"], "delay_ms": 400})
        await ws.events.until(delta_reaching(4))
        async with trio.open_nursery() as nursery:
            result: list[object] = []

            async def restart() -> None:
                result.append(await run_agentctl("restart", env=env))

            nursery.start_soon(restart)
            rc = await ws.events.until_complete(reply["run_id"])
    assert rc["cancelled"] is False and rc["text"] == "one two three"
    done = result[0]
    assert done.returncode == 0, done.stderr  # type: ignore[attr-defined]
    out = done.stdout.decode()  # type: ignore[attr-defined]
    assert "waiting for 1 active run(s) to finish" in out
    old, new = pids_of(out)
    assert old == daemon.proc.pid and new != old
    assert daemon.proc.wait(timeout=WAIT) == 0
    async with Daemon(daemon.proc, daemon.socket_path, daemon.log_path).client() as client:
        status = await client.call("server.status")
    assert status["pid"] == new and status["socket_activated"] is False
    await stop_new_daemon(env)


async def test_restart_now_cancels_the_active_run(
    start_daemon: DaemonFactory, env: dict[str, str], project: Path
) -> None:
    daemon = start_daemon()
    async with daemon.client() as client:
        ws = await open_workspace(client, project)
        session = await ws.new_session()
        reply = await ws.send(session, {"chunks": ["working "], "hang": True})
        await ws.events.until(delta_reaching(8))
        async with trio.open_nursery() as nursery:
            result: list[object] = []

            async def restart() -> None:
                result.append(await run_agentctl("restart", "--now", env=env))

            nursery.start_soon(restart)
            rc = await ws.events.until_complete(reply["run_id"])
    assert rc["cancelled"] is True
    done = result[0]
    assert done.returncode == 0, done.stderr  # type: ignore[attr-defined]
    out = done.stdout.decode()  # type: ignore[attr-defined]
    assert "cancelling 1 active run(s)" in out
    old, new = pids_of(out)
    assert old == daemon.proc.pid != new
    assert daemon.proc.wait(timeout=WAIT) == 0
    await stop_new_daemon(env)


async def test_restart_with_no_daemon_starts_one(env: dict[str, str]) -> None:
    done = await run_agentctl("restart", env=env)
    assert done.returncode == 0, done.stderr
    out = done.stdout.decode()
    assert "agentd was not running" in out and "started" in out
    await stop_new_daemon(env)


async def test_restart_starts_the_new_daemon_with_the_old_ones_options(
    start_daemon: DaemonFactory, env: dict[str, str], project: Path
) -> None:
    daemon = start_daemon("--model", "scripted", "--idle-grace=7")
    done = await run_agentctl("restart", env=env)
    assert done.returncode == 0, done.stderr
    _old, new = pids_of(done.stdout.decode())
    argv = Path(f"/proc/{new}/cmdline").read_bytes().split(b"\0")
    assert b"--model" in argv and argv[argv.index(b"--model") + 1] == b"scripted"
    assert b"--idle-grace=7" in argv
    # The socket and the ready pipe are the new daemon's own, given once.
    assert argv.count(b"--socket") == 1 and argv.count(b"--ready-fd") == 1
    # And it is the default model the old one had: a script prompt is played, not echoed.
    run = await run_agentctl("run", '{"chunks": ["played"]}', env=env, cwd=project)
    assert (run.returncode, run.stdout) == (0, b"played\n"), run.stderr
    assert daemon.proc.wait(timeout=WAIT) == 0
    await stop_new_daemon(env)


async def test_agentctl_waits_for_a_daemon_that_holds_the_socket_and_is_not_listening_yet(
    start_daemon: DaemonFactory, env: dict[str, str], project: Path
) -> None:
    socket_path = Path(env["AGENTD_SOCKET"])
    # Another daemon on its way up (one systemd started, say): it holds the lock, and listens a moment later.
    lock = os.open(socket_path.with_name(socket_path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    log = Path(env["XDG_STATE_HOME"]) / "agentd" / "agentd.log"
    result: list[subprocess.CompletedProcess[bytes]] = []
    async with trio.open_nursery() as nursery:

        async def run() -> None:
            result.append(await run_agentctl("run", "hello", env=env, cwd=project))

        nursery.start_soon(run)
        # The daemon agentctl started found the lock taken and exited 75.
        with trio.fail_after(WAIT):
            while not (log.exists() and "is already running on" in log.read_text()):
                await trio.sleep(0.02)
        os.close(lock)
        start_daemon()
    [done] = result
    assert (done.returncode, done.stdout) == (0, b"hello\n"), done.stderr
