"""The state store: workspaces, sessions, messages, runs and the event log, in SQLite.

The schema and its migrations are in `_schema`; what the store raises, in `_errors`;
a workspace's file as the store keeps it (and how it is read), in `_snapshot`.

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
import stat
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import attrs
import msgpack
import trio

from agentd._packing import packb
from agentd.paths import ensure_private_dir, open_private
from agentd.protocol import Message, MessagePart, RunComplete, Workspace, converter, events, run_complete

from ._errors import DatabaseDamaged, NotOurDatabase, StoreError, StoreRefused, advice, damaged, is_damage
from ._schema import SCHEMA_VERSION, check_ours, check_tables, migrate
from ._snapshot import ABSENT, KEEP_FILE_BYTES, KEEP_RUN_BYTES, FileSnapshot, Unreadable, read_snapshot
from ._terminal_log import TerminalLog, TerminalRecord

__all__ = [
    "DatabaseDamaged",
    "FileChangeRecord",
    "FileSnapshot",
    "INTERRUPTED",
    "LoggedEvent",
    "EventReplay",
    "GAP_LOST",
    "GAP_TOO_OLD",
    "NotOurDatabase",
    "RunRecord",
    "SCHEMA_VERSION",
    "SessionRecord",
    "Store",
    "StoreError",
    "new_id",
]

T = TypeVar("T")

INTERRUPTED = "interrupted: daemon restarted"
# The event log keeps at least this many events per workspace, and every
# event younger than EVENT_LOG_MAX_AGE, whichever is more.
EVENT_LOG_KEEP = 10_000
EVENT_LOG_MAX_AGE = 24 * 3600.0
# Pruning reads the log's oldest events and counts back from its newest: done
# once per this many events appended to a workspace's log, its cost is spread
# thin, and each time it removes up to _PRUNE_BATCH events, more than came in.
_PRUNE_EVERY = 1_000
_PRUNE_BATCH = 5_000
# Logged events whose text is their message's: held once, in the message (see
# `_elide`), and filled in again when they are read.
_MESSAGE_TEXT_EVENTS = frozenset({events.MESSAGE_CREATED, events.MESSAGE_UPDATED})


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
class FileChangeRecord:
    """What one run did to one file: the file before its first write, and after its last."""

    run_id: str
    session_id: str
    path: str
    before: FileSnapshot
    # None until a write of the run finished (a daemon that died mid-write).
    after: FileSnapshot | None
    # The top-most directory of `path` the run's first write created, if any.
    created_dir: str | None
    created_at: float
    updated_at: float
    reverted_at: float | None


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
        #: Where a RunComplete goes when the database refuses it (see `_terminal_log`).
        self.terminal_log = TerminalLog(path + "-terminal")
        self._limiter = trio.CapacityLimiter(1)
        # Per workspace: events appended since its log was last pruned.
        self._unpruned: dict[str, int] = {}
        #: RunCompletes the last start gave to runs a crash left unfinished.
        self.recovered: list[RunComplete] = []

    # --- opening

    @classmethod
    async def open(cls, path: str, *, own_folder: bool = True) -> Store:
        """Open (creating, migrating and recovering) the database at `path`.

        Its folder is made 0700 when agentd owns it (`own_folder`); a folder the
        user named keeps its mode, but one others may write to is refused.
        Every file agentd makes in it is 0600 either way.
        """
        return await trio.to_thread.run_sync(cls._open_sync, path, own_folder)

    @classmethod
    def _open_sync(cls, path: str, own_folder: bool = True) -> Store:
        folder = os.path.dirname(path) or "."
        try:
            ensure_private_dir(folder, owned=own_folder)
            _refuse_shared_folder(folder)
            lock_fd = open_private(path + ".lock", os.O_RDWR)
            # SQLite gives -wal and -shm the database's own mode: created 0600
            # here, before SQLite would create it 0644, they are private too.
            os.close(open_private(path, os.O_RDWR))
        except OSError as exc:
            raise StoreError(advice(path, exc)) from None
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(lock_fd)
            # Two daemons on one database would each take the other's runs for
            # crashed ones: one database, one daemon.
            raise StoreError(f"another agentd is using the database {path}; stop it, or pass --data-dir") from None
        try:
            # No statement cache: a cached statement keeps its last bound values,
            # and those are a whole answer's text (tens of MB held after one big run).
            conn = sqlite3.connect(
                path, check_same_thread=False, isolation_level=None, timeout=5.0, cached_statements=0
            )
        except (OSError, sqlite3.Error) as exc:
            os.close(lock_fd)
            raise StoreError(advice(path, exc)) from None
        try:
            conn.execute("PRAGMA busy_timeout = 5000")
            # Before anything is written: another application's file stays as it was.
            check_ours(conn, path)
            check_tables(conn, path)
            _make_private(path)  # ours, so its mode is ours to fix (an older agentd made them 0644)
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"cannot use WAL journaling (got {mode})")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            migrate(conn)
            store = cls(path, conn, lock_fd)
            store.recovered = store._recover_sync()
            # Only now that the database holds them: a crash before this line
            # applies the same records again at the next start, harmlessly.
            store.terminal_log.clear()
        except StoreError:
            conn.close()
            os.close(lock_fd)
            raise
        except sqlite3.Error as exc:
            conn.close()
            os.close(lock_fd)
            kind = DatabaseDamaged if is_damage(exc) else StoreError
            raise kind(advice(path, exc)) from None
        return store

    async def aclose(self) -> None:
        await self._run(self._conn.close)
        os.close(self._lock_fd)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        # Not abandon_on_cancel: a statement under way finishes (or its
        # transaction rolls back) before a cancellation is delivered.
        return await trio.to_thread.run_sync(self._call, fn, args, limiter=self._limiter)

    def _call(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        try:
            return fn(*args)
        except sqlite3.IntegrityError:
            raise  # a constraint the caller relies on (a run_id sent twice at once)
        except sqlite3.DatabaseError as exc:
            if is_damage(exc):
                raise DatabaseDamaged(damaged(self.path, str(exc))) from exc
            raise StoreRefused(f"the database {self.path} refused: {exc}") from exc

    def _transaction(self, body: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = body(conn)
        except BaseException:
            # SQLite may have rolled back already (on some I/O errors and on damage).
            if conn.in_transaction:
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

        ended_elsewhere = self.terminal_log.read()

        def body(conn: sqlite3.Connection) -> list[RunComplete]:
            now = time.time()
            # First what clients were told while the database refused it: those
            # runs are over, exactly as their RunComplete said.
            for record in ended_elsewhere:
                self._apply_terminal_record(conn, record, now)
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
                # What its tools wrote before the crash is kept, and counted: a
                # write the crash cut short gets its after from the file now.
                self._finish_file_changes(conn, run_id, workspace_id, now)
                changes = self._count_file_changes(conn, run_id)
                rc = run_complete(
                    session_id, run_id, message_id=message_id, text=text, error=INTERRUPTED, changes=changes
                )
                self._record_complete(conn, rc, now)
                seq = self._reserve_seq(conn, workspace_id, 1)
                self._append_events(conn, workspace_id, [(seq, events.RUN_COMPLETE, converter.unstructure(rc))], now)
                done.append(rc)
            return done

        return self._transaction(body)

    @staticmethod
    def _finish_file_changes(conn: sqlite3.Connection, run_id: str, workspace_id: str, now: float) -> None:
        """Record, for each file the run began to write and never recorded after, the file as it is now.

        The run was killed between keeping a file's before and keeping its
        after: whether the write itself happened is unknown, so the file on
        disk is taken as the run's. Recorded here, before the RunComplete
        counts it, so its `changes`, `run.changes` and `run.revert` all go by
        the same after, and a change someone makes once the daemon is back is
        told apart from the run's (revert refuses it without `force`).
        """
        pending = [
            path
            for (path,) in conn.execute(
                "SELECT path FROM file_changes WHERE run_id = ? AND after_written = 0 ORDER BY created_at, path",
                (run_id,),
            )
        ]
        if not pending:
            return
        row = conn.execute("SELECT path FROM workspaces WHERE id = ?", (workspace_id,)).fetchone()
        root = os.path.realpath(row[0]) if row is not None else None
        (kept,) = conn.execute(
            "SELECT coalesce(sum(coalesce(length(before_content), 0) + coalesce(length(after_content), 0)), 0)"
            " FROM file_changes WHERE run_id = ?",
            (run_id,),
        ).fetchone()
        for path in pending:
            room = max(0, min(KEEP_FILE_BYTES, KEEP_RUN_BYTES - kept))
            try:
                after = read_snapshot(root, path, room) if root is not None else ABSENT
            except (OSError, ValueError, Unreadable):
                # No regular file we may read is there (a directory, a symlink
                # put there since, a permission): none the run left, as far as
                # anyone can tell; a revert finds it changed since and refuses.
                after = ABSENT
            kept += len(after.content or b"")
            conn.execute(
                "UPDATE file_changes SET after_written = 1, after_size = ?, after_sha256 = ?, after_content = ?,"
                " updated_at = ? WHERE run_id = ? AND path = ?",
                (after.size, after.sha256, after.content, now, run_id, path),
            )

    def _apply_terminal_record(self, conn: sqlite3.Connection, record: TerminalRecord, now: float) -> None:
        """Put a RunComplete the database once refused where it belongs; a no-op if it is there."""
        rc = record.complete
        row = conn.execute("SELECT state FROM runs WHERE id = ?", (rc.run_id,)).fetchone()
        if row is not None and row[0] != "done":
            final = record.final_message
            if final is not None and conn.execute("SELECT 1 FROM messages WHERE id = ?", (final[0],)).fetchone():
                self._update_message(conn, *final, now)
            self._record_complete(conn, rc, now)
        # At the seq it was published with: a client that saw it live and
        # resumes after it is not told again, one that resumes before it is.
        entry = (record.seq, events.RUN_COMPLETE, converter.unstructure(rc))
        self._append_events(conn, record.workspace_id, [entry], now)

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

    # --- trust of projects' MCP servers (agentd.models._project_file)

    async def mcp_trusted_digest(self, path: str) -> str | None:
        """The digest of the project MCP file at `path` the user trusted, or None."""

        def body() -> str | None:
            row = self._conn.execute("SELECT digest FROM mcp_trust WHERE path = ?", (path,)).fetchone()
            return str(row[0]) if row is not None else None

        return await self._run(body)

    async def trust_mcp(self, path: str, digest: str) -> None:
        """Trust the project MCP file at `path` with content `digest`, replacing an earlier trust."""

        def body() -> None:
            self._conn.execute(
                "INSERT INTO mcp_trust (path, digest, trusted_at) VALUES (?, ?, ?)"
                " ON CONFLICT (path) DO UPDATE SET digest = excluded.digest, trusted_at = excluded.trusted_at",
                (path, digest, time.time()),
            )

        await self._run(body)

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
            [(workspace_id, seq, kind, _packb(_elide(conn, kind, payload)), now) for seq, kind, payload in entries],
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
            # The first append after the store opens prunes; then one in _PRUNE_EVERY events.
            unpruned = self._unpruned.get(workspace_id, _PRUNE_EVERY) + len(entries)
            if unpruned >= _PRUNE_EVERY:
                self._prune(conn, workspace_id, now)
                unpruned = 0
            self._unpruned[workspace_id] = unpruned

        await self._run(self._transaction, body)

    @staticmethod
    def _prune(conn: sqlite3.Connection, workspace_id: str, now: float) -> None:
        """Remove the oldest logged events that are past keeping, up to _PRUNE_BATCH of them.

        Every read here is bounded, whatever the log's size: the oldest entries
        by the primary key, and the EVENT_LOG_KEEP newest, counted back from the end.
        """
        too_old = now - EVENT_LOG_MAX_AGE
        oldest = conn.execute(
            "SELECT created_at FROM events WHERE workspace_id = ? ORDER BY seq LIMIT 1", (workspace_id,)
        ).fetchone()
        if oldest is None or oldest[0] >= too_old:
            return  # the usual case: nothing is a day old
        keep_from = conn.execute(
            "SELECT seq FROM events WHERE workspace_id = ? ORDER BY seq DESC LIMIT 1 OFFSET ?",
            (workspace_id, EVENT_LOG_KEEP - 1),
        ).fetchone()
        if keep_from is None:
            return  # no more than EVENT_LOG_KEEP events
        candidates = conn.execute(
            "SELECT seq, created_at FROM events WHERE workspace_id = ? AND seq < ? ORDER BY seq LIMIT ?",
            (workspace_id, keep_from[0], _PRUNE_BATCH),
        ).fetchall()
        cutoff = None
        for seq, created_at in candidates:
            if created_at >= too_old:
                break  # younger than a day: it stays, and so does all after it
            cutoff = seq
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
            conn = self._conn
            row = conn.execute(
                "SELECT pruned_through, lost_through FROM workspaces WHERE id = ?", (workspace_id,)
            ).fetchone()
            gap: str | None = None
            if row is not None and since < row[0]:
                gap = GAP_TOO_OLD
            elif row is not None and since < row[1]:
                gap = GAP_LOST
            rows = conn.execute(
                "SELECT seq, type, payload FROM events WHERE workspace_id = ? AND seq > ? AND seq <= ? ORDER BY seq",
                (workspace_id, since, through),
            ).fetchall()
            replay = []
            for seq, kind, blob in rows:
                try:
                    payload = _unpackb(blob)
                    if not isinstance(payload, dict):
                        raise ValueError(f"a {type(payload).__name__}, not a map")
                except ValueError as exc:  # msgpack's errors are ValueErrors
                    detail = f"logged event {seq} of workspace {workspace_id} cannot be read ({exc})"
                    raise DatabaseDamaged(damaged(self.path, detail)) from None
                replay.append(LoggedEvent(seq, kind, _restore(conn, kind, payload)))
            return EventReplay(replay, gap)

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

    async def all_sessions(self) -> list[tuple[Workspace, SessionRecord]]:
        """Every session of every workspace with its workspace, most recently updated first."""
        columns = ", ".join(f"s.{c.strip()}" for c in self._SESSION_COLUMNS.split(","))

        def body() -> list[tuple[Workspace, SessionRecord]]:
            rows = self._conn.execute(
                f"SELECT w.id, w.path, {columns} FROM sessions s JOIN workspaces w ON w.id = s.workspace_id"
                " ORDER BY s.updated_at DESC"
            ).fetchall()
            return [(Workspace(id=row[0], path=row[1]), SessionRecord(*row[2:])) for row in rows]

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
            self._keep_run_texts(conn, session_id)
            conn.execute("DELETE FROM file_changes WHERE session_id = ?", (session_id,))
            conn.execute("DELETE FROM messages WHERE session_id = ?", (session_id,))
            conn.execute("DELETE FROM sessions WHERE id = ?", (session_id,))
            return SessionRecord(*row)

        return await self._run(self._transaction, body)

    @staticmethod
    def _keep_run_texts(conn: sqlite3.Connection, session_id: str) -> None:
        """Give the session's runs back the texts their messages held, before the messages go.

        `run.get` of a run keeps its prompt and its RunComplete's text after its
        session was deleted.
        """
        rows = conn.execute(
            "SELECT run_id, id, role, text FROM messages WHERE session_id = ? AND run_id IS NOT NULL",
            (session_id,),
        ).fetchall()
        for run_id, message_id, role, text in rows:
            if role == "user":
                conn.execute("UPDATE runs SET prompt = ? WHERE id = ? AND prompt = ''", (text, run_id))
                continue
            found = conn.execute(
                "SELECT complete FROM runs WHERE id = ? AND message_id = ?", (run_id, message_id)
            ).fetchone()
            if found is None or not found[0]:
                continue
            complete = json.loads(found[0])
            if "text" not in complete:
                complete["text"] = text
                conn.execute("UPDATE runs SET complete = ? WHERE id = ?", (json.dumps(complete), run_id))

    # --- messages

    async def add_message(
        self,
        session_id: str,
        role: str,
        text: str,
        run_id: str | None,
        finish_reason: str | None = None,
        parts: tuple[MessagePart, ...] = (),
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
            parts=parts,
        )

        def body(conn: sqlite3.Connection) -> None:
            (position,) = conn.execute("SELECT message_count FROM sessions WHERE id = ?", (session_id,)).fetchone()
            conn.execute(
                "INSERT INTO messages (id, session_id, position, role, text, parts, run_id, created_at, finish_reason)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (msg.id, session_id, position, role, text, _dump_parts(parts), run_id, now, finish_reason),
            )
            conn.execute(
                "UPDATE sessions SET message_count = message_count + 1, updated_at = ? WHERE id = ?",
                (now, session_id),
            )
            if role == "user" and run_id is not None:
                # The prompt is held once: from now on by this message ('', see get_run).
                conn.execute("UPDATE runs SET prompt = '' WHERE id = ? AND prompt = ?", (run_id, text))

        await self._run(self._transaction, body)
        return msg

    async def update_message(
        self, message_id: str, text: str, finish_reason: str | None, parts: tuple[MessagePart, ...] | None = None
    ) -> Message:
        """Set a message's text and finish_reason, and its parts unless `parts` is None."""

        def body(conn: sqlite3.Connection) -> Message:
            return self._update_message(conn, message_id, text, finish_reason, time.time(), parts)

        return await self._run(self._transaction, body)

    @staticmethod
    def _update_message(
        conn: sqlite3.Connection,
        message_id: str,
        text: str,
        finish_reason: str | None,
        now: float,
        parts: tuple[MessagePart, ...] | None = None,
    ) -> Message:
        if parts is None:
            conn.execute(
                "UPDATE messages SET text = ?, finish_reason = ? WHERE id = ?", (text, finish_reason, message_id)
            )
        else:
            conn.execute(
                "UPDATE messages SET text = ?, finish_reason = ?, parts = ? WHERE id = ?",
                (text, finish_reason, _dump_parts(parts), message_id),
            )
        row = conn.execute(f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = ?", (message_id,)).fetchone()
        conn.execute("UPDATE sessions SET updated_at = ? WHERE id = ?", (now, row[1]))
        return _message(row)

    async def list_messages(self, session_id: str) -> list[Message]:
        def body() -> list[Message]:
            rows = self._conn.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE session_id = ? ORDER BY position", (session_id,)
            ).fetchall()
            return [_message(row) for row in rows]

        return await self._run(body)

    async def conversation(self, session_id: str) -> list[Message]:
        """The session's messages, in order: what a model that uses history is given."""
        return await self.list_messages(session_id)

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
        data = converter.unstructure(rc)
        if rc.message_id is not None and rc.text and _holds(conn, rc.message_id, rc.text):
            del data["text"]  # get_run reads it from the message
        complete = json.dumps(data)
        conn.execute(
            "UPDATE runs SET state = 'done', queue_position = NULL, error = ?, cancelled = ?,"
            " message_id = ?, complete = ?, finished_at = ? WHERE id = ?",
            (rc.error, int(rc.cancelled), rc.message_id, complete, now, rc.run_id),
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
                "SELECT r.id, r.workspace_id, r.session_id,"
                " coalesce(nullif(r.prompt, ''), (SELECT m.text FROM messages m WHERE m.run_id = r.id"
                " AND m.role = 'user' ORDER BY m.position LIMIT 1), ''),"
                " r.model, r.created_at, r.state, r.started_at, r.finished_at, r.complete,"
                " (SELECT m.text FROM messages m WHERE m.id = r.message_id)"
                " FROM runs r WHERE r.id = ?",
                (run_id,),
            ).fetchone()
            if row is None:
                return None
            complete = None
            if row[9]:
                try:
                    data = json.loads(row[9])
                    data.setdefault("text", row[10] or "")
                    complete = converter.structure(data, RunComplete)
                except Exception as exc:
                    detail = f"the RunComplete of run {run_id} cannot be read ({exc})"
                    raise DatabaseDamaged(damaged(self.path, detail)) from None
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

    # --- file changes (agentd.changes: what runs' tools wrote, and how to undo it)

    async def record_file_before(
        self, run_id: str, session_id: str, path: str, before: FileSnapshot, created_dir: str | None
    ) -> bool:
        """Keep a file as it was before the run's first write to it; False if the run already has it."""

        def body() -> bool:
            now = time.time()
            cursor = self._conn.execute(
                "INSERT OR IGNORE INTO file_changes (run_id, session_id, path, before_size, before_sha256,"
                " before_mode, before_content, created_dir, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, session_id, path, *attrs.astuple(before, recurse=False), created_dir, now, now),
            )
            return cursor.rowcount > 0

        return await self._run(body)

    async def record_file_after(self, run_id: str, path: str, after: FileSnapshot) -> None:
        """The file as the run's latest write left it."""

        def body() -> None:
            self._conn.execute(
                "UPDATE file_changes SET after_written = 1, after_size = ?, after_sha256 = ?, after_content = ?,"
                " updated_at = ? WHERE run_id = ? AND path = ?",
                (after.size, after.sha256, after.content, time.time(), run_id, path),
            )

        await self._run(body)

    async def file_changes(self, run_id: str) -> list[FileChangeRecord]:
        """Every file the run wrote to, in the order it first did, with the contents kept."""

        def body() -> list[FileChangeRecord]:
            rows = self._conn.execute(
                "SELECT run_id, session_id, path, before_size, before_sha256, before_mode, before_content,"
                " after_written, after_size, after_sha256, after_content, created_dir, created_at, updated_at,"
                " reverted_at FROM file_changes WHERE run_id = ? ORDER BY created_at, path",
                (run_id,),
            ).fetchall()
            return [
                FileChangeRecord(
                    run_id=row[0],
                    session_id=row[1],
                    path=row[2],
                    before=FileSnapshot(row[3], row[4], row[5], row[6]),
                    after=FileSnapshot(row[8], row[9], None, row[10]) if row[7] else None,
                    created_dir=row[11],
                    created_at=row[12],
                    updated_at=row[13],
                    reverted_at=row[14],
                )
                for row in rows
            ]

        return await self._run(body)

    async def mark_files_reverted(self, run_id: str, paths: list[str]) -> float:
        """Note that run.revert put these files of the run back as they were; when it did."""
        now = time.time()

        def body() -> None:
            self._conn.executemany(
                "UPDATE file_changes SET reverted_at = ? WHERE run_id = ? AND path = ?",
                [(now, run_id, path) for path in paths],
            )

        await self._run(body)
        return now

    async def last_run(self, session_id: str) -> str | None:
        """The id of the session's most recently accepted run, if it has any."""

        def body() -> str | None:
            row = self._conn.execute(
                "SELECT id FROM runs WHERE session_id = ? ORDER BY created_at DESC, rowid DESC LIMIT 1",
                (session_id,),
            ).fetchone()
            return str(row[0]) if row is not None else None

        return await self._run(body)

    @staticmethod
    def _count_file_changes(conn: sqlite3.Connection, run_id: str) -> int:
        """How many files the run created, changed or deleted: those whose content is not what it was."""
        (count,) = conn.execute(
            "SELECT count(*) FROM file_changes WHERE run_id = ? AND after_written = 1"
            " AND (after_sha256 IS NOT before_sha256 OR after_size IS NOT before_size)",
            (run_id,),
        ).fetchone()
        return int(count)


_MESSAGE_COLUMNS = "id, session_id, role, text, run_id, created_at, finish_reason, parts"


def _dump_parts(parts: tuple[MessagePart, ...]) -> str:
    return json.dumps(converter.unstructure(parts, tuple[MessagePart, ...]), ensure_ascii=False) if parts else "[]"


def _load_parts(raw: str) -> tuple[MessagePart, ...]:
    if raw == "[]" or not raw:
        return ()
    return tuple(converter.structure(json.loads(raw), tuple[MessagePart, ...]))


def _message(row: Any) -> Message:
    id_, session_id, role, text, run_id, created_at, finish_reason, parts = row
    return Message(id_, session_id, role, text, run_id, created_at, finish_reason, _load_parts(parts))


def _holds(conn: sqlite3.Connection, message_id: str, text: str) -> bool:
    """Whether a finished message holds exactly `text`: a finished message's text no longer changes."""
    row = conn.execute(
        "SELECT 1 FROM messages WHERE id = ? AND text = ? AND finish_reason IS NOT NULL", (message_id, text)
    ).fetchone()
    return row is not None


def _elide(conn: sqlite3.Connection, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The payload to log: without its text (and parts) when a finished message holds those very ones."""
    if kind in _MESSAGE_TEXT_EVENTS:
        message_id = payload.get("id")
    elif kind == events.RUN_COMPLETE:
        message_id = payload.get("message_id")
    else:
        return payload
    if not isinstance(message_id, str):
        return payload
    # A finished message's text and parts no longer change.
    row = conn.execute(
        "SELECT text, parts FROM messages WHERE id = ? AND finish_reason IS NOT NULL", (message_id,)
    ).fetchone()
    if row is None:
        return payload
    held = set()
    text = payload.get("text")
    if isinstance(text, str) and text and text == row[0]:
        held.add("text")
    parts = payload.get("parts")
    if kind in _MESSAGE_TEXT_EVENTS and parts and json.dumps(parts, ensure_ascii=False) == row[1]:
        held.add("parts")
    if not held:
        return payload
    return {key: value for key, value in payload.items() if key not in held}


def _restore(conn: sqlite3.Connection, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    """A logged payload as it was published: its text (and parts) filled in from where they are held."""
    if kind in _MESSAGE_TEXT_EVENTS:
        if "text" in payload and "parts" in payload:
            return payload
        row = conn.execute("SELECT text, parts FROM messages WHERE id = ?", (payload.get("id"),)).fetchone()
        restored = dict(payload)
        restored.setdefault("text", str(row[0]) if row is not None else "")
        restored.setdefault("parts", json.loads(row[1]) if row is not None else [])
        return restored
    if kind == events.RUN_COMPLETE and "text" not in payload:
        text = _message_text(conn, payload.get("message_id"))
        if text is None:
            # The session was deleted: its runs took their texts back (see delete_session).
            text = _complete_text(conn, payload.get("run_id"))
        return {**payload, "text": text or ""}
    return payload


def _message_text(conn: sqlite3.Connection, message_id: Any) -> str | None:
    row = conn.execute("SELECT text FROM messages WHERE id = ?", (message_id,)).fetchone()
    return str(row[0]) if row is not None else None


def _complete_text(conn: sqlite3.Connection, run_id: Any) -> str | None:
    row = conn.execute("SELECT complete FROM runs WHERE id = ?", (run_id,)).fetchone()
    if row is None or not row[0]:
        return None
    text = json.loads(row[0]).get("text")
    return text if isinstance(text, str) else None


def _refuse_shared_folder(folder: str) -> None:
    st = os.stat(folder)
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise PermissionError(
            f"the data folder {folder} is writable by other users (mode {stat.S_IMODE(st.st_mode):04o}), who could"
            " replace the database; make it private (chmod 700) or pass another --data-dir"
        )


def _make_private(path: str) -> None:
    for name in (path, path + "-wal", path + "-shm", path + "-terminal", path + ".lock"):
        try:
            st = os.lstat(name)
        except FileNotFoundError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_mode & 0o077:
            os.chmod(name, 0o600)
