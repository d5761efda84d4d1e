"""The one place state lives: SQLite (see `_sqlite`)."""

from ._sqlite import (
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
from ._terminal_log import TerminalLog, TerminalRecord

__all__ = [
    "EventReplay",
    "GAP_LOST",
    "GAP_TOO_OLD",
    "INTERRUPTED",
    "LoggedEvent",
    "RunRecord",
    "SessionRecord",
    "Store",
    "StoreError",
    "TerminalLog",
    "TerminalRecord",
    "new_id",
]
