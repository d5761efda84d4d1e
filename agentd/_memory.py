"""Giving freed heap back to the system: large blocks at once, the rest at a quiet moment.

glibc's malloc keeps what Python frees: the arena a 10 MB answer grew stays
resident after every object in it is gone, in the main arena and in the
arena of each thread that touched it (the store's). Two things hand it back:

- `limit_retained_memory`, once at start: blocks of 128 KiB and more are
  mapped on their own and unmapped when freed. glibc starts there too, but
  raises the bar to the size of each large block freed (up to 32 MiB), so
  after one 10 MB answer the next is carved from an arena, and a thread's
  arena does not give back the free space at its end (`malloc_trim` does not
  reach it). Fixing the bar keeps it where it starts.
- `release_freed_memory`: `malloc_trim(0)` returns the free pages inside
  every arena. It walks the heap, a few milliseconds for a large one, so it
  is called when a workspace has closed, not per run.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable

__all__ = ["limit_retained_memory", "release_freed_memory"]

log = logging.getLogger(__name__)


# mallopt's parameter for the size from which a block is mapped on its own (malloc.h).
_M_MMAP_THRESHOLD = -3
# glibc's own starting value, kept from then on.
_MMAP_THRESHOLD = 128 * 1024


def _glibc_function(name: str, argtypes: list[type], restype: type) -> Callable[..., int] | None:
    library = ctypes.util.find_library("c")
    if library is None:
        return None
    try:
        function = getattr(ctypes.CDLL(library), name)
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune or trim
        return None
    function.argtypes = argtypes
    function.restype = restype
    typed: Callable[..., int] = function
    return typed


_malloc_trim = _glibc_function("malloc_trim", [ctypes.c_size_t], ctypes.c_int)
_mallopt = _glibc_function("mallopt", [ctypes.c_int, ctypes.c_int], ctypes.c_int)


def limit_retained_memory() -> bool:
    """Map large blocks on their own from now on, so freeing one gives it back; False where that cannot be set."""
    return _mallopt is not None and _mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) == 1


def release_freed_memory() -> None:
    """Return the allocator's free pages to the system, where the C library can."""
    if _malloc_trim is not None:
        _malloc_trim(0)
