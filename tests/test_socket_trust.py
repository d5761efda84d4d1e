"""Nobody else on either end of the socket: agentctl refuses a socket that is not ours, agentd a peer that is not.

The other user is uid 65534 (nobody): the tests that need one chown to it and
run processes as it with `setpriv`, so they need root, and are skipped without.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trio
from support import WAIT, DaemonFactory, run_agentctl

from agentctl.blocking import BlockingClient
from agentd.trust import UntrustedSocket

OTHER = 65534
AS_OTHER = ["setpriv", "--reuid", str(OTHER), "--regid", str(OTHER), "--clear-groups"]
needs_root = pytest.mark.skipif(
    os.getuid() != 0 or shutil.which("setpriv") is None,
    reason="acting as another user needs root (chown, setpriv); this run is not root or has no setpriv",
)

# A stand-in for a daemon another user runs: it reports, on stdout, how many
# bytes each connection sent it before closing.
FAKE_DAEMON = textwrap.dedent(
    """
    import socket, sys
    server = socket.socket(socket.AF_UNIX)
    server.bind(sys.argv[1])
    server.listen(8)
    print("ready", flush=True)
    server.settimeout(float(sys.argv[2]))
    try:
        conn, _ = server.accept()
    except TimeoutError:
        print("no connection", flush=True)
        sys.exit(0)
    conn.settimeout(float(sys.argv[2]))
    got = b""
    while chunk := conn.recv(65536):
        got += chunk
    print(f"received {len(got)}", flush=True)
    """
)


def _listening_socket(path: Path) -> socket.socket:
    """A socket listening at `path` that nobody accepts on: what is queued on it is what clients tried."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(8)
    sock.setblocking(False)
    return sock


def _nobody_connected(sock: socket.socket) -> bool:
    try:
        conn, _ = sock.accept()
    except BlockingIOError:
        return True
    conn.close()
    return False


@needs_root
async def test_agentctl_run_refuses_a_socket_folder_another_user_created(
    short_tmp: Path, project: Path, env: dict[str, str]
) -> None:
    squatted = short_tmp / "squatted"
    squatted.mkdir(mode=0o755)
    fake = _listening_socket(squatted / "agentd.sock")
    os.chown(squatted / "agentd.sock", OTHER, OTHER)
    os.chown(squatted, OTHER, OTHER)
    env["AGENTD_SOCKET"] = str(squatted / "agentd.sock")
    try:
        result = await run_agentctl("run", "the secret plan", env=env, cwd=project)
        assert result.returncode == 3, result.stderr
        assert result.stdout == b""
        stderr = result.stderr.decode()
        assert str(squatted) in stderr and f"uid {OTHER}" in stderr and "0755" in stderr, stderr
        assert _nobody_connected(fake)
    finally:
        fake.close()


@needs_root
async def test_no_daemon_is_started_into_a_folder_another_user_created(
    short_tmp: Path, project: Path, env: dict[str, str]
) -> None:
    squatted = short_tmp / "squatted"
    squatted.mkdir(mode=0o777)
    os.chmod(squatted, 0o777)
    os.chown(squatted, OTHER, OTHER)
    env["AGENTD_SOCKET"] = str(squatted / "agentd.sock")
    for command in (["run", "hello"], ["status"]):
        result = await run_agentctl(*command, env=env, cwd=project)
        assert result.returncode == 3, result.stderr
        assert str(squatted).encode() in result.stderr and f"uid {OTHER}".encode() in result.stderr
    assert list(squatted.iterdir()) == []  # no socket, no lock: nothing was started there


async def test_agentctl_refuses_a_socket_folder_of_ours_others_can_write(
    short_tmp: Path, project: Path, env: dict[str, str]
) -> None:
    shared = short_tmp / "shared"
    shared.mkdir()
    os.chmod(shared, 0o770)
    env["AGENTD_SOCKET"] = str(shared / "agentd.sock")
    result = await run_agentctl("run", "hello", env=env, cwd=project)
    assert result.returncode == 3
    assert str(shared).encode() in result.stderr and b"0770" in result.stderr and b"writable" in result.stderr
    assert list(shared.iterdir()) == []


async def test_agentctl_refuses_a_symlinked_socket_folder(short_tmp: Path, project: Path, env: dict[str, str]) -> None:
    real = short_tmp / "real"
    real.mkdir(mode=0o700)
    (short_tmp / "link").symlink_to(real)
    env["AGENTD_SOCKET"] = str(short_tmp / "link" / "agentd.sock")
    result = await run_agentctl("run", "hello", env=env, cwd=project)
    assert result.returncode == 3
    assert str(short_tmp / "link").encode() in result.stderr and b"symlink" in result.stderr
    assert list(real.iterdir()) == []


async def test_agentctl_refuses_something_other_than_a_socket_at_the_path(
    short_tmp: Path, project: Path, env: dict[str, str]
) -> None:
    (short_tmp / "agentd.sock").write_text("not a socket")
    result = await run_agentctl("status", env=env, cwd=project)
    assert result.returncode == 3
    assert b"is not a socket" in result.stderr


@needs_root
def test_a_socket_another_user_owns_is_refused_before_connecting(short_tmp: Path) -> None:
    path = short_tmp / "agentd.sock"
    fake = _listening_socket(path)
    os.chown(path, OTHER, OTHER)
    try:
        with pytest.raises(UntrustedSocket, match=rf"socket {path} is owned by uid {OTHER}"):
            BlockingClient.connect(path)
        assert _nobody_connected(fake)
    finally:
        fake.close()


@needs_root
async def test_a_daemon_running_as_another_user_is_refused_and_sent_nothing(
    short_tmp: Path, project: Path, env: dict[str, str]
) -> None:
    # The folder and the socket look ours; only the process behind them is not.
    folder = short_tmp / "sock"
    folder.mkdir(mode=0o700)
    os.chown(folder, OTHER, OTHER)
    os.chmod(short_tmp, 0o711)
    path = folder / "agentd.sock"
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            fake = await trio.lowlevel.open_process(
                [*AS_OTHER, sys.executable, "-c", FAKE_DAEMON, str(path), str(WAIT)],
                stdout=subprocess.PIPE,
            )
            assert fake.stdout is not None
            lines = _Lines(fake.stdout)
            assert await lines.next() == "ready"
            os.chown(folder, 0, 0)
            os.chown(path, 0, 0)
            env["AGENTD_SOCKET"] = str(path)
            result = await run_agentctl("run", "the secret plan", env=env, cwd=project)
            assert result.returncode == 3, result.stderr
            assert f"runs as uid {OTHER}".encode() in result.stderr and str(path).encode() in result.stderr
            assert f"pid {fake.pid}".encode() in result.stderr
            assert await lines.next() == "received 0"
            await fake.wait()
            nursery.cancel_scope.cancel()


class _Lines:
    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = b""

    async def next(self) -> str:
        while b"\n" not in self._buffer:
            chunk = await self._stream.receive_some()
            if not chunk:
                raise AssertionError(f"stream ended; got {self._buffer!r}")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()


# A client of another user: connects `count` times, sends a request each time,
# and reports what each connection got back before it closed.
OTHER_CLIENT = textwrap.dedent(
    """
    import os, socket, sys
    print(os.getpid(), flush=True)
    request = bytes([0x94, 0x00, 0x01]) + b"\\xaainitialize" + bytes([0x90])
    for _ in range(int(sys.argv[2])):
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(float(sys.argv[3]))
        sock.connect(sys.argv[1])
        try:
            sock.sendall(request)
            reply = sock.recv(65536)
        except (BrokenPipeError, ConnectionResetError):
            reply = b""
        print(f"reply {len(reply)}", flush=True)
        sock.close()
    """
)


@needs_root
async def test_the_daemon_closes_a_connection_from_another_user_at_once_and_logs_it_boundedly(
    short_tmp: Path, start_daemon: DaemonFactory
) -> None:
    # The socket is 0600 in a 0700 folder, which alone keeps others out; opened
    # here, so that the daemon's own check is what is left to refuse them.
    folder = short_tmp / "open"
    folder.mkdir(mode=0o711)
    os.chmod(short_tmp, 0o711)
    daemon = start_daemon(socket_path=folder / "agentd.sock")
    os.chmod(daemon.socket_path, 0o666)
    connections = 12
    result = await trio.run_process(
        [*AS_OTHER, sys.executable, "-c", OTHER_CLIENT, str(daemon.socket_path), str(connections), str(WAIT)],
        capture_stdout=True,
        capture_stderr=True,
    )
    pid, *replies = result.stdout.decode().split("\n")[:-1]
    assert replies == ["reply 0"] * connections, result.stderr
    refusals = [line for line in daemon.log().splitlines() if f"refused a connection from uid {OTHER}" in line]
    assert len(refusals) == 5, daemon.log()  # bounded: the rest are counted, not logged one by one
    assert f"(pid {pid})" in refusals[0]
    # Our own user is still served.
    async with daemon.client() as client:
        assert (await client.call("initialize", {"client_name": "t", "client_version": "0"}))["server"] == "agentd"


def test_agentd_refuses_to_start_in_a_folder_others_can_write(short_tmp: Path) -> None:
    shared = short_tmp / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    result = subprocess.run(
        [sys.executable, "-m", "agentd", "--socket", str(shared / "agentd.sock"), "--data-dir", str(short_tmp / "d")],
        capture_output=True,
        timeout=WAIT,
        check=False,
    )
    assert result.returncode == 1
    assert str(shared).encode() in result.stderr and b"0777" in result.stderr
    assert list(shared.iterdir()) == []


@needs_root
@pytest.mark.parametrize("allow_root", [False, True])
def test_root_is_served_by_another_users_daemon_only_with_allow_root(short_tmp: Path, allow_root: bool) -> None:
    home = short_tmp / "other"
    home.mkdir(mode=0o700)
    os.chown(home, OTHER, OTHER)
    os.chmod(short_tmp, 0o711)
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / "config")}
    env.pop("AGENTD_SOCKET", None)
    socket_path = home / "agentd.sock"
    read_fd, write_fd = os.pipe()
    args = ["--socket", str(socket_path), "--data-dir", str(home / "data"), "--ready-fd", str(write_fd)]
    proc = subprocess.Popen(
        [*AS_OTHER, sys.executable, "-m", "agentd", *args, *(["--allow-root"] if allow_root else [])],
        env=env,
        pass_fds=(write_fd,),
        stderr=subprocess.PIPE,
    )
    os.close(write_fd)
    try:
        with os.fdopen(read_fd, "rb") as ready:
            assert ready.readline() == b"ready\n"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(WAIT)
        sock.connect(str(socket_path))
        try:
            # initialize, as msgpack: [0, 1, "initialize", []]
            sock.sendall(bytes([0x94, 0x00, 0x01]) + b"\xaainitialize" + bytes([0x90]))
            reply = sock.recv(65536)
        except (BrokenPipeError, ConnectionResetError):
            reply = b""  # closed before (or while) the request went
        sock.close()
        assert (b"agentd" in reply) is allow_root, reply
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=WAIT)
    refused = b"refused a connection from uid 0" in stderr
    assert refused is not allow_root, stderr
    if refused:
        assert b"--allow-root is not set" in stderr


@needs_root
async def test_the_trio_client_refuses_a_socket_another_user_owns(short_tmp: Path) -> None:
    from agentctl.client import open_client

    path = short_tmp / "agentd.sock"
    fake = _listening_socket(path)
    os.chown(path, OTHER, OTHER)
    try:
        with pytest.raises(UntrustedSocket, match=rf"owned by uid {OTHER}"):
            async with open_client(path):
                pass
        assert _nobody_connected(fake)
    finally:
        fake.close()
