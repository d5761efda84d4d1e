"""Reading and restoring files of a workspace without ever following a symlink out of it.

Every path here is relative to the workspace root, "/"-separated, and is
walked one component at a time from a descriptor of the root, each opened
with O_NOFOLLOW: a symlink swapped in anywhere along the way makes the call
fail (ELOOP) instead of reaching outside. Blocking: callers run these on a
worker thread.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat

from agentd.atomic_write import replace_in_dir
from agentd.store import FileSnapshot

__all__ = [
    "ABSENT",
    "Unreadable",
    "check_relative",
    "missing_top_dir",
    "read_snapshot",
    "remove_empty_dirs",
    "remove_file",
    "resolve_in_root",
    "write_file",
]

ABSENT = FileSnapshot(size=None)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused right after, by its type).
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CHUNK = 1 << 20


class Unreadable(Exception):
    """The path names something that is not a regular file we may read; the message says what it is."""


def check_relative(path: str) -> list[str]:
    """The components of a workspace-relative path; ValueError if it could point anywhere else."""
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\x00" in path:
        raise ValueError("is not a plain path relative to the workspace")
    return parts


def resolve_in_root(root: str, path: str) -> str:
    """`path` (relative to `root`, or absolute inside it) with the symlinks inside the workspace followed.

    The file a write reaches is what is recorded, whichever name the tool used
    for it. ValueError if it resolves outside `root`.
    """
    resolved = os.path.realpath(os.path.join(root, path))
    relative = os.path.relpath(resolved, root)
    if relative == "." or relative == ".." or relative.startswith("../") or os.path.isabs(relative):
        raise ValueError("resolves outside the workspace")
    check_relative(relative)
    return relative


def _open_dir(root: str, parts: list[str], *, create: bool = False) -> int:
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


def missing_top_dir(root: str, path: str) -> str | None:
    """The top-most directory of `path` that does not exist yet (a write would create it), if any."""
    parts = check_relative(path)
    for depth in range(1, len(parts)):
        try:
            os.close(_open_dir(root, parts[:depth]))
        except FileNotFoundError:
            return "/".join(parts[:depth])
        except OSError:
            return None  # not a directory we may walk: the write will say what is wrong
    return None


def read_snapshot(root: str, path: str, keep_up_to: int) -> FileSnapshot:
    """The file at `path` now: its size, hash and mode, and its bytes if there are at most `keep_up_to`.

    ABSENT when there is no file. Unreadable for a directory, a symlink or
    anything else that is not a regular file; OSError when the system refuses.
    """
    parts = check_relative(path)
    try:
        dir_fd = _open_dir(root, parts[:-1])
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


def write_file(root: str, path: str, content: bytes, mode: int | None) -> None:
    """Put `content` at `path`, whole or not at all: written beside it, then renamed over it.

    Missing directories on the way are created. `mode` None keeps the mode of
    the file there now (else 0o644 under the umask).
    """
    parts = check_relative(path)
    dir_fd = _open_dir(root, parts[:-1], create=True)
    try:
        if mode is None:
            try:
                mode = stat.S_IMODE(os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False).st_mode)
            except FileNotFoundError:
                mode = 0o644
        replace_in_dir(dir_fd, parts[-1], content, mode)
    finally:
        os.close(dir_fd)


def remove_file(root: str, path: str) -> None:
    """Remove the file at `path`; nothing to do if it is already gone."""
    parts = check_relative(path)
    try:
        dir_fd = _open_dir(root, parts[:-1])
    except (FileNotFoundError, NotADirectoryError):
        return
    try:
        os.unlink(parts[-1], dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    finally:
        os.close(dir_fd)


def remove_empty_dirs(root: str, path: str) -> None:
    """Remove the directory `path` and those under it, as far as they are empty; the rest stays."""
    parts = check_relative(path)
    try:
        parent = _open_dir(root, parts[:-1])
    except OSError:
        return
    try:
        try:
            top = os.open(parts[-1], _DIR_FLAGS, dir_fd=parent)
        except OSError:
            return
        try:
            for _dirpath, dirnames, _files, dirfd in os.fwalk(".", topdown=False, dir_fd=top, follow_symlinks=False):
                for name in dirnames:
                    with contextlib.suppress(OSError):  # not empty (or not a directory): kept
                        os.rmdir(name, dir_fd=dirfd)
        finally:
            os.close(top)
        with contextlib.suppress(OSError):
            os.rmdir(parts[-1], dir_fd=parent)
    finally:
        os.close(parent)
