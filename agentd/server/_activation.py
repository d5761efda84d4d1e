"""Socket activation: the listening socket systemd hands over on fd 3 (sd_listen_fds(3))."""

from __future__ import annotations

import fcntl
import os
import socket as stdlib_socket

import trio

from ._listener import StartupError

__all__ = ["SD_LISTEN_FDS_START", "adopt_activated_listener"]

SD_LISTEN_FDS_START = 3
_LISTEN_VARS = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


def _take_listen_fds() -> int:
    """How many fds were passed to *this* process; the variables are gone afterwards either way.

    They are meant for us alone: a tool run's child that saw them would think
    fd 3 was handed to it. LISTEN_PID guards against having inherited them
    from a parent that was activated itself.
    """
    pid, count = os.environ.get("LISTEN_PID"), os.environ.get("LISTEN_FDS")
    for name in _LISTEN_VARS:
        os.environ.pop(name, None)
    if pid is None or count is None:
        return 0
    try:
        if int(pid) != os.getpid():
            return 0
        n = int(count)
    except ValueError:
        raise StartupError(f"socket activation: LISTEN_PID={pid!r} LISTEN_FDS={count!r} are not numbers") from None
    return max(n, 0)


def adopt_activated_listener() -> trio.SocketListener | None:
    """The listener systemd passed us, or None when not socket-activated.

    The socket file belongs to whoever made it (systemd): we never unlink it,
    so the next connection can start us again.
    """
    count = _take_listen_fds()
    if count == 0:
        return None
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count):
        try:
            flags = fcntl.fcntl(fd, fcntl.F_GETFD)
        except OSError as exc:
            raise StartupError(f"socket activation: LISTEN_FDS={count} but fd {fd} is not open: {exc}") from None
        # Not for the processes a run starts.
        fcntl.fcntl(fd, fcntl.F_SETFD, flags | fcntl.FD_CLOEXEC)
    fd = SD_LISTEN_FDS_START
    try:
        sock = stdlib_socket.socket(fileno=fd)
    except OSError as exc:
        raise StartupError(f"socket activation: fd {fd} is not a socket: {exc}") from None
    try:
        listening = sock.getsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_ACCEPTCONN)
    except OSError:
        listening = 0
    if sock.family != stdlib_socket.AF_UNIX or sock.type != stdlib_socket.SOCK_STREAM or not listening:
        what = f"{stdlib_socket.AddressFamily(sock.family).name} {stdlib_socket.SocketKind(sock.type).name}"
        sock.detach()  # not ours to close: refusing must leave systemd's fd as it was
        raise StartupError(
            f"socket activation: fd {fd} is a {what} socket{'' if listening else ' that is not listening'};"
            " agentd needs a listening AF_UNIX SOCK_STREAM socket (ListenStream= with a path)"
        )
    # More than one would be a unit that is not ours; they stay open, unused, close-on-exec.
    return trio.SocketListener(trio.socket.from_stdlib_socket(sock))
