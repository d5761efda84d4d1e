"""Giving freed heap back to the system at a quiet moment.

glibc's malloc keeps what Python frees: the arena a 10 MB answer grew stays
resident after every object in it is gone, in the main arena and in the
arena of each thread that touched it (the store's). `malloc_trim(0)` returns
the free pages of every arena. It walks the heap, a few milliseconds for a
large one, so it is called when a workspace has closed, not per run.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable

__all__ = ["release_freed_memory"]

log = logging.getLogger(__name__)


def _find_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_malloc_trim = _find_malloc_trim()


def release_freed_memory() -> None:
    """Return the allocator's free pages to the system, where the C library can."""
    if _malloc_trim is not None:
        _malloc_trim(0)
