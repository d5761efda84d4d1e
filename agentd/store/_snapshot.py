"""A file of a workspace at one moment, as the store keeps it, and reading one without following a symlink out.

The store keeps runs' files before and after their writes (`agentd.changes`
records them), and at start it takes the file after a write a crash cut
short (`Store._recover_sync`): both read through here.

Every path is relative to the workspace root, "/"-separated, and is walked
one component at a time from a descriptor of the root, each opened with
O_NOFOLLOW: a symlink swapped in anywhere along the way makes the call fail
(ELOOP) instead of reaching outside. Blocking: callers run these on a worker
thread.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat

import attrs

__all__ = [
    "ABSENT",
    "KEEP_FILE_BYTES",
    "KEEP_RUN_BYTES",
    "FileSnapshot",
    "Unreadable",
    "check_relative",
    "open_dir",
    "read_snapshot",
]

# Bytes of one file's content kept, before and after each, and for one run in
# all (agentd.changes.ChangeLimits' defaults; the recovery keeps within them too).
KEEP_FILE_BYTES = 10 * 1024 * 1024
KEEP_RUN_BYTES = 100 * 1024 * 1024

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused right after, by its type).
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CHUNK = 1 << 20


@attrs.frozen
class FileSnapshot:
    """A file at one moment, as the store keeps it (see `agentd.changes`)."""

    # None: there was no file.
    size: int | None
    sha256: str | None = None
    mode: int | None = None
    # None for no file, or for one too large to keep (its size and hash still say what it was).
    content: bytes | None = None

    @property
    def exists(self) -> bool:
        return self.size is not None

    @property
    def kept(self) -> bool:
        return self.size is None or self.content is not None


ABSENT = FileSnapshot(size=None)


class Unreadable(Exception):
    """The path names something that is not a regular file we may read; the message says what it is."""


def check_relative(path: str) -> list[str]:
    """The components of a workspace-relative path; ValueError if it could point anywhere else."""
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\x00" in path:
        raise ValueError("is not a plain path relative to the workspace")
    return parts


def open_dir(root: str, parts: list[str], *, create: bool = False) -> int:
    """A descriptor of the directory `parts` under `root`, walked without following symlinks.

    Stricter than the tools' walk (`agentd.tools._fs`), which follows symlinks
    that stay inside the workspace: a recorded path is already resolved, so a
    symlink on it now was put there since, and reverting through it is refused.
    """
    fd = os.open(root, _DIR_FLAGS)
    try:
        for part in parts:
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o777, dir_fd=fd)
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_snapshot(root: str, path: str, keep_up_to: int) -> FileSnapshot:
    """The file at `path` now: its size, hash and mode, and its bytes if there are at most `keep_up_to`.

    ABSENT when there is no file. Unreadable for a directory, a symlink or
    anything else that is not a regular file; OSError when the system refuses.
    """
    parts = check_relative(path)
    try:
        dir_fd = open_dir(root, parts[:-1])
    except (FileNotFoundError, NotADirectoryError):
        return ABSENT
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Unreadable("a directory on the way to it is a symbolic link") from None
        raise
    try:
        fd = os.open(parts[-1], _READ_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        return ABSENT
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Unreadable("is a symbolic link") from None
        raise
    finally:
        os.close(dir_fd)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
            raise Unreadable(f"is {kind}")
        digest = hashlib.sha256()
        chunks: list[bytes] | None = []
        size = 0
        while chunk := os.read(fd, _CHUNK):
            digest.update(chunk)
            size += len(chunk)
            if chunks is not None:
                if size > keep_up_to:
                    chunks = None  # too large to keep: its size and hash still tell it apart
                else:
                    chunks.append(chunk)
        content = b"".join(chunks) if chunks is not None else None
        return FileSnapshot(size=size, sha256=digest.hexdigest(), mode=stat.S_IMODE(info.st_mode), content=content)
    finally:
        os.close(fd)
