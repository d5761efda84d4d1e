"""The one place state lives (see `_memory`)."""

from ._memory import RunRecord, SessionRecord, Store, new_id

__all__ = ["RunRecord", "SessionRecord", "Store", "new_id"]
