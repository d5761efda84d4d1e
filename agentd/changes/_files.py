"""Restoring files of a workspace without ever following a symlink out of it.

Reading one is the store's (`agentd.store.read_snapshot`, which the store's
recovery uses too), and walks the same way: every path here is relative to
the workspace root, "/"-separated, and is walked one component at a time
from a descriptor of the root, each opened with O_NOFOLLOW: a symlink
swapped in anywhere along the way makes the call fail (ELOOP) instead of
reaching outside. Blocking: callers run these on a worker thread.
"""

from __future__ import annotations

import contextlib
import os
import stat

from agentd.atomic_write import replace_in_dir
from agentd.store import ABSENT, Unreadable, check_relative, open_dir, read_snapshot

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

# As `open_dir` opens each directory on the way: a symlink is refused, not followed.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


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


def missing_top_dir(root: str, path: str) -> str | None:
    """The top-most directory of `path` that does not exist yet (a write would create it), if any."""
    parts = check_relative(path)
    for depth in range(1, len(parts)):
        try:
            os.close(open_dir(root, parts[:depth]))
        except FileNotFoundError:
            return "/".join(parts[:depth])
        except OSError:
            return None  # not a directory we may walk: the write will say what is wrong
    return None


def write_file(root: str, path: str, content: bytes, mode: int | None) -> None:
    """Put `content` at `path`, whole or not at all: written beside it, then renamed over it.

    Missing directories on the way are created. `mode` None keeps the mode of
    the file there now (else 0o644 under the umask).
    """
    parts = check_relative(path)
    dir_fd = open_dir(root, parts[:-1], create=True)
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
        dir_fd = open_dir(root, parts[:-1])
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
        parent = open_dir(root, parts[:-1])
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
