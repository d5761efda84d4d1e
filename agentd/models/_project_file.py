"""A workspace's own MCP servers: `.agentd/config.toml` in its root, and the trust that lets them start.

A project file must not start programs on its own: its servers start only
once the user trusted the file's present content (`mcp.trust`, `agentctl mcp
trust`); a changed file needs trusting again. What the file may say is the
`[mcp.NAME]` grammar of config.toml, read by the same parser
(`_config_file`); nothing else of the user's configuration. It lives with
the configuration it is read as; the MCP servers it names are `agentd.mcp`'s.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat

import attrs
import trio

from agentd.mcp import McpServerConfig

from ._config import ConfigError, ConfigProblem
from ._config_file import project_mcp_servers

__all__ = ["MAX_PROJECT_CONFIG_BYTES", "PROJECT_CONFIG", "ProjectConfig", "read_project_config"]

# Relative to the workspace root.
PROJECT_CONFIG = ".agentd/config.toml"
# A configuration is a few lines: anything larger is not one, and is not read into memory.
MAX_PROJECT_CONFIG_BYTES = 1024 * 1024


@attrs.frozen
class ProjectConfig:
    # The file's absolute path.
    path: str
    # sha256 of its bytes, hex: what trust is given to. Empty when the file could not be read.
    digest: str
    # Source "workspace"; empty when it has mistakes.
    servers: tuple[McpServerConfig, ...] = ()
    # `path:LINE: message` each.
    mistakes: tuple[str, ...] = ()

    def is_trusted(self, trusted_digest: str | None) -> bool:
        """Whether this content is what the user trusted: `trusted_digest` is the store's for `path`."""
        return bool(self.digest) and trusted_digest == self.digest


async def read_project_config(root: str) -> ProjectConfig | None:
    """The workspace's .agentd/config.toml, read (in a thread) and checked; None when it has none."""
    return await trio.to_thread.run_sync(_read, root)


def _read(root: str) -> ProjectConfig | None:
    path = os.path.join(root, PROJECT_CONFIG)
    try:
        data = _read_inside(root, path)
    except FileNotFoundError:
        return None
    except _Refused as exc:
        return ProjectConfig(path, "", mistakes=tuple(ConfigError([ConfigProblem(None, str(exc))], path).lines()))
    digest = hashlib.sha256(data).hexdigest()
    try:
        servers = project_mcp_servers(data, path)
    except ConfigError as exc:
        return ProjectConfig(path, digest, mistakes=tuple(exc.lines()))
    return ProjectConfig(path, digest, servers)


class _Refused(Exception):
    """Why the file is not read, for the user."""


def _read_inside(root: str, path: str) -> bytes:
    """The file's bytes, if it is a regular file of at most the limit inside `root`; FileNotFoundError if none."""
    os.lstat(path)  # FileNotFoundError: no file (nor a symlink) there
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    if os.path.commonpath([real_root, real]) != real_root:
        # The project decides what the link points at: a file of the user's elsewhere is not its to offer.
        raise _Refused(f"is a symlink that leads outside the workspace (to {real}); it is not read")
    try:
        # O_NONBLOCK: a FIFO put there must not hang the read; O_NOFOLLOW: the path was resolved above.
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise  # a symlink to nothing: no file
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _Refused("changed while it was read (a symlink appeared); it is not read") from None
        raise _Refused(f"cannot be read: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _Refused(f"is not a regular file ({_kind(st.st_mode)}); it is not read")
        if st.st_size > MAX_PROJECT_CONFIG_BYTES:
            raise _Refused(f"is larger than {MAX_PROJECT_CONFIG_BYTES // 1024 // 1024} MiB ({st.st_size} bytes)")
        data = _read_at_most(fd, MAX_PROJECT_CONFIG_BYTES + 1)
    except OSError as exc:
        raise _Refused(f"cannot be read: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_PROJECT_CONFIG_BYTES:  # it grew while being read
        raise _Refused(f"is larger than {MAX_PROJECT_CONFIG_BYTES // 1024 // 1024} MiB")
    return data


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit and (chunk := os.read(fd, limit - size)):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a file"
