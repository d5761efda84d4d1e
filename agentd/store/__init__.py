"""The one place state lives: SQLite (see `_sqlite`)."""

from ._sqlite import (
    SCHEMA_VERSION,
    DatabaseDamaged,
    NotOurDatabase,
    GAP_LOST,
    GAP_TOO_OLD,
    INTERRUPTED,
    EventReplay,
    LoggedEvent,
    RunRecord,
    SessionRecord,
    Store,
    StoreError,
    new_id,
)

__all__ = [
    "DatabaseDamaged",
    "EventReplay",
    "GAP_LOST",
    "GAP_TOO_OLD",
    "INTERRUPTED",
    "LoggedEvent",
    "NotOurDatabase",
    "RunRecord",
    "SCHEMA_VERSION",
    "SessionRecord",
    "Store",
    "StoreError",
    "new_id",
]
