"""Replacing a file in one rename, for the tools' writes and for run.revert alike.

A reader sees the old file or the new one, never half of either: the bytes go
to a temporary name beside the file (in the same directory, held open by the
caller, so no path is resolved again), reach the disk, and are renamed over it.
"""

from __future__ import annotations

import contextlib
import os
import secrets

__all__ = ["replace_in_dir"]

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def replace_in_dir(dir_fd: int, name: str, data: bytes, mode: int | None) -> None:
    """Put `data` at `name` in the directory `dir_fd`, with permission bits `mode` (None: 0o666 under the umask).

    OSError as the system gave it; the temporary file is gone either way.
    """
    # Under NAME_MAX (255) whatever the file's name is.
    temporary = f".{name[:200]}.{secrets.token_hex(6)}.tmp"
    # 0o600 until fchmod: nobody reads the bytes through a mode wider than they will have.
    fd = os.open(temporary, _CREATE, 0o666 if mode is None else 0o600, dir_fd=dir_fd)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if mode is not None:
                os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary, dir_fd=dir_fd)
        raise
