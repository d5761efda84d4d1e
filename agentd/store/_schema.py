"""The database's schema, its migrations, and the mark that says a file is agentd's.

A file is agentd's when its header carries `APPLICATION_ID` (`PRAGMA
application_id`). Databases from before the mark (schema versions 1 and 2)
are recognised by their version and tables, and marked when they migrate.
Anything else (another program's SQLite file) is refused before a byte of it
is changed.
"""

from __future__ import annotations

import sqlite3

from ._errors import DatabaseDamaged, NotOurDatabase, damaged

__all__ = ["APPLICATION_ID", "SCHEMA_VERSION", "TABLES", "check_ours", "check_tables", "migrate"]

SCHEMA_VERSION = 5
# "agtd": in the database header, so `file` and other tools can tell it too.
APPLICATION_ID = 0x61677464
TABLES = frozenset({"workspaces", "sessions", "messages", "runs", "events", "file_changes", "mcp_trust"})
# The schema version that added a table: an older database lacks it until it migrates.
_ADDED_IN = {"file_changes": 4, "mcp_trust": 5}
# SQLite's own, which any database may hold.
_INTERNAL_TABLE_PREFIX = "sqlite_"

_SCHEMA = """
CREATE TABLE workspaces (
    id TEXT PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    -- Event seqs up to here may have been handed out: a restart continues above it.
    seq_reserved INTEGER NOT NULL DEFAULT 0,
    -- Log entries up to here were pruned: `since` below it is too old to replay.
    pruned_through INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    title TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    message_count INTEGER NOT NULL DEFAULT 0,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX sessions_by_workspace ON sessions(workspace_id, updated_at);
CREATE TABLE messages (
    id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    role TEXT NOT NULL,
    text TEXT NOT NULL,
    -- Structured parts (tool calls, tool results) as JSON, empty until tools exist.
    parts TEXT NOT NULL DEFAULT '[]',
    run_id TEXT,
    created_at REAL NOT NULL,
    finish_reason TEXT
);
CREATE INDEX messages_by_session ON messages(session_id, position);
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    model TEXT NOT NULL,
    prompt TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done')),
    -- Place in its session's queue while queued.
    queue_position INTEGER,
    error TEXT,
    cancelled INTEGER NOT NULL DEFAULT 0,
    text TEXT,
    message_id TEXT,
    -- The run's RunComplete, exactly as published, once it has one.
    complete TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL
);
CREATE INDEX runs_unfinished ON runs(state) WHERE state != 'done';
CREATE TABLE events (
    workspace_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (workspace_id, seq)
) WITHOUT ROWID;
"""

# Version 2: knowing when the event log may have lost events.
_SCHEMA_2 = """
-- Logged events up to here may be missing (a daemon that stopped without
-- closing the workspace, or a log write that kept failing): a replay from
-- below it starts with a gap.
ALTER TABLE workspaces ADD COLUMN lost_through INTEGER NOT NULL DEFAULT 0;
-- 1 while a daemon serves the workspace: still 1 at the next open means that
-- daemon never wrote its last events.
ALTER TABLE workspaces ADD COLUMN live INTEGER NOT NULL DEFAULT 0
"""

# Version 3: each text held once, in its message, and a run's messages found by index.
# (A migration must stay quick on a large database: it runs before the daemon
# is ready, and agentctl waits 15 s for that. So old rows are not rewritten,
# but for one cheap UPDATE.)
_SCHEMA_3 = f"""
-- Crash recovery and a run's record look a run's messages up by run.
CREATE INDEX messages_by_run ON messages(run_id);
-- From here on: runs.prompt is '' once the run's user message holds the
-- prompt (until its session is deleted), and runs.complete leaves out the
-- "text" the finished message `message_id` holds. runs.text is no longer
-- used, and its copies go.
UPDATE runs SET text = NULL WHERE text IS NOT NULL;
PRAGMA application_id = {APPLICATION_ID}
"""

# Version 4: what runs' tools did to files, so it can be listed and undone
# (agentd.changes). New tables only: nothing old is rewritten.
_SCHEMA_4 = """
CREATE TABLE file_changes (
    run_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    -- Relative to the workspace root, with / separators.
    path TEXT NOT NULL,
    -- The file before the run's first write to it. before_size NULL: there
    -- was no file. before_content NULL with a size: too large to keep.
    before_size INTEGER,
    before_sha256 TEXT,
    before_mode INTEGER,
    before_content BLOB,
    -- The top-most directory of the path that the run's first write created, if any.
    created_dir TEXT,
    -- The file as the run's last write left it, once one has finished
    -- (after_written 1). after_size NULL: the run left no file there.
    after_written INTEGER NOT NULL DEFAULT 0,
    after_size INTEGER,
    after_sha256 TEXT,
    after_content BLOB,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    -- When run.revert put the before back.
    reverted_at REAL,
    PRIMARY KEY (run_id, path)
);
CREATE INDEX file_changes_by_session ON file_changes(session_id);
-- A session's last run, for clients that undo it.
CREATE INDEX runs_by_session ON runs(session_id, created_at)
"""

# Version 5: which projects' .agentd/config.toml the user trusted to start
# MCP servers (agentd.mcp). A new table only.
_SCHEMA_5 = """
CREATE TABLE mcp_trust (
    -- The file's absolute path.
    path TEXT PRIMARY KEY,
    -- sha256 of its bytes, hex, when it was trusted: any other content is not.
    digest TEXT NOT NULL,
    trusted_at REAL NOT NULL
)
"""

_MIGRATIONS = (_SCHEMA, _SCHEMA_2, _SCHEMA_3, _SCHEMA_4, _SCHEMA_5)


def check_ours(conn: sqlite3.Connection, path: str) -> None:
    """Refuse a file that is not an agentd database (or a new, empty one), reading only."""
    (application_id,) = conn.execute("PRAGMA application_id").fetchone()
    if application_id == APPLICATION_ID:
        return
    if application_id != 0:
        raise NotOurDatabase(
            f"the database {path} belongs to another application (its SQLite application_id is"
            f" {application_id:#010x}, agentd's is {APPLICATION_ID:#010x}); agentd leaves it untouched:"
            " pass --data-dir to use another directory, or move the file away"
        )
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    tables = _tables(conn)
    if version == 0 and not tables:
        return  # new: created here
    if 1 <= version and tables and tables <= TABLES:
        return  # agentd's, from before the mark: marked when it migrates
    shown = ", ".join(sorted(tables)[:6]) or "none"
    raise NotOurDatabase(
        f"the database {path} is not an agentd database: it is an SQLite file of another application"
        f" (tables: {shown}; schema version {version}); agentd leaves it untouched:"
        " pass --data-dir to use another directory, or move the file away"
    )


def check_tables(conn: sqlite3.Connection, path: str) -> None:
    """Every table agentd's schema has is there (a database that has a schema version at all)."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version == 0:
        return
    missing = {t for t in TABLES if _ADDED_IN.get(t, 1) <= version} - _tables(conn)
    if missing:
        raise DatabaseDamaged(damaged(path, f"its table {', '.join(sorted(missing))} is missing"))


def _tables(conn: sqlite3.Connection) -> set[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {name for (name,) in rows if not name.startswith(_INTERNAL_TABLE_PREFIX)}


def migrate(conn: sqlite3.Connection) -> None:
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version > SCHEMA_VERSION:
        raise sqlite3.DatabaseError(
            f"schema version {version} is newer than this agentd understands ({SCHEMA_VERSION})"
        )
    for target in range(version + 1, SCHEMA_VERSION + 1):
        # One transaction each: a crash mid-migration leaves the old version, not half a schema.
        conn.execute("BEGIN IMMEDIATE")
        try:
            # (No `;` inside the schema's comments: statements are split on it.)
            for statement in _MIGRATIONS[target - 1].split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {target}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
