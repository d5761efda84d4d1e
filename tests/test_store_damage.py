"""A database that is not what agentd wrote: damaged, or another application's.

Damage is named as damage (never as a full disk), with the file and what to
do; another application's SQLite file is refused by name and left as it was.
"""

from __future__ import annotations

import hashlib
import sqlite3
import sys
from pathlib import Path

import pytest
import trio
from support import WAIT, Daemon, DaemonFactory, Workspace

from agentctl.client import RpcError
from agentd.store import DatabaseDamaged, NotOurDatabase, Store
from agentd.store._schema import APPLICATION_ID


async def stored_events(path: Path, count: int = 3) -> str:
    """A database at `path` with `count` logged events in one workspace; the workspace id."""
    store = await Store.open(str(path))
    try:
        workspace = await store.workspace_for_path(str(path.parent))
        first = await store.open_event_log(workspace.id, 100)
        entries = [(first + i, "session.deleted", {"id": f"ses_{i}"}) for i in range(count)]
        await store.append_events(workspace.id, entries, closed=True)
        return workspace.id
    finally:
        await store.aclose()


def corrupt_page(path: Path, table: str) -> None:
    """Overwrite the b-tree header of `table`'s root page: SQLite reports the page malformed."""
    conn = sqlite3.connect(path)
    # The schema's own table is page 1, and not listed in itself.
    row = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()
    root = 1 if table == "sqlite_master" else row[0]
    (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    offset = (root - 1) * page_size + (100 if root == 1 else 0)
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(b"\x00" * 12)


def assert_names_damage(message: str, path: Path) -> None:
    assert str(path) in message
    assert "damaged" in message
    assert f"mv {path} {path}.broken" in message
    assert "disk space" not in message


async def test_an_unreadable_logged_event_is_database_damaged_naming_the_file_and_the_event(tmp_path: Path) -> None:
    path = tmp_path / "agentd.db"
    workspace_id = await stored_events(path)
    conn = sqlite3.connect(path, isolation_level=None)
    # 0xc1 is the one byte msgpack never uses.
    conn.execute("UPDATE events SET payload = x'c1' WHERE seq = (SELECT min(seq) + 1 FROM events)")
    conn.close()
    store = await Store.open(str(path))
    try:
        with pytest.raises(DatabaseDamaged) as damaged:
            await store.events_after(workspace_id, 0, 10**9)
    finally:
        await store.aclose()
    assert_names_damage(str(damaged.value), path)
    assert "logged event" in str(damaged.value)


async def test_a_table_dropped_under_the_store_is_database_damaged(tmp_path: Path) -> None:
    path = tmp_path / "agentd.db"
    workspace_id = await stored_events(path)
    store = await Store.open(str(path))
    try:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("DROP TABLE events")
        other.close()
        with pytest.raises(DatabaseDamaged) as damaged:
            await store.events_after(workspace_id, 0, 10**9)
    finally:
        await store.aclose()
    assert_names_damage(str(damaged.value), path)
    assert "no such table: events" in str(damaged.value)


async def test_a_corrupt_page_is_database_damaged(tmp_path: Path) -> None:
    path = tmp_path / "agentd.db"
    workspace_id = await stored_events(path)
    corrupt_page(path, "events")
    store = await Store.open(str(path))
    try:
        with pytest.raises(DatabaseDamaged) as damaged:
            await store.events_after(workspace_id, 0, 10**9)
    finally:
        await store.aclose()
    assert_names_damage(str(damaged.value), path)


async def test_a_missing_table_at_open_is_database_damaged(tmp_path: Path) -> None:
    path = tmp_path / "agentd.db"
    await stored_events(path)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP TABLE runs")
    conn.close()
    with pytest.raises(DatabaseDamaged) as damaged:
        await Store.open(str(path))
    assert_names_damage(str(damaged.value), path)
    assert "table runs is missing" in str(damaged.value)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_another_applications_sqlite_file_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "agentd.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    conn.execute("INSERT INTO notes (body) VALUES ('mine')")
    conn.close()
    before = digest(path)
    with pytest.raises(NotOurDatabase) as refused:
        await Store.open(str(path))
    message = str(refused.value)
    assert str(path) in message and "another application" in message and "notes" in message
    assert "--data-dir" in message
    assert digest(path) == before
    assert not Path(str(path) + "-wal").exists()


async def test_a_file_marked_by_another_application_is_refused_even_with_agentd_tables(tmp_path: Path) -> None:
    path = tmp_path / "agentd.db"
    await stored_events(path)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA application_id = 1234")
    conn.close()
    before = digest(path)
    with pytest.raises(NotOurDatabase) as refused:
        await Store.open(str(path))
    assert "application_id is 0x000004d2" in str(refused.value)
    assert digest(path) == before


async def test_a_new_database_carries_agentds_mark(tmp_path: Path) -> None:
    path = tmp_path / "agentd.db"
    await (await Store.open(str(path))).aclose()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    conn.close()


async def start_fails(env: dict[str, str], short_tmp: Path) -> str:
    """Start agentd on the test's data directory, expecting it to refuse; its stderr."""
    with trio.fail_after(WAIT):
        result = await trio.run_process(
            [sys.executable, "-m", "agentd", "--socket", str(short_tmp / "x.sock")],
            env=env,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 1
    assert not (short_tmp / "x.sock").exists()
    message = result.stderr.decode()
    assert "Traceback" not in message
    return message


async def test_a_damaged_database_stops_the_start_as_damaged_not_as_a_full_disk(
    start_daemon: DaemonFactory, env: dict[str, str], short_tmp: Path
) -> None:
    start_daemon().terminate()
    db = Path(env["XDG_DATA_HOME"]) / "agentd" / "agentd.db"
    corrupt_page(db, "sqlite_master")
    message = await start_fails(env, short_tmp)
    assert_names_damage(message, db)


async def test_another_applications_database_stops_the_start_by_name(env: dict[str, str], short_tmp: Path) -> None:
    db = Path(env["XDG_DATA_HOME"]) / "agentd" / "agentd.db"
    db.parent.mkdir(parents=True)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("CREATE TABLE moz_places (id INTEGER PRIMARY KEY)")
    conn.close()
    before = digest(db)
    message = await start_fails(env, short_tmp)
    assert str(db) in message and "another application" in message and "moz_places" in message
    assert digest(db) == before


async def test_a_replay_from_a_damaged_log_is_an_error_reply_naming_the_database(
    daemon: Daemon, ws: Workspace, env: dict[str, str]
) -> None:
    session_id = await ws.new_session()
    reply = await ws.send(session_id, "logged")
    await ws.events.until_complete(reply["run_id"])
    db = Path(env["XDG_DATA_HOME"]) / "agentd" / "agentd.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DROP TABLE events")
    conn.close()
    with pytest.raises(RpcError) as refused:
        await ws.client.call("events.subscribe", {"workspace_id": ws.id, "since": 0})
    # Not a bug in the daemon (code 0): its database cannot do this (code 7).
    assert refused.value.code == 7
    assert_names_damage(refused.value.message, db)
    # The daemon goes on serving what the damage does not touch.
    assert await ws.client.call("ping") == {}


async def test_a_message_that_is_not_utf8_is_database_damaged(tmp_path: Path) -> None:
    path = tmp_path / "agentd.db"
    store = await Store.open(str(path))
    try:
        workspace = await store.workspace_for_path(str(tmp_path))
        session = await store.create_session(workspace.id, "t")
        await store.add_message(session.id, "user", "fine", None, "stop")
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("UPDATE messages SET text = CAST(x'ff' AS TEXT)")
        conn.close()
        with pytest.raises(DatabaseDamaged) as damaged:
            await store.list_messages(session.id)
    finally:
        await store.aclose()
    assert_names_damage(str(damaged.value), path)
