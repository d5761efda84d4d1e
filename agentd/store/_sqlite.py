"""The state store: workspaces, sessions, messages, runs and the event log, in SQLite.

One database file, one connection, WAL and `synchronous=NORMAL`. Every call
runs on a worker thread, one at a time (a CapacityLimiter of 1), so the trio
thread never waits on the disk. A call is not abandoned when its caller is
cancelled: the statement finishes (or its transaction rolls back) and only
then does the cancellation land, so a cancel never leaves state half written.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import attrs
import msgpack
import trio

from agentd._packing import packb
from agentd.protocol import Message, RunComplete, Workspace, converter

__all__ = [
    "INTERRUPTED",
    "LoggedEvent",
    "EventReplay",
    "GAP_LOST",
    "GAP_TOO_OLD",
    "RunRecord",
    "SessionRecord",
    "Store",
    "StoreError",
    "new_id",
]

T = TypeVar("T")

SCHEMA_VERSION = 2
INTERRUPTED = "interrupted: daemon restarted"
# The event log keeps at least this many events per workspace, and every
# event younger than EVENT_LOG_MAX_AGE, whichever is more.
EVENT_LOG_KEEP = 10_000
EVENT_LOG_MAX_AGE = 24 * 3600.0

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

_MIGRATIONS = (_SCHEMA, _SCHEMA_2)


class StoreError(Exception):
    """The store cannot be used; the message names the file and what to do."""


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


@attrs.define
class SessionRecord:
    id: str
    workspace_id: str
    title: str
    created_at: float
    updated_at: float
    message_count: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


@attrs.define
class RunRecord:
    id: str
    workspace_id: str
    session_id: str
    prompt: str
    model: str
    created_at: float
    state: str = "queued"
    started_at: float | None = None
    finished_at: float | None = None
    complete: RunComplete | None = None


@attrs.frozen
class LoggedEvent:
    seq: int
    type: str
    payload: dict[str, Any]


# Why a replay may not hold every logged event after `since`.
GAP_TOO_OLD = "too_old"  # pruned from the log
GAP_LOST = "lost"  # never written (see `lost_through`)


@attrs.frozen
class EventReplay:
    events: list[LoggedEvent]
    # None, GAP_TOO_OLD or GAP_LOST.
    gap: str | None


_packb = packb  # a shared Packer would keep the largest payload it logged


def _unpackb(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


class Store:
    def __init__(self, path: str, conn: sqlite3.Connection, lock_fd: int) -> None:
        self.path = path
        self._conn = conn
        self._lock_fd = lock_fd
        self._limiter = trio.CapacityLimiter(1)
        #: RunCompletes the last start gave to runs a crash left unfinished.
        self.recovered: list[RunComplete] = []

    # --- opening

    @classmethod
    async def open(cls, path: str) -> Store:
        """Open (creating, migrating and recovering) the database at `path`."""
        return await trio.to_thread.run_sync(cls._open_sync, path)

    @classmethod
    def _open_sync(cls, path: str) -> Store:
        try:
            os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
            lock_fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StoreError(_advice(path, exc)) from None
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(lock_fd)
            # Two daemons on one database would each take the other's runs for
            # crashed ones: one database, one daemon.
            raise StoreError(f"another agentd is using the database {path}; stop it, or pass --data-dir") from None
        try:
            conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=5.0)
        except (OSError, sqlite3.Error) as exc:
            os.close(lock_fd)
            raise StoreError(_advice(path, exc)) from None
        try:
            conn.execute("PRAGMA busy_timeout = 5000")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"cannot use WAL journaling (got {mode})")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            _migrate(conn)
            store = cls(path, conn, lock_fd)
            store.recovered = store._recover_sync()
        except sqlite3.Error as exc:
            conn.close()
            os.close(lock_fd)
            raise StoreError(_advice(path, exc)) from None
        return store

    async def aclose(self) -> None:
        await self._run(self._conn.close)
        os.close(self._lock_fd)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        # Not abandon_on_cancel: a statement under way finishes (or its
        # transaction rolls back) before a cancellation is delivered.
        return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    def _transaction(self, body: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = body(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    # --- recovery

    def _recover_sync(self) -> list[RunComplete]:
        """Finish, exactly once, every run a crash left queued or running.

        Not cancelled (nobody asked): errored, with whatever text the assistant
        had written kept. Each gets its RunComplete recorded and appended to its
        workspace's event log, so a client replaying with `since` sees it.
        """

        def body(conn: sqlite3.Connection) -> list[RunComplete]:
            now = time.time()
            # A workspace still live was never closed by the daemon that served
            # it (one daemon per database: that one is gone). Any logged event
            # of that life may be missing from the log: mark all its seqs lost,
            # before the RunCompletes below are logged above them.
            conn.execute("UPDATE workspaces SET lost_through = seq_reserved, live = 0 WHERE live = 1")
            done: list[RunComplete] = []
            rows = conn.execute(
                "SELECT id, workspace_id, session_id FROM runs WHERE state != 'done' ORDER BY created_at"
            ).fetchall()
            for run_id, workspace_id, session_id in rows:
                message = conn.execute(
                    "SELECT id, text FROM messages WHERE run_id = ? AND role = 'assistant' "
                    "ORDER BY position DESC LIMIT 1",
                    (run_id,),
                ).fetchone()
                message_id, text = message if message else (None, "")
                if message_id is not None:
                    conn.execute(
                        "UPDATE messages SET finish_reason = 'error' WHERE id = ? AND finish_reason IS NULL",
                        (message_id,),
                    )
                rc = RunComplete(
                    session_id=session_id,
                    run_id=run_id,
                    message_id=message_id,
                    text=text,
                    error=INTERRUPTED,
                    cancelled=False,
                )
                self._record_complete(conn, rc, now)
                seq = self._reserve_seq(conn, workspace_id, 1)
                self._append_events(conn, workspace_id, [(seq, "run.complete", converter.unstructure(rc))], now)
                done.append(rc)
            return done

        return self._transaction(body)

    # --- workspaces

    async def workspace_for_path(self, path: str) -> Workspace:
        """The workspace of a resolved directory path, created on first use."""

        def find(conn: sqlite3.Connection) -> Workspace | None:
            row = conn.execute("SELECT id, path FROM workspaces WHERE path = ?", (path,)).fetchone()
            return Workspace(id=row[0], path=row[1]) if row else None

        def find_or_create(conn: sqlite3.Connection) -> Workspace:
            found = find(conn)
            if found is not None:
                return found  # created meanwhile
            workspace = Workspace(id=new_id("ws"), path=path)
            conn.execute(
                "INSERT INTO workspaces (id, path, created_at) VALUES (?, ?, ?)", (workspace.id, path, time.time())
            )
            return workspace

        # Opening a known directory only reads: it takes no write lock, so it
        # does not wait behind (or hold up) the writes of runs.
        known = await self._run(find, self._conn)
        if known is not None:
            return known
        return await self._run(self._transaction, find_or_create)

    async def get_workspace(self, workspace_id: str) -> Workspace | None:
        def body() -> Workspace | None:
            row = self._conn.execute("SELECT id, path FROM workspaces WHERE id = ?", (workspace_id,)).fetchone()
            return Workspace(id=row[0], path=row[1]) if row else None

        return await self._run(body)

    # --- event seqs and the event log

    @staticmethod
    def _reserve_seq(conn: sqlite3.Connection, workspace_id: str, count: int) -> int:
        """Hand out `count` seqs durably; the first of them."""
        conn.execute(
            "UPDATE workspaces SET seq_reserved = seq_reserved + ? WHERE id = ?",
            (count, workspace_id),
        )
        (reserved,) = conn.execute("SELECT seq_reserved FROM workspaces WHERE id = ?", (workspace_id,)).fetchone()
        return int(reserved) - count + 1

    async def reserve_seqs(self, workspace_id: str, count: int) -> int:
        """Reserve the next `count` event seqs of a workspace; the first of them.

        The broker takes seqs in blocks: after a crash the workspace resumes
        above everything it may have handed out, so seqs never repeat.
        """
        return await self._run(self._transaction, lambda conn: self._reserve_seq(conn, workspace_id, count))

    async def open_event_log(self, workspace_id: str, count: int) -> int:
        """Start serving a workspace's events: reserve its first `count` seqs; the first of them.

        The workspace is live until its last events are appended with
        `closed`; one left live by a daemon that died is dealt with when the
        store next opens.
        """

        def body(conn: sqlite3.Connection) -> int:
            conn.execute("UPDATE workspaces SET live = 1 WHERE id = ?", (workspace_id,))
            return self._reserve_seq(conn, workspace_id, count)

        return await self._run(self._transaction, body)

    @staticmethod
    def _append_events(
        conn: sqlite3.Connection,
        workspace_id: str,
        entries: Iterable[tuple[int, str, dict[str, Any]]],
        now: float,
    ) -> None:
        conn.executemany(
            "INSERT OR IGNORE INTO events (workspace_id, seq, type, payload, created_at) VALUES (?, ?, ?, ?, ?)",
            [(workspace_id, seq, kind, _packb(payload), now) for seq, kind, payload in entries],
        )

    async def append_events(
        self,
        workspace_id: str,
        entries: list[tuple[int, str, dict[str, Any]]],
        *,
        lost_through: int = 0,
        closed: bool = False,
    ) -> None:
        """Log events for replay, and prune what is past keeping.

        `lost_through`: logged events up to this seq may be missing (the
        caller had to let some go unwritten). `closed`: these are the last
        events of this serving of the workspace (see `open_event_log`).
        """

        def body(conn: sqlite3.Connection) -> None:
            now = time.time()
            self._append_events(conn, workspace_id, entries, now)
            if lost_through:
                conn.execute(
                    "UPDATE workspaces SET lost_through = max(lost_through, ?) WHERE id = ?",
                    (lost_through, workspace_id),
                )
            if closed:
                conn.execute("UPDATE workspaces SET live = 0 WHERE id = ?", (workspace_id,))
            self._prune(conn, workspace_id, now)

        await self._run(self._transaction, body)

    @staticmethod
    def _prune(conn: sqlite3.Connection, workspace_id: str, now: float) -> None:
        row = conn.execute(
            "SELECT seq FROM events WHERE workspace_id = ? ORDER BY seq DESC LIMIT 1 OFFSET ?",
            (workspace_id, EVENT_LOG_KEEP),
        ).fetchone()
        if row is None:
            return
        cutoff = conn.execute(
            "SELECT max(seq) FROM events WHERE workspace_id = ? AND seq <= ? AND created_at < ?",
            (workspace_id, row[0], now - EVENT_LOG_MAX_AGE),
        ).fetchone()[0]
        if cutoff is None:
            return
        conn.execute("DELETE FROM events WHERE workspace_id = ? AND seq <= ?", (workspace_id, cutoff))
        conn.execute(
            "UPDATE workspaces SET pruned_through = max(pruned_through, ?) WHERE id = ?",
            (cutoff, workspace_id),
        )

    async def events_after(self, workspace_id: str, since: int, through: int) -> EventReplay:
        """Logged events with `since < seq <= through`, and why they may not be all there."""

        def body() -> EventReplay:
            row = self._conn.execute(
                "SELECT pruned_through, lost_through FROM workspaces WHERE id = ?", (workspace_id,)
            ).fetchone()
            gap: str | None = None
            if row is not None and since < row[0]:
                gap = GAP_TOO_OLD
            elif row is not None and since < row[1]:
                gap = GAP_LOST
            rows = self._conn.execute(
                "SELECT seq, type, payload FROM events WHERE workspace_id = ? AND seq > ? AND seq <= ? ORDER BY seq",
                (workspace_id, since, through),
            ).fetchall()
            return EventReplay([LoggedEvent(seq, kind, _unpackb(payload)) for seq, kind, payload in rows], gap)

        return await self._run(body)

    # --- sessions

    async def create_session(self, workspace_id: str, title: str) -> SessionRecord:
        now = time.time()
        rec = SessionRecord(new_id("ses"), workspace_id, title, now, now)

        def body() -> None:
            self._conn.execute(
                "INSERT INTO sessions (id, workspace_id, title, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                (rec.id, workspace_id, title, now, now),
            )

        await self._run(body)
        return rec

    _SESSION_COLUMNS = (
        "id, workspace_id, title, created_at, updated_at, message_count, prompt_tokens, completion_tokens"
    )

    async def get_session(self, workspace_id: str, session_id: str) -> SessionRecord | None:
        def body() -> SessionRecord | None:
            row = self._conn.execute(
                f"SELECT {self._SESSION_COLUMNS} FROM sessions WHERE id = ? AND workspace_id = ?",
                (session_id, workspace_id),
            ).fetchone()
            return SessionRecord(*row) if row else None

        return await self._run(body)

    async def list_sessions(self, workspace_id: str) -> list[SessionRecord]:
        def body() -> list[SessionRecord]:
            rows = self._conn.execute(
                f"SELECT {self._SESSION_COLUMNS} FROM sessions WHERE workspace_id = ? ORDER BY updated_at DESC",
                (workspace_id,),
            ).fetchall()
            return [SessionRecord(*row) for row in rows]

        return await self._run(body)

    async def add_usage(self, session_id: str, prompt_tokens: int, completion_tokens: int) -> None:
        """Count a model call's tokens on its session."""

        def body() -> None:
            self._conn.execute(
                "UPDATE sessions SET prompt_tokens = prompt_tokens + ?, completion_tokens = completion_tokens + ?"
                " WHERE id = ?",
                (prompt_tokens, completion_tokens, session_id),
            )

        await self._run(body)

    async def title_untitled_session(self, session_id: str, title: str, untitled: tuple[str, ...]) -> bool:
        """Give the session `title` if its title is still one of `untitled`; whether it did.

        Conditional in the database, so of two first prompts sent at once, one names it.
        """

        def body() -> bool:
            marks = ",".join("?" * len(untitled))
            cursor = self._conn.execute(
                f"UPDATE sessions SET title = ? WHERE id = ? AND title IN ({marks})", (title, session_id, *untitled)
            )
            return cursor.rowcount > 0

        return await self._run(body)

    async def delete_session(self, workspace_id: str, session_id: str) -> SessionRecord | None:
        def body(conn: sqlite3.Connection) -> SessionRecord | None:
            row = conn.execute(
                f"SELECT {self._SESSION_COLUMNS} FROM sessions WHERE id = ? AND workspace_id = ?",
                (session_id, workspace_id),
            ).fetchone()
            if row is None:
                return None
            conn.execute("DELETE FROM messages WHERE session_id = ?", (session_id,))
            conn.execute("DELETE FROM sessions WHERE id = ?", (session_id,))
            return SessionRecord(*row)

        return await self._run(self._transaction, body)

    # --- messages

    async def add_message(
        self,
        session_id: str,
        role: str,
        text: str,
        run_id: str | None,
        finish_reason: str | None = None,
    ) -> Message:
        now = time.time()
        msg = Message(
            id=new_id("msg"),
            session_id=session_id,
            role=role,
            text=text,
            run_id=run_id,
            created_at=now,
            finish_reason=finish_reason,
        )

        def body(conn: sqlite3.Connection) -> None:
            (position,) = conn.execute("SELECT message_count FROM sessions WHERE id = ?", (session_id,)).fetchone()
            conn.execute(
                "INSERT INTO messages (id, session_id, position, role, text, run_id, created_at, finish_reason)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (msg.id, session_id, position, role, text, run_id, now, finish_reason),
            )
            conn.execute(
                "UPDATE sessions SET message_count = message_count + 1, updated_at = ? WHERE id = ?",
                (now, session_id),
            )

        await self._run(self._transaction, body)
        return msg

    async def update_message(self, message_id: str, text: str, finish_reason: str | None) -> Message:
        def body(conn: sqlite3.Connection) -> Message:
            return self._update_message(conn, message_id, text, finish_reason, time.time())

        return await self._run(self._transaction, body)

    @staticmethod
    def _update_message(
        conn: sqlite3.Connection, message_id: str, text: str, finish_reason: str | None, now: float
    ) -> Message:
        conn.execute("UPDATE messages SET text = ?, finish_reason = ? WHERE id = ?", (text, finish_reason, message_id))
        row = conn.execute(
            "SELECT id, session_id, role, text, run_id, created_at, finish_reason FROM messages WHERE id = ?",
            (message_id,),
        ).fetchone()
        conn.execute("UPDATE sessions SET updated_at = ? WHERE id = ?", (now, row[1]))
        return Message(*row)

    async def list_messages(self, session_id: str) -> list[Message]:
        def body() -> list[Message]:
            rows = self._conn.execute(
                "SELECT id, session_id, role, text, run_id, created_at, finish_reason FROM messages"
                " WHERE session_id = ? ORDER BY position",
                (session_id,),
            ).fetchall()
            return [Message(*row) for row in rows]

        return await self._run(body)

    # --- runs

    async def create_run(self, record: RunRecord, queue_position: int | None = None) -> None:
        def body() -> None:
            self._conn.execute(
                "INSERT INTO runs (id, workspace_id, session_id, model, prompt, state, queue_position, created_at)"
                " VALUES (?, ?, ?, ?, ?, 'queued', ?, ?)",
                (
                    record.id,
                    record.workspace_id,
                    record.session_id,
                    record.model,
                    record.prompt,
                    queue_position,
                    record.created_at,
                ),
            )

        await self._run(body)

    async def start_run(self, run_id: str) -> None:
        def body() -> None:
            self._conn.execute(
                "UPDATE runs SET state = 'running', queue_position = NULL, started_at = ? WHERE id = ?",
                (time.time(), run_id),
            )

        await self._run(body)

    @staticmethod
    def _record_complete(conn: sqlite3.Connection, rc: RunComplete, now: float) -> None:
        conn.execute(
            "UPDATE runs SET state = 'done', queue_position = NULL, error = ?, cancelled = ?, text = ?,"
            " message_id = ?, complete = ?, finished_at = ? WHERE id = ?",
            (
                rc.error,
                int(rc.cancelled),
                rc.text,
                rc.message_id,
                json.dumps(converter.unstructure(rc)),
                now,
                rc.run_id,
            ),
        )

    async def finish_run(
        self, rc: RunComplete, final_message: tuple[str, str, str | None] | None = None
    ) -> Message | None:
        """Record a run's end in one transaction: its last message and its RunComplete.

        `final_message` is (message_id, text, finish_reason).
        """

        def body(conn: sqlite3.Connection) -> Message | None:
            now = time.time()
            message = None
            if final_message is not None:
                message = self._update_message(conn, *final_message, now)
            self._record_complete(conn, rc, now)
            return message

        return await self._run(self._transaction, body)

    async def get_run(self, run_id: str) -> RunRecord | None:
        def body() -> RunRecord | None:
            row = self._conn.execute(
                "SELECT id, workspace_id, session_id, prompt, model, created_at, state, started_at, finished_at,"
                " complete FROM runs WHERE id = ?",
                (run_id,),
            ).fetchone()
            if row is None:
                return None
            complete = converter.structure(json.loads(row[9]), RunComplete) if row[9] else None
            return RunRecord(
                id=row[0],
                workspace_id=row[1],
                session_id=row[2],
                prompt=row[3],
                model=row[4],
                created_at=row[5],
                state=row[6],
                started_at=row[7],
                finished_at=row[8],
                complete=complete,
            )

        return await self._run(body)


def _migrate(conn: sqlite3.Connection) -> None:
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


def _advice(path: str, exc: BaseException) -> str:
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, sqlite3.DatabaseError) and "not a database" in detail:
        action = (
            f"it is not an agentd database, or it is corrupt: move it aside (mv {path} {path}.broken) and start again"
        )
    elif isinstance(exc, PermissionError) or "readonly" in detail or "unable to open" in detail:
        action = "check that this user can read and write it and its directory, or pass --data-dir"
    elif "disk" in detail or "full" in detail:
        action = "free some disk space, or pass --data-dir on another disk"
    elif "newer than" in detail:
        action = "run the newer agentd that wrote it, or pass --data-dir"
    else:
        action = f"if it is damaged, move it aside (mv {path} {path}.broken) and start again"
    return f"cannot open the database {path}: {detail}; {action}"
