"""Where agentd's files live; agentd and agentctl resolve them here, the same way.

Plain strings and `os.path`, not pathlib: `agentctl` imports this at start-up,
and pathlib (with the re and urllib it pulls in) would cost more than the
rest of a command's imports together.
"""

from __future__ import annotations

import os
import stat

__all__ = [
    "data_dir",
    "default_socket_path",
    "ensure_private_dir",
    "managed_socket_dirs",
    "resolve_socket_path",
    "socket_path_problem",
    "state_dir",
    "sun_path_limit",
]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping


def _env(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def default_socket_path(environ: Mapping[str, str] | None = None) -> str:
    """`$AGENTD_SOCKET`, else `$XDG_RUNTIME_DIR/agentd/agentd.sock`, else `/tmp/agentd-$UID/agentd.sock`."""
    env = _env(environ)
    explicit = env.get("AGENTD_SOCKET")
    if explicit:
        return explicit
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "agentd", "agentd.sock")
    return f"/tmp/agentd-{os.getuid()}/agentd.sock"


def managed_socket_dirs(environ: Mapping[str, str] | None = None) -> set[str]:
    """The directories agentd owns outright, and so keeps at mode 0700."""
    env = _env(environ)
    dirs = {f"/tmp/agentd-{os.getuid()}"}
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime:
        dirs.add(os.path.join(runtime, "agentd"))
    return dirs


def resolve_socket_path(flag: str | None) -> str:
    """`--socket PATH` wins over everything the environment says."""
    return flag if flag else default_socket_path()


def state_dir(environ: Mapping[str, str] | None = None) -> str:
    """`$XDG_STATE_HOME/agentd`, else `~/.local/state/agentd`: the daemon's log and start lock."""
    env = _env(environ)
    base = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "agentd")


def data_dir(environ: Mapping[str, str] | None = None) -> str:
    """`$XDG_DATA_HOME/agentd`, else `~/.local/share/agentd`: the database."""
    env = _env(environ)
    base = env.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "agentd")


def ensure_private_dir(path: str, *, owned: bool = True) -> None:
    """Create `path` (and parents) 0700; when agentd owns it (`owned`), also fix its mode.

    The socket's directory is the socket's real access control: a 0600 socket in a
    directory someone else can write to could be swapped under us. A directory the
    user named with `--socket` may be shared (say `/tmp`), so its mode is theirs.

    A symlink in its place is refused, never followed: chmod'ing it would make
    private whatever it points at, and put our files there (PermissionError).
    """
    try:
        existed = stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        existed = False
    os.makedirs(path, mode=0o700, exist_ok=True)
    if existed and not owned:
        return
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if os.path.islink(path):
            raise PermissionError(f"{path} is a symlink; agentd's folders must be real directories") from None
        raise exc from None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.getuid():
            raise PermissionError(f"{path} is owned by uid {st.st_uid}, not by this user")
        if stat.S_IMODE(st.st_mode) != 0o700:
            os.fchmod(fd, 0o700)
    finally:
        os.close(fd)


# A path no one can create a file under (/dev/null is not a directory), so
# probing the limit with bind() makes nothing, wherever it runs.
_PROBE_PREFIX = b"/dev/null/"


def open_private(path: str | os.PathLike[str], flags: int = os.O_WRONLY | os.O_APPEND) -> int:
    """A descriptor of the file at `path`, made 0600 if new; the one way agentd opens a file of its own.

    Logs, locks and the database hold run errors and conversations: readable by
    their owner only from the first byte, never opened through a symlink, and
    one an older version made wider is narrowed.
    """
    fd = os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _fits_sun_path(length: int) -> bool:
    """Whether a socket path of `length` bytes fits this platform's `sun_path`, NUL included.

    The limit is a C struct's size, which Python does not expose; its socket
    module checks a path against it before the system call, so one bind()
    that fails with ENOTDIR rather than "path too long" says it fits.
    """
    import socket  # only when a socket path is checked

    probe = _PROBE_PREFIX + b"x" * max(0, length - len(_PROBE_PREFIX))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(probe)
    except OSError as exc:
        return exc.errno is not None  # "AF_UNIX path too long" carries no errno
    finally:
        sock.close()
    return True  # not reached on a sane system: nothing can be bound under /dev/null


def sun_path_limit() -> int:
    """The longest socket path this platform takes, in bytes, without the NUL (107 on Linux)."""
    low, high = len(_PROBE_PREFIX), 1 << 16
    while low < high:  # the largest length that fits
        mid = (low + high + 1) // 2
        if _fits_sun_path(mid):
            low = mid
        else:
            high = mid - 1
    return low


def socket_path_problem(path: str) -> str | None:
    """Why `path` cannot be a Unix socket here, or None when it can.

    Checked before anything is created for it: a daemon that made the
    folder and the lock before bind() refused the path would leave them behind.
    """
    length = len(os.fsencode(path))
    if _fits_sun_path(length):
        return None
    return (
        f"socket path is {length} bytes, longer than the {sun_path_limit()} bytes a Unix socket path"
        f" may have on this system: {path}; choose a shorter one with $AGENTD_SOCKET or --socket"
    )
