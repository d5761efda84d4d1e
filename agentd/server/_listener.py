"""The daemon's Unix socket: one daemon per path, a private directory, a 0600 socket."""

from __future__ import annotations

import errno
import fcntl
import os
import socket as stdlib_socket
import stat
from pathlib import Path

import trio

from agentd.paths import ensure_private_dir, managed_socket_dirs, open_private, socket_path_problem
from agentd.trust import UntrustedSocket, check_socket_dir

__all__ = ["AlreadyRunning", "SocketClaim", "StartupError", "bind_listener"]


class StartupError(Exception):
    """The daemon cannot start; the message says why and what to do."""

    exit_status = 1


class AlreadyRunning(StartupError):
    """Another daemon serves the socket path: this one must not touch it."""

    # EX_TEMPFAIL: the path is taken now and free once the other daemon exits;
    # distinct from 1, so a supervisor or a script can tell "busy" from "broken".
    exit_status = 75


class SocketClaim:
    """The daemon's hold on its socket path: a lock file held for the daemon's life.

    The lock, not the socket file, decides who owns the path, so a stale socket
    left by a crash is replaced safely and two daemons never share one path.
    """

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.lock_path = socket_path.with_name(socket_path.name + ".lock")
        self._lock_fd: int | None = None
        self._inode: int | None = None

    def acquire(self) -> None:
        fd = open_private(self.lock_path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                who = f" (pid {holder})" if holder is not None else ""
                raise AlreadyRunning(
                    f"another agentd{who} is already running on {self.socket_path}; it holds {self.lock_path}"
                ) from None
            raise
        # The pid is for the message a second daemon prints; the lock alone decides.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def remember(self) -> None:
        self._inode = os.stat(self.socket_path).st_ino

    def release(self) -> None:
        # Only remove the socket we made: never one a successor has bound since.
        try:
            if self._inode is not None and os.stat(self.socket_path).st_ino == self._inode:
                os.unlink(self.socket_path)
        except FileNotFoundError:
            pass
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def _is_served(socket_path: Path) -> bool:
    """Whether something accepts connections on the socket file: only a refusal means it is dead."""
    probe = stdlib_socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
    probe.setblocking(False)  # a full backlog says EAGAIN at once: someone listens
    try:
        probe.connect(os.fspath(socket_path))
    except ConnectionRefusedError:
        return False
    except BlockingIOError:
        return True
    except OSError as exc:
        # A datagram socket, one we may not connect to: someone's, not a dead daemon's.
        raise StartupError(
            f"{socket_path} is a socket agentd cannot use ({exc}); remove it or pick another path"
        ) from None
    finally:
        probe.close()
    return True


async def bind_listener(socket_path: Path) -> tuple[trio.SocketListener, SocketClaim]:
    problem = socket_path_problem(os.fspath(socket_path))
    if problem is not None:
        raise StartupError(problem)
    try:
        parent = os.fspath(socket_path.parent)
        ensure_private_dir(parent, owned=parent in managed_socket_dirs())
        # The check agentctl makes too: a folder others may write to is not where our socket goes.
        check_socket_dir(parent)
    except OSError as exc:
        raise StartupError(f"cannot prepare the socket directory {socket_path.parent}: {exc}") from None
    except UntrustedSocket as exc:
        raise StartupError(str(exc)) from None
    claim = SocketClaim(socket_path)
    claim.acquire()
    try:
        try:
            st = os.lstat(socket_path)
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(st.st_mode):
                raise StartupError(f"{socket_path} exists and is not a socket; remove it or pick another path")
            # The lock is free, yet a listener without it (a socket unit's, or a
            # daemon from before the lock) still serves its clients: leave it be.
            if _is_served(socket_path):
                raise AlreadyRunning(
                    f"something is listening on {socket_path} without holding {claim.lock_path};"
                    " not replacing it (stop whatever serves it, or pick another path)"
                )
            os.unlink(socket_path)  # stale: its daemon is gone and nobody answers
        sock = trio.socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # the socket is born 0600, never briefly wider
        try:
            await sock.bind(os.fspath(socket_path))
        finally:
            os.umask(old_umask)
        os.chmod(socket_path, 0o600)
        sock.listen(512)
        claim.remember()
    except BaseException:
        claim.release()
        raise
    return trio.SocketListener(sock), claim
