"""A failure of the daemon itself, outside every workspace's and connection's boundary: one log line, exit 70.

What reaches that handler for real is a failure nothing below `serve` expects:
here, the socket's lock path is a directory, so taking the lock fails with an
OSError no start-up check names. Once the daemon serves, every task it runs is
inside a boundary of its own (a workspace, a connection, a request, a run), or
only warms something up and must not take the daemon with it: the last test.
"""

from __future__ import annotations

import sys
from pathlib import Path

import trio
from loopback_http import start_loopback_server
from support import WAIT, DaemonFactory, run_agentctl

EX_SOFTWARE = 70


async def run_agentd(env: dict[str, str], socket_path: Path, *extra: str) -> tuple[int, str]:
    with trio.fail_after(WAIT):
        result = await trio.run_process(
            [sys.executable, "-m", "agentd", "--socket", str(socket_path), *extra],
            env=env,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    return result.returncode, result.stderr.decode()


async def test_a_failure_of_the_daemon_itself_logs_one_line_and_exits_70(env: dict[str, str], short_tmp: Path) -> None:
    socket_path = short_tmp / "agentd.sock"
    lock_path = short_tmp / "agentd.sock.lock"
    lock_path.mkdir()
    status, stderr = await run_agentd(env, socket_path)
    assert status == EX_SOFTWARE, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert " CRITICAL agentd: agentd failed: " in lines[0]
    assert "Is a directory" in lines[0] and str(lock_path) in lines[0]
    assert "--log-level debug" in lines[0]
    assert not socket_path.exists()


async def test_the_traceback_of_a_daemon_failure_is_there_at_debug_level(env: dict[str, str], short_tmp: Path) -> None:
    (short_tmp / "agentd.sock.lock").mkdir()
    status, stderr = await run_agentd(env, short_tmp / "agentd.sock", "--log-level", "debug")
    assert status == EX_SOFTWARE, stderr
    assert "Traceback (most recent call last)" in stderr and "IsADirectoryError" in stderr
    assert stderr.count(" CRITICAL ") == 1


async def test_a_provider_client_that_cannot_be_built_fails_its_runs_not_the_daemon(
    start_daemon: DaemonFactory, env: dict[str, str], project: Path
) -> None:
    bundle = project / "not-a-bundle.pem"
    bundle.write_text("not a certificate\n")
    async with trio.open_nursery() as nursery:
        server = await start_loopback_server(nursery)
        env["OLLAMA_HOST"] = server.url
        env["SSL_CERT_FILE"] = str(bundle)  # every HTTP client's TLS context loads it, and fails
        daemon = start_daemon()
        with trio.fail_after(WAIT):
            while "provider 'ollama': cannot load" not in daemon.log() and daemon.proc.poll() is None:
                await trio.sleep(0.02)
        assert daemon.proc.poll() is None, daemon.log()
        echo = await run_agentctl("run", "--model", "echo", "still here", env=env, cwd=project)
        assert (echo.returncode, echo.stdout) == (0, b"still here\n"), echo.stderr
        provider = await run_agentctl("run", "--model", "ollama/qwen2.5-coder", "hello", env=env, cwd=project)
        assert provider.returncode != 0
        # Which provider, what it could not do, and where the certificates came from.
        said = provider.stderr.decode()
        assert f"provider 'ollama': cannot load the TLS CA certificates from SSL_CERT_FILE={bundle}" in said, said
        assert said.rstrip().endswith("no certificate or crl found"), said
        assert daemon.proc.poll() is None, daemon.log()
        nursery.cancel_scope.cancel()
