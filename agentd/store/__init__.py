"""The one place state lives: SQLite (see `_sqlite`)."""

from ._sqlite import INTERRUPTED, LoggedEvent, RunRecord, SessionRecord, Store, StoreError, new_id

__all__ = ["INTERRUPTED", "LoggedEvent", "RunRecord", "SessionRecord", "Store", "StoreError", "new_id"]
