"""The allocator gives a large block back as soon as it is freed (agentd._memory), measured in a process of its own."""

from __future__ import annotations

import subprocess
import sys

import pytest

from agentd._memory import _mallopt

# Frees one large block (which, left alone, raises glibc's bar for mapping a
# block on its own to that size), then allocates, fills and frees a second:
# prints how much of the second stayed resident, in KiB.
_SCRIPT = """
import sys
from agentd._memory import limit_retained_memory

def rss_kb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))

if sys.argv[1] == "limited":
    assert limit_retained_memory()
first = b"a" * (20 << 20)
del first
before = rss_kb()
second = b"b" * (10 << 20)
del second
print(rss_kb() - before)
"""


def kept_kb(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", _SCRIPT, mode], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


@pytest.mark.skipif(_mallopt is None, reason="not glibc: nothing to set")
def test_a_large_block_is_given_back_when_freed_after_a_larger_one() -> None:
    assert kept_kb("limited") < 2048
    # What the limit prevents: left to itself, glibc keeps the second block's 10 MiB.
    assert kept_kb("default") > 8192
