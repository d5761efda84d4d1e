"""What the store raises when the database cannot be used, and the advice its messages carry.

Every message names the database file and says what to do: it is read by a
person, at the daemon's start or in an error reply.
"""

from __future__ import annotations

import errno
import sqlite3

from agentd.errors import Unavailable

__all__ = ["DatabaseDamaged", "NotOurDatabase", "StoreError", "StoreRefused", "advice", "damaged", "is_damage"]


class StoreError(Unavailable):
    """The store cannot be used; the message names the file and what to do."""


class StoreRefused(StoreError):
    """SQLite refused a statement for now: another process holds the database, the disk is full, an I/O error."""


class DatabaseDamaged(StoreError):
    """The database file is damaged: its pages, a table or a row are not what agentd wrote.

    Raised at start and by any store call that meets the damage; nothing the
    daemon does repairs it, so the advice is to move the file aside.
    """


class NotOurDatabase(StoreError):
    """The file is another application's SQLite database: agentd leaves it untouched."""


def _errorname(exc: BaseException) -> str:
    return str(getattr(exc, "sqlite_errorname", "") or "")


def is_damage(exc: BaseException) -> bool:
    """Whether an SQLite error says the file is damaged, rather than busy, full or unreadable."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    name = _errorname(exc)
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        return True
    detail = str(exc)
    # A table or column agentd created that is no longer there, or text that
    # is not the UTF-8 agentd wrote: only a damaged file or another program's
    # hand does that.
    return any(sign in detail for sign in ("malformed", "no such table", "no such column", "Could not decode"))


def damaged(path: str, detail: str) -> str:
    return (
        f"the database {path} is damaged: {detail}; stop agentd (agentctl stop), move the file aside"
        f" (mv {path} {path}.broken) and start again: agentd then starts with an empty database"
        f" (what the old one still holds can be read with: sqlite3 {path}.broken .recover)"
    )


def advice(path: str, exc: BaseException) -> str:
    """The one line that says why the database at `path` cannot be opened, and what to do."""
    detail = str(exc) or type(exc).__name__
    name = _errorname(exc)
    if is_damage(exc):
        action = (
            f"it is damaged, or not a database: move it aside (mv {path} {path}.broken) and start again"
            " (agentd then starts with an empty database)"
        )
    elif name.startswith("SQLITE_FULL") or (isinstance(exc, OSError) and exc.errno == errno.ENOSPC):
        action = "free some disk space, or pass --data-dir on another disk"
    elif (
        isinstance(exc, PermissionError)
        or name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH"))
        or "readonly" in detail
        or "unable to open" in detail
    ):
        action = "check that this user can read and write it and its directory, or pass --data-dir"
    elif name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        action = "another program holds it locked (an open sqlite3 shell?): close that, then start again"
    elif name.startswith("SQLITE_IOERR") or isinstance(exc, OSError):
        action = "the disk reported an error reading or writing it: check the disk, or pass --data-dir"
    elif "newer than" in detail:
        action = "run the newer agentd that wrote it, or pass --data-dir"
    else:
        action = f"if it is damaged, move it aside (mv {path} {path}.broken) and start again"
    return f"cannot open the database {path}: {detail}; {action}"
