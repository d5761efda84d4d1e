"""What every driver returns: what it counted, and what it found wrong (each a sentence saying how to reproduce it)."""

from __future__ import annotations

import attrs

__all__ = ["Stats"]


@attrs.frozen
class Stats:
    counts: dict[str, int]
    violations: list[str]
