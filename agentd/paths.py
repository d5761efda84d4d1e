"""Where agentd's files live; agentd and agentctl resolve them here, the same way.

Standard library only: `agentctl` imports this at start-up.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = [
    "default_socket_path",
    "ensure_private_dir",
    "managed_socket_dirs",
    "resolve_socket_path",
    "state_dir",
]


def default_socket_path(environ: os._Environ[str] | dict[str, str] | None = None) -> Path:
    """`$AGENTD_SOCKET`, else `$XDG_RUNTIME_DIR/agentd/agentd.sock`, else `/tmp/agentd-$UID/agentd.sock`."""
    env = os.environ if environ is None else environ
    explicit = env.get("AGENTD_SOCKET")
    if explicit:
        return Path(explicit)
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "agentd" / "agentd.sock"
    return Path(f"/tmp/agentd-{os.getuid()}") / "agentd.sock"


def managed_socket_dirs(environ: os._Environ[str] | dict[str, str] | None = None) -> set[Path]:
    """The directories agentd owns outright, and so keeps at mode 0700."""
    env = os.environ if environ is None else environ
    dirs = {Path(f"/tmp/agentd-{os.getuid()}")}
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime:
        dirs.add(Path(runtime) / "agentd")
    return dirs


def resolve_socket_path(flag: str | None) -> Path:
    """`--socket PATH` wins over everything the environment says."""
    if flag:
        return Path(flag)
    return default_socket_path()


def state_dir(environ: os._Environ[str] | dict[str, str] | None = None) -> Path:
    """`$XDG_STATE_HOME/agentd`, else `~/.local/state/agentd`: the daemon's log and start lock."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "agentd"


def ensure_private_dir(path: Path, *, owned: bool = True) -> None:
    """Create `path` (and parents) 0700; when agentd owns it (`owned`), also fix its mode.

    The socket's directory is the socket's real access control: a 0600 socket in a
    directory someone else can write to could be swapped under us. A directory the
    user named with `--socket` may be shared (say `/tmp`), so its mode is theirs.
    """
    existed = path.is_dir()
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if existed and not owned:
        return
    st = path.stat()
    if st.st_uid != os.getuid():
        raise PermissionError(f"{path} is owned by uid {st.st_uid}, not by this user")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)
