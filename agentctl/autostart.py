"""Starting the daemon on demand: one start at a time, ready before anyone connects.

Concurrent `agentctl` processes that all find no daemon serialize on a lock
file beside the socket; the first starts agentd, the others find it running.
Readiness is a pipe the daemon writes to once it listens, so nobody polls.
"""

from __future__ import annotations

import os
import sys

from agentd.paths import ensure_private_dir, managed_socket_dirs, open_private, socket_path_problem, state_dir
from agentd.trust import check_socket_dir

TYPE_CHECKING = False  # not typing's: importing typing costs agentctl milliseconds
if TYPE_CHECKING:
    import subprocess
    from os import PathLike

    StrPath = str | PathLike[str]
    from collections.abc import Sequence
    from typing import BinaryIO

# subprocess, select, fcntl and time are imported where a daemon is started:
# every agentctl call that finds one running (nearly all) never pays for them.

__all__ = ["DaemonUnavailable", "daemon_log_path", "ensure_daemon", "is_listening", "spawn_daemon", "wait_ready"]

READY_TIMEOUT = 15.0


class DaemonUnavailable(Exception):
    """No daemon answers, and one could not be started."""


class SocketTaken(DaemonUnavailable):
    """The daemon started exited 75: another one holds the socket's lock, and may not listen yet."""


# agentd's exit status when another daemon holds the socket's lock (AlreadyRunning).
_EXIT_SOCKET_TAKEN = 75


def daemon_log_path() -> str:
    return os.path.join(state_dir(), "agentd.log")


def is_listening(socket_path: StrPath) -> bool:
    """Whether something accepts connections on `socket_path` right now."""
    import socket  # only on the way to starting a daemon

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(os.fspath(socket_path))
    except (FileNotFoundError, ConnectionRefusedError):
        return False
    except OSError:
        return False
    finally:
        sock.close()
    return True


def spawn_daemon(
    socket_path: StrPath,
    extra_args: Sequence[str] = (),
    *,
    log_path: StrPath | None = None,
    timeout: float = READY_TIMEOUT,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start `agentd` in the background on `socket_path` and return once it listens.

    It logs to `log_path` and rotates it by size itself, while it runs; its
    stderr goes there too, for what it says before its logging is set up.
    """
    import subprocess

    log_path = os.fspath(log_path or daemon_log_path())
    log_dir = os.path.dirname(log_path) or "."
    try:
        ensure_private_dir(log_dir, owned=log_dir == state_dir())
    except OSError as exc:
        raise DaemonUnavailable(f"cannot prepare the daemon's log folder {log_dir}: {exc}") from None
    read_fd, write_fd = os.pipe()
    try:
        with _open_private_log(log_path) as log:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "agentd",
                    "--socket",
                    os.fspath(socket_path),
                    "--ready-fd",
                    str(write_fd),
                    "--log-file",
                    log_path,
                    *extra_args,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                pass_fds=(write_fd,),
                # Our Ctrl-C is not the daemon's: it serves other clients too.
                start_new_session=True,
                env=env,
            )
    finally:
        os.close(write_fd)
    try:
        ready = wait_ready(read_fd, timeout)
    finally:
        os.close(read_fd)
    if not ready:
        try:
            proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            pass
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            raise DaemonUnavailable(f"agentd did not become ready within {timeout:.0f}s (log: {log_path})")
        failure = SocketTaken if proc.returncode == _EXIT_SOCKET_TAKEN else DaemonUnavailable
        raise failure(
            f"agentd exited with status {proc.returncode} while starting: {_last_line(log_path)} (log: {log_path})"
        )
    return proc


def _open_private_log(path: str) -> BinaryIO:
    """The daemon's log for appending, 0600: run errors in it are nobody else's to read. Never through a symlink."""
    return os.fdopen(open_private(path), "ab")


def wait_ready(fd: int, timeout: float) -> bool:
    """Whether agentd said it is ready on the `--ready-fd` pipe read from `fd` within `timeout`.

    False when it closed the pipe first (it exited, or is exiting) or said
    nothing in time: the caller finds out which from the process.
    """
    import select
    import time

    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        readable, _, _ = select.select([fd], [], [], left)
        if not readable:
            return False
        chunk = os.read(fd, 64)
        if not chunk:
            return False  # the daemon closed the pipe without saying it is ready
        data += chunk
    return data.startswith(b"ready")


def _last_line(path: str) -> str:
    try:
        with open(path, errors="replace") as log:
            lines = log.read().strip().splitlines()
    except OSError:
        return "(no log)"
    return lines[-1] if lines else "(empty log)"


def ensure_daemon(socket_path: StrPath, extra_args: Sequence[str] = ()) -> None:
    """Make sure a daemon listens on `socket_path`, starting one (with `extra_args`) if needed.

    UntrustedSocket when the socket's folder is not ours alone: no daemon is
    started into a folder someone else could read its socket from or swap.
    """
    path = os.fspath(socket_path)
    # Before anything is made for it: no folder, no lock for a path no socket can have.
    problem = socket_path_problem(path)
    if problem is not None:
        raise DaemonUnavailable(problem)
    parent = os.path.dirname(path) or "."
    try:
        check_socket_dir(parent)
    except FileNotFoundError:
        pass  # made just below, ours
    if is_listening(socket_path):
        return
    try:
        ensure_private_dir(parent, owned=parent in managed_socket_dirs())
    except OSError as exc:
        raise DaemonUnavailable(f"cannot prepare {parent}: {exc}") from None
    check_socket_dir(parent)
    import fcntl

    lock_path = path + ".start-lock"
    fd = open_private(lock_path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        # Whoever held the lock before us may have started it already.
        if is_listening(socket_path):
            return
        try:
            spawn_daemon(socket_path, extra_args)
        except SocketTaken:
            # A daemon agentctl did not start (one systemd or the user started) is
            # still on its way to listening: wait for it, as for one of ours.
            if not _wait_listening(socket_path, READY_TIMEOUT):
                raise
    finally:
        os.close(fd)


def _wait_listening(socket_path: StrPath, timeout: float) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_listening(socket_path):
            return True
        time.sleep(0.02)
    return False
