"""The one place state lives: SQLite (see `_sqlite`)."""

from ._sqlite import (
    GAP_LOST,
    GAP_TOO_OLD,
    INTERRUPTED,
    SCHEMA_VERSION,
    DatabaseDamaged,
    EventReplay,
    FileChangeRecord,
    FileSnapshot,
    LoggedEvent,
    NotOurDatabase,
    RunRecord,
    SessionRecord,
    Store,
    StoreError,
    new_id,
)
from ._terminal_log import TerminalLog, TerminalRecord

__all__ = [
    "DatabaseDamaged",
    "EventReplay",
    "FileChangeRecord",
    "FileSnapshot",
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
    "TerminalLog",
    "TerminalRecord",
    "new_id",
]
