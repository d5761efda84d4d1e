"""One daemon per socket: the lock beside it, stale and live socket files, path length, the auto-start race, versions.

Every daemon here is the real `python -m agentd`; the processes that leave a
socket behind or hold one are real processes, killed for real.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from support import WAIT, Daemon, DaemonFactory, run_agentctl

import agentd
from agentctl.autostart import spawn_daemon
from agentctl.client import open_client
from agentd.paths import sun_path_limit

EX_TEMPFAIL = 75  # agentd's status when another daemon holds the socket


def agentd_pids(socket_path: Path) -> list[int]:
    """Every live agentd process serving `socket_path`, found in /proc by its command line."""
    wanted = ["-m", "agentd", "--socket", str(socket_path)]
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = [a.decode() for a in (entry / "cmdline").read_bytes().split(b"\0")]
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError, UnicodeDecodeError):
            continue
        if state != "Z" and any(argv[i : i + len(wanted)] == wanted for i in range(len(argv))):
            pids.append(int(entry.name))
    return pids


@pytest.fixture(autouse=True)
def reap_daemons(env: dict[str, str]) -> Iterator[None]:
    """Daemons agentctl started on its own are no fixture's: end them."""
    yield
    for pid in agentd_pids(Path(env["AGENTD_SOCKET"])):
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            os.kill(pid, signal.SIGTERM)
            import select

            if not select.select([fd], [], [], WAIT)[0]:
                os.kill(pid, signal.SIGKILL)
        finally:
            os.close(fd)


async def agentd_once(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    """`python -m agentd ARGS` run to its end: for starts that must fail."""
    with trio.fail_after(WAIT):
        return await trio.run_process(
            [sys.executable, "-m", "agentd", *args],
            env=env,
            stdin=b"",
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


async def ping(socket_path: Path) -> None:
    async with open_client(socket_path) as client:
        assert await client.call("ping") == {}


# --- one instance ------------------------------------------------------------------


async def test_a_second_agentd_on_the_same_socket_exits_75_naming_the_socket_and_the_pid(
    daemon: Daemon, env: dict[str, str]
) -> None:
    before = os.stat(daemon.socket_path).st_ino
    second = await agentd_once("--socket", str(daemon.socket_path), env=env)
    err = second.stderr.decode()
    assert second.returncode == EX_TEMPFAIL, err
    assert f"another agentd (pid {daemon.proc.pid}) is already running on {daemon.socket_path}" in err
    assert "Traceback" not in err
    # The first one's socket is untouched, and it still serves.
    assert os.stat(daemon.socket_path).st_ino == before
    await ping(daemon.socket_path)


def leave_a_socket_of_a_killed_process(path: Path) -> None:
    """A process binds and listens on `path`, then dies by SIGKILL: its socket file stays behind."""
    binder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import socket, sys, time\n"
            "s = socket.socket(socket.AF_UNIX)\n"
            f"s.bind({str(path)!r}); s.listen()\n"
            "print('bound', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
    )
    assert binder.stdout is not None and binder.stdout.readline() == b"bound\n"
    binder.kill()
    binder.wait(timeout=WAIT)
    binder.stdout.close()
    with socket.socket(socket.AF_UNIX) as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(str(path))  # what it left: a socket file nobody listens on


async def test_a_socket_left_by_a_killed_process_is_replaced(start_daemon: DaemonFactory, env: dict[str, str]) -> None:
    leave_a_socket_of_a_killed_process(Path(env["AGENTD_SOCKET"]))
    daemon = start_daemon()
    await ping(daemon.socket_path)  # the file that refused is gone: this one answers


async def test_a_listening_socket_without_the_lock_is_never_removed(env: dict[str, str]) -> None:
    path = Path(env["AGENTD_SOCKET"])
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))
        listener.listen()
        inode = os.stat(path).st_ino
        result = await agentd_once("--socket", str(path), env=env)
        err = result.stderr.decode()
        assert result.returncode == EX_TEMPFAIL, err
        assert f"something is listening on {path}" in err
        assert os.stat(path).st_ino == inode
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(path))  # still the listener's


async def test_a_datagram_socket_at_the_path_is_refused_and_kept(env: dict[str, str]) -> None:
    path = Path(env["AGENTD_SOCKET"])
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as other:
        other.bind(str(path))
        inode = os.stat(path).st_ino
        result = await agentd_once("--socket", str(path), env=env)
        err = result.stderr.decode()
        assert result.returncode == 1, err
        assert f"{path} is a socket agentd cannot use" in err and "Traceback" not in err
        assert os.stat(path).st_ino == inode


async def test_a_file_that_is_not_a_socket_is_refused_and_kept(env: dict[str, str]) -> None:
    path = Path(env["AGENTD_SOCKET"])
    path.write_text("someone's notes\n")
    result = await agentd_once("--socket", str(path), env=env)
    assert result.returncode == 1
    assert f"{path} exists and is not a socket" in result.stderr.decode()
    assert path.read_text() == "someone's notes\n"


@pytest.mark.parametrize("attempt", range(3))
def test_sigterm_at_once_after_ready_is_a_clean_shutdown(attempt: int, start_daemon: DaemonFactory) -> None:
    # A supervisor may stop the daemon the moment it says it is ready: the signal must find the receiver in place.
    assert start_daemon().terminate() == 0


# --- sun_path ----------------------------------------------------------------------


def test_the_sun_path_limit_is_the_platforms() -> None:
    limit = sun_path_limit()
    if sys.platform.startswith("linux"):
        assert limit == 107  # sizeof(sun_path) is 108, its NUL included
    with socket.socket(socket.AF_UNIX) as sock, pytest.raises(OSError, match="too long"):
        sock.bind("/" + "x" * limit)


def socket_of_length(top: Path, length: int) -> Path:
    """`top/ddd…/agentd.sock`, `length` bytes long."""
    room = length - len(os.fsencode(top)) - len("//agentd.sock")
    path = top / ("d" * room) / "agentd.sock"
    assert len(os.fsencode(path)) == length
    return path


@pytest.fixture
def deep_socket(short_tmp: Path) -> Path:
    """A socket path one byte past the limit, in folders that do not exist yet."""
    return socket_of_length(short_tmp / "deep", sun_path_limit() + 1)


async def test_agentd_refuses_a_socket_path_past_sun_path_before_making_anything(
    deep_socket: Path, short_tmp: Path, env: dict[str, str]
) -> None:
    result = await agentd_once("--socket", str(deep_socket), env=env)
    err = result.stderr.decode()
    assert result.returncode == 1, err
    assert f"socket path is {sun_path_limit() + 1} bytes, longer than the {sun_path_limit()} bytes" in err
    assert "$AGENTD_SOCKET or --socket" in err
    assert not (short_tmp / "deep").exists()


async def test_agentd_takes_a_socket_path_at_the_limit(start_daemon: DaemonFactory, short_tmp: Path) -> None:
    daemon = start_daemon(socket_path=socket_of_length(short_tmp / "deep", sun_path_limit()))
    await ping(daemon.socket_path)


@pytest.mark.parametrize("command", [["run", "hi"], ["status"]], ids=["run", "status"])
async def test_agentctl_refuses_a_socket_path_past_sun_path_before_making_anything(
    command: list[str], deep_socket: Path, short_tmp: Path, project: Path, env: dict[str, str]
) -> None:
    env["AGENTD_SOCKET"] = str(deep_socket)
    result = await run_agentctl(*command, env=env, cwd=project)
    err = result.stderr.decode()
    assert result.returncode == 3, err
    assert f"socket path is {sun_path_limit() + 1} bytes, longer than the {sun_path_limit()} bytes" in err
    assert "$AGENTD_SOCKET or --socket" in err
    assert not (short_tmp / "deep").exists()
    assert not (Path(env["XDG_STATE_HOME"]) / "agentd" / "agentd.log").exists()


# --- the auto-start race -----------------------------------------------------------


async def test_eight_runs_at_once_on_a_fresh_socket_start_exactly_one_daemon(
    project: Path, env: dict[str, str]
) -> None:
    socket_path = Path(env["AGENTD_SOCKET"])
    results: dict[int, subprocess.CompletedProcess[bytes]] = {}

    async def one(i: int) -> None:
        results[i] = await run_agentctl("run", "--model", "echo", f"client {i} says hi", env=env, cwd=project)

    async with trio.open_nursery() as nursery:
        for i in range(8):
            nursery.start_soon(one, i)

    log = (Path(env["XDG_STATE_HOME"]) / "agentd" / "agentd.log").read_text(errors="replace")
    for i, result in sorted(results.items()):
        assert result.returncode == 0, (i, result.stderr, log)
        assert result.stdout == f"client {i} says hi\n".encode()
    [pid] = agentd_pids(socket_path)
    assert re.findall(r"agentd (\d+) listening", log) == [str(pid)], log
    assert "already running" not in log


# --- versions ----------------------------------------------------------------------


OTHER_VERSION = "0.0.1-older"


@pytest.fixture
def older_daemon(short_tmp: Path, env: dict[str, str]) -> Iterator[Daemon]:
    """A real agentd from a copy of this tree whose version says otherwise, as after an upgrade."""
    tree = short_tmp / "older"
    shutil.copytree(Path(agentd.__file__).parent, tree / "agentd", ignore=shutil.ignore_patterns("__pycache__"))
    init = tree / "agentd" / "__init__.py"
    text = init.read_text()
    assert f'__version__ = "{agentd.__version__}"' in text
    init.write_text(text.replace(f'__version__ = "{agentd.__version__}"', f'__version__ = "{OTHER_VERSION}"'))
    # PYTHONSAFEPATH: `-m` would put the current directory (this tree) ahead of PYTHONPATH.
    daemon_env = {**env, "PYTHONPATH": str(tree), "PYTHONSAFEPATH": "1"}
    log_path = short_tmp / "older.log"
    proc = spawn_daemon(Path(env["AGENTD_SOCKET"]), log_path=log_path, env=daemon_env)
    daemon = Daemon(proc, Path(env["AGENTD_SOCKET"]), log_path)
    yield daemon
    daemon.terminate()


async def test_status_reports_a_daemon_of_another_version(older_daemon: Daemon, env: dict[str, str]) -> None:
    result = await run_agentctl("status", env=env)
    assert result.returncode == 0, result.stderr
    assert f"version: {OTHER_VERSION}\n".encode() in result.stdout
    assert result.stderr.decode() == (
        f"agentctl status: warning: agentd is version {OTHER_VERSION}, this agentctl is {agentd.__version__};"
        " restart the daemon (`agentctl restart`) to run this version\n"
    )


@pytest.mark.parametrize("quiet", [[], ["--quiet"]], ids=["plain", "quiet"])
async def test_run_warns_once_about_a_daemon_of_another_version(
    quiet: list[str], older_daemon: Daemon, project: Path, env: dict[str, str]
) -> None:
    result = await run_agentctl("run", *quiet, "--model", "echo", "hello", env=env, cwd=project)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"hello\n"
    err = result.stderr.decode()
    assert err.count(f"agentd is version {OTHER_VERSION}, this agentctl is {agentd.__version__}") == 1, err


async def test_a_daemon_of_this_version_brings_no_warning(daemon: Daemon, project: Path, env: dict[str, str]) -> None:
    status = await run_agentctl("status", env=env)
    run = await run_agentctl("run", "--model", "echo", "hello", env=env, cwd=project)
    assert status.returncode == 0 and run.returncode == 0
    assert b"version" not in status.stderr and b"version" not in run.stderr
