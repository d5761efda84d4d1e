"""msgpack packing for the daemon's long-lived encoders, without keeping a large answer's memory.

A `msgpack.Packer` grows its buffer to the largest object it packed and keeps
it for good: one 10 MB answer would pin 10 MB per packer for the daemon's life.
A new Packer per call costs more than the packing of a small event, so one is
shared and replaced, with its buffer, after it packed something large.
"""

from __future__ import annotations

from typing import Final

import msgpack

__all__ = ["RETAINED_PACKER_BUFFER", "packb"]

# Larger than any ordinary event or row; a buffer grown past it is let go.
RETAINED_PACKER_BUFFER: Final = 1 << 20

_packer = msgpack.Packer(use_bin_type=True)


def packb(obj: object) -> bytes:
    """`obj` as msgpack (str as str, bytes as bin)."""
    global _packer
    data: bytes = _packer.pack(obj)
    if len(data) > RETAINED_PACKER_BUFFER:
        _packer = msgpack.Packer(use_bin_type=True)
    return data
