"""Memory a large answer leaves behind: the shared msgpack packer keeps none, and freed heap goes back."""

from __future__ import annotations

import platform
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator

import msgpack
import pytest

from agentd._packing import RETAINED_PACKER_BUFFER, packb


@pytest.fixture
def traced() -> Iterator[None]:
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


def held_after(pack: object) -> int:
    """Bytes still allocated after packing (and dropping) a 10 MB answer."""
    before = tracemalloc.get_traced_memory()[0]
    data = pack("z" * 10_000_000)  # type: ignore[operator]
    assert msgpack.unpackb(data) == "z" * 10_000_000
    del data
    return tracemalloc.get_traced_memory()[0] - before


def test_packing_a_large_answer_leaves_nothing_of_it_allocated(traced: None) -> None:
    # What remains is at most a fresh Packer's own buffer (1 MiB in msgpack 1.0), not the answer.
    assert held_after(packb) < 2 * RETAINED_PACKER_BUFFER


def test_a_long_lived_packer_would_keep_it(traced: None) -> None:
    # What packb is for: a Packer's buffer stays at the largest size it packed.
    assert held_after(msgpack.Packer(use_bin_type=True).pack) > 10_000_000


def test_small_objects_pack_as_msgpack_does() -> None:
    for value in [None, 1, "text", b"bytes", {"k": [1, 2.5, "v"]}]:
        assert packb(value) == msgpack.packb(value, use_bin_type=True)


RELEASE_SCRIPT = """
from agentd._memory import release_freed_memory
def rss():
    return int([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmRSS')][0])
blocks = [bytes(2000) + bytes([i % 256]) for i in range(100_000)]
survivors = blocks[::200]  # a few live blocks pin the heap's top, as a long-lived object does
del blocks
freed = rss()
release_freed_memory()
print(freed, rss())
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_release_freed_memory_gives_a_fragmented_heap_back() -> None:
    # In a process of its own: the test runner's heap is not ours to measure.
    out = subprocess.run([sys.executable, "-c", RELEASE_SCRIPT], capture_output=True, check=True, timeout=60)
    freed_kb, released_kb = map(int, out.stdout.split())
    assert freed_kb > 150_000  # glibc kept the ~200 MB the blocks took...
    assert released_kb < freed_kb / 2  # ...until asked to give it back
