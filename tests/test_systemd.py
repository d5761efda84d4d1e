"""agentd under systemd: the units verify, socket activation hands over fd 3, sd_notify speaks, idle exit.

systemd-socket-activate stands in for the user manager: it binds the socket,
passes it on fd 3 with LISTEN_PID/LISTEN_FDS and execs the real agentd. The
notifications go to a datagram socket the test owns.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from support import WAIT, Daemon, DaemonFactory, open_workspace, run_agentctl
from test_agentctl_daemon import fake_systemctl

from agentctl._daemon_units import CHECKED_IN_EXEC, agentd_executable, quote_exec, render_units

REPO = Path(__file__).resolve().parent.parent
ACTIVATE = shutil.which("systemd-socket-activate")
needs_activate = pytest.mark.skipif(ACTIVATE is None, reason="systemd-socket-activate is not installed")


def agentd_command() -> list[str]:
    return [sys.executable, "-m", "agentd"]


def test_checked_in_units_are_what_install_writes_with_the_placeholder() -> None:
    for name, text in render_units(CHECKED_IN_EXEC).items():
        assert (REPO / "systemd" / name).read_text() == text, name


def test_units_say_what_the_daemon_needs() -> None:
    units = render_units(CHECKED_IN_EXEC)
    sock, service = units["agentd.socket"].splitlines(), units["agentd.service"].splitlines()
    for line in ("ListenStream=%t/agentd/agentd.sock", "SocketMode=0600", "DirectoryMode=0700"):
        assert line in sock
    for line in ("Type=notify", "NotifyAccess=main", "Restart=on-failure", "WatchdogSec=30s"):
        assert line in service
    stop = next(line for line in service if line.startswith("TimeoutStopSec="))
    # It must cover the 8 s graceful drain and the store's close (5 s) behind it.
    assert int(stop.removeprefix("TimeoutStopSec=").removesuffix("s")) > 8 + 5
    assert not any(line.startswith("RuntimeDirectory") for line in service)


def test_exec_start_quotes_spaces_and_percent() -> None:
    assert quote_exec(["/opt/my tools/agentd"]) == '"/opt/my tools/agentd"'
    assert quote_exec(["/home/a%b/agentd"]) == '"/home/a%%b/agentd"'
    assert quote_exec(["/usr/bin/python3", "-m", "agentd"]) == "/usr/bin/python3 -m agentd"
    with pytest.raises(ValueError, match="newline"):
        quote_exec(["/a\nb"])


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_installed_units_pass_systemd_analyze_verify(short_tmp: Path) -> None:
    units = short_tmp / "units"
    units.mkdir()
    for name, text in render_units(quote_exec(agentd_executable())).items():
        (units / name).write_text(text)
    # --user wants a runtime directory to stand up its manager; no running user manager is needed.
    runtime = short_tmp / "runtime"
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "SYSTEMD_LOG_LEVEL": "notice"}
    done = subprocess.run(
        [
            "systemd-analyze",
            "verify",
            "--user",
            "--man=no",
            str(units / "agentd.socket"),
            str(units / "agentd.service"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    # Warnings (an unknown key, a bad value) do not fail verify: they must not be there either.
    assert done.stderr.strip() == "", done.stderr


class NotifyListener:
    """The datagram socket a service manager would listen on for sd_notify."""

    def __init__(self, address: str, sock: socket.socket) -> None:
        self.address = address
        self.sock = sock
        self.seen: list[str] = []

    async def until(self, field: str) -> list[str]:
        """Every message seen, once one carrying `field` (e.g. `READY=1`) has arrived."""
        with trio.fail_after(WAIT):
            while not any(field in m.split("\n") for m in self.seen):
                await trio.lowlevel.wait_readable(self.sock)
                while True:
                    try:
                        self.seen.append(self.sock.recv(4096).decode())
                    except BlockingIOError:
                        break
        return self.seen


@pytest.fixture(params=["path", "abstract"])
def notify(request: pytest.FixtureRequest, short_tmp: Path) -> Iterator[NotifyListener]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setblocking(False)
    if request.param == "path":
        address = str(short_tmp / "notify")
        sock.bind(address)
    else:
        name = f"agentd-test-notify-{os.getpid()}-{short_tmp.name}"
        sock.bind("\0" + name)
        address = "@" + name
    with sock:
        yield NotifyListener(address, sock)


# systemd-socket-activate passes on only the variables its -E names.
_PASSED = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "XDG_DATA_HOME", "XDG_STATE_HOME")


def start_activated(short_tmp: Path, env: dict[str, str], *args: str) -> Daemon:
    """agentd socket-activated on its own socket, as the user manager would start it."""
    assert ACTIVATE is not None
    socket_path = short_tmp / "activated.sock"
    log_path = short_tmp / "activated.log"
    passed = [f"-E{name}" for name in _PASSED if name in env]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [ACTIVATE, "-l", str(socket_path), *passed, *agentd_command(), *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
        )
    return Daemon(proc, socket_path, log_path)


@pytest.fixture
def activated(short_tmp: Path, env: dict[str, str]) -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for daemon in started:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait()


async def wait_for_socket(path: Path) -> None:
    with trio.fail_after(WAIT):
        while not path.exists():
            await trio.sleep(0.02)


@needs_activate
async def test_socket_activated_daemon_serves_a_run_and_leaves_the_socket_it_was_given(
    short_tmp: Path, env: dict[str, str], project: Path, activated: list[Daemon]
) -> None:
    daemon = start_activated(short_tmp, env)
    activated.append(daemon)
    await wait_for_socket(daemon.socket_path)
    async with daemon.client() as client:
        # The first connection is what starts agentd.
        assert await client.call("ping") == {}
        status = await client.call("server.status")
        assert status["socket_activated"] is True
        assert status["idle_exit_s"] == 600
        assert status["pid"] == daemon.proc.pid  # systemd-socket-activate execs agentd
        ws = await open_workspace(client, project)
        session = await ws.new_session()
        reply = await ws.send(session, "hello from fd 3")
        rc = await ws.events.until_complete(reply["run_id"])
        assert rc["text"] == "hello from fd 3" and rc["error"] is None
    daemon.proc.send_signal(signal.SIGTERM)
    assert await daemon.exited() == 0, daemon.log()
    assert "(socket-activated)" in daemon.log()
    # Not ours to remove: it is how the next connection starts the daemon again.
    assert daemon.socket_path.exists()


async def test_a_plain_daemon_is_not_socket_activated_and_never_idles_out(daemon: Daemon) -> None:
    async with daemon.client() as client:
        status = await client.call("server.status")
    assert status["socket_activated"] is False and status["idle_exit_s"] is None


@needs_activate
async def test_notify_ready_status_watchdog_and_stopping_reach_the_notify_socket(
    short_tmp: Path, env: dict[str, str], notify: NotifyListener, activated: list[Daemon]
) -> None:
    env = {**env, "NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": "200000"}
    daemon = start_activated(short_tmp, env)
    activated.append(daemon)
    await wait_for_socket(daemon.socket_path)
    async with daemon.client() as client:
        await client.call("ping")
        seen = await notify.until("READY=1")
        await notify.until("WATCHDOG=1")
        seen = await notify.until("STATUS=serving; 0 workspaces, 0 runs, 1 client")
        # Every 100 ms, half of WATCHDOG_USEC: several by now would need seconds otherwise.
        with trio.fail_after(WAIT):
            while sum(m == "WATCHDOG=1" for m in notify.seen) < 3:
                await notify.until("WATCHDOG=1")
                await trio.lowlevel.wait_readable(notify.sock)
    daemon.proc.send_signal(signal.SIGTERM)
    seen = await notify.until("STOPPING=1")
    assert await daemon.exited() == 0, daemon.log()
    ready = next(i for i, m in enumerate(seen) if m == "READY=1")
    stopping = next(i for i, m in enumerate(seen) if m == "STOPPING=1")
    assert ready < stopping


@needs_activate
async def test_watchdog_for_another_pid_is_not_pinged(
    short_tmp: Path, env: dict[str, str], notify: NotifyListener, activated: list[Daemon]
) -> None:
    env = {**env, "NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": "100000", "WATCHDOG_PID": "1"}
    daemon = start_activated(short_tmp, env)
    activated.append(daemon)
    await wait_for_socket(daemon.socket_path)
    async with daemon.client() as client:
        await client.call("ping")
        await notify.until("READY=1")
    daemon.proc.send_signal(signal.SIGTERM)
    seen = await notify.until("STOPPING=1")
    assert await daemon.exited() == 0
    assert "WATCHDOG=1" not in seen


@needs_activate
async def test_socket_activated_daemon_exits_when_idle_even_with_a_client_connected(
    short_tmp: Path, env: dict[str, str], project: Path, activated: list[Daemon]
) -> None:
    daemon = start_activated(short_tmp, env, "--idle-exit", "0.5", "--idle-grace", "0.1")
    activated.append(daemon)
    await wait_for_socket(daemon.socket_path)
    async with daemon.client() as client:
        ws = await open_workspace(client, project)
        session = await ws.new_session()
        reply = await ws.send(session, "still here")
        await ws.events.until_complete(reply["run_id"])
        # An open workspace keeps it alive past the idle time.
        await trio.sleep(1.0)
        assert daemon.proc.poll() is None
        await client.call("workspace.close", {"workspace_id": ws.id})
        # Connected, but with nothing open: that does not keep it alive.
        assert await daemon.exited() == 0, daemon.log()
    assert "shutting down (idle)" in daemon.log()
    assert daemon.socket_path.exists()


async def test_a_socket_handed_over_that_does_not_listen_is_refused(short_tmp: Path, env: dict[str, str]) -> None:
    # What systemd would do with a ListenDatagram= unit: fd 3 set up, LISTEN_PID our own.
    launcher = (
        "import os, socket, sys\n"
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
        "os.set_inheritable(s.fileno(), True)\n"
        "if s.fileno() != 3:\n"
        "    os.dup2(s.fileno(), 3)\n"
        "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1')\n"
        "os.execv(sys.executable, [sys.executable, '-m', 'agentd'])\n"
    )
    with trio.fail_after(WAIT):
        done = await trio.run_process(
            [sys.executable, "-c", launcher], env=env, capture_stdout=True, capture_stderr=True, check=False
        )
    assert done.returncode == 1
    assert b"fd 3 is a AF_UNIX SOCK_DGRAM socket" in done.stderr, done.stderr
    assert not Path(env["AGENTD_SOCKET"]).exists()


@needs_activate
async def test_status_and_restart_of_a_socket_activated_daemon_go_through_systemctl(
    short_tmp: Path, env: dict[str, str], activated: list[Daemon]
) -> None:
    daemon = start_activated(short_tmp, env)
    activated.append(daemon)
    await wait_for_socket(daemon.socket_path)
    bin_dir = short_tmp / "bin"
    bin_dir.mkdir()
    record = fake_systemctl(bin_dir)
    env = {**env, "AGENTD_SOCKET": str(daemon.socket_path), "PATH": f"{bin_dir}{os.pathsep}{env['PATH']}"}
    done = await run_agentctl("status", env=env)
    assert done.returncode == 0, done.stderr
    assert "socket_activated: True\n" in done.stdout.decode()
    assert f"pid: {daemon.proc.pid}\n" in done.stdout.decode()
    done = await run_agentctl("restart", env=env)
    assert done.returncode == 0, done.stderr
    # The user manager restarts the service (this systemctl only records): agentctl does not stop it itself.
    assert record.read_text().splitlines() == ["--user restart agentd.service"]
    assert "ran: systemctl --user restart agentd.service" in done.stdout.decode()
    assert daemon.proc.poll() is None


async def test_listen_variables_meant_for_another_process_are_ignored(
    env: dict[str, str], start_daemon: DaemonFactory
) -> None:
    # Inherited from an activated parent: fd 3 is not ours, so bind as usual.
    env.update(LISTEN_PID="1", LISTEN_FDS="1", LISTEN_FDNAMES="agentd.socket")
    daemon = start_daemon()
    async with daemon.client() as client:
        status = await client.call("server.status")
    assert status["socket_activated"] is False


@needs_activate
async def test_a_command_a_run_starts_sees_none_of_the_activation_and_notify_variables(
    short_tmp: Path, env: dict[str, str], project: Path, notify: NotifyListener, activated: list[Daemon]
) -> None:
    env = {**env, "NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": "30000000"}
    daemon = start_activated(short_tmp, env)
    activated.append(daemon)
    await wait_for_socket(daemon.socket_path)
    async with daemon.client() as client:
        ws = await open_workspace(client, project)
        session = await ws.new_session()
        command = "env > seen.env"
        script = {"steps": [{"tool_calls": [{"name": "bash", "arguments": {"command": command}}]}, {"chunks": ["ok"]}]}
        reply = await ws.send(session, script, allow=["*"])
        rc = await ws.events.until_complete(reply["run_id"])
        assert rc["error"] is None, rc
    names = {line.partition("=")[0] for line in (project / "seen.env").read_text().splitlines()}
    assert "XDG_DATA_HOME" in names  # what the daemon was given does reach it
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        assert name not in names
