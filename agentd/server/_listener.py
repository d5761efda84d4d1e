"""The daemon's Unix socket: one daemon per path, a private directory, a 0600 socket."""

from __future__ import annotations

import errno
import fcntl
import os
import socket as stdlib_socket
import stat
from pathlib import Path

import trio

from agentd.paths import ensure_private_dir, managed_socket_dirs
from agentd.trust import UntrustedSocket, check_socket_dir

__all__ = ["SocketClaim", "StartupError", "bind_listener"]


class StartupError(Exception):
    """The daemon cannot start; the message says why and what to do."""


class SocketClaim:
    """The daemon's hold on its socket path: a lock file held for the daemon's life.

    The lock, not the socket file, decides who owns the path, so a stale socket
    left by a crash is replaced safely and two daemons never share one path.
    """

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self._lock_path = socket_path.with_name(socket_path.name + ".lock")
        self._lock_fd: int | None = None
        self._inode: int | None = None

    def acquire(self) -> None:
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StartupError(f"another agentd is already running on {self.socket_path}") from None
            raise
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


async def bind_listener(socket_path: Path) -> tuple[trio.SocketListener, SocketClaim]:
    if len(os.fsencode(socket_path)) >= 108:
        raise StartupError(f"socket path is too long for a Unix socket (max 107 bytes): {socket_path}")
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
            os.unlink(socket_path)  # stale: we hold the lock, so no daemon owns it
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
