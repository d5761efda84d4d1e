"""Who may be on the other end of the socket: the checks agentctl makes before it sends a byte, and agentd on each peer.

Another local user who creates the socket's folder first (in a shared /tmp,
say) would otherwise get every prompt and answer. So a client trusts a
socket only when its folder is a real directory owned by us (or root) that
nobody else can write to (a sticky one like /tmp aside, where nobody can
replace a socket that is not theirs), the socket itself is ours, and the
process that accepted the connection runs as us (`SO_PEERCRED`). The last
check is the one that cannot be raced; the others say, before connecting,
what is wrong in words a user can act on.

Imported by agentctl at start-up: `_socket` and `os` only.
"""

from __future__ import annotations

import _socket
import os
import stat
import sys

TYPE_CHECKING = False  # not typing's: agentctl's start-up is measured in milliseconds
if TYPE_CHECKING:
    from typing import Protocol

    class _Socket(Protocol):
        def getsockopt(self, level: int, optname: int, buflen: int, /) -> bytes: ...


__all__ = ["UntrustedSocket", "check_peer", "check_socket_dir", "check_socket_path", "peer_credentials"]


class UntrustedSocket(Exception):
    """The socket, its folder or the process behind it is not ours; the message names what was found."""


def _mode(st: os.stat_result) -> str:
    return f"{stat.S_IMODE(st.st_mode):04o}"


def check_socket_dir(folder: str) -> None:
    """Refuse a folder that is a symlink, or that someone other than us (or root) owns or may write to.

    FileNotFoundError when it does not exist (yet): nothing can be there to talk to.
    """
    st = os.lstat(folder)
    if stat.S_ISLNK(st.st_mode):
        raise UntrustedSocket(f"the socket's folder {folder} is a symlink; agentd's folders must be real directories")
    if not stat.S_ISDIR(st.st_mode):
        raise UntrustedSocket(f"the socket's folder {folder} is not a directory")
    uid = os.getuid()
    if st.st_uid not in (uid, 0):
        raise UntrustedSocket(
            f"the socket's folder {folder} is owned by uid {st.st_uid} (mode {_mode(st)}), not by this user"
            f" (uid {uid}): another user may have created it to receive your prompts; remove it, or use --socket"
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
        raise UntrustedSocket(
            f"the socket's folder {folder} (owner uid {st.st_uid}) is writable by others (mode {_mode(st)}),"
            f" so its socket could be replaced; make it private (chmod 700 {folder})"
        )


def check_socket_path(path: str) -> None:
    """The folder as `check_socket_dir`; then the socket, if one is there, must be a socket of ours.

    FileNotFoundError (an OSError) when the folder or the socket is missing, as a connect would raise.
    """
    check_socket_dir(os.path.dirname(path) or ".")
    st = os.lstat(path)
    if not stat.S_ISSOCK(st.st_mode):
        raise UntrustedSocket(f"{path} is not a socket (mode {stat.filemode(st.st_mode)}, owner uid {st.st_uid})")
    uid = os.getuid()
    if st.st_uid != uid:
        raise UntrustedSocket(
            f"the socket {path} is owned by uid {st.st_uid} (mode {_mode(st)}), not by this user (uid {uid})"
        )


def peer_credentials(sock: _Socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process on the other end of a connected Unix socket, as the kernel recorded them."""
    data = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
    pid, uid, gid = (int.from_bytes(data[i : i + 4], sys.byteorder) for i in (0, 4, 8))
    return pid, uid, gid


def check_peer(sock: _Socket, path: str) -> None:
    """Refuse a daemon that runs as anyone but us: it would read every prompt sent to it.

    Not even root: our daemon serves its own user only, so a root process
    behind our socket is not an agentd meant for us.
    """
    pid, uid, _ = peer_credentials(sock)
    if uid != os.getuid():
        raise UntrustedSocket(
            f"the process listening on {path} (pid {pid}) runs as uid {uid}, not as this user (uid {os.getuid()});"
            " nothing was sent to it"
        )
