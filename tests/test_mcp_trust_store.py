"""The store keeps the project MCP files the user trusted, by path and digest, across restarts and migrations."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agentd.store import SCHEMA_VERSION, DatabaseDamaged, Store
from agentd.store._schema import _MIGRATIONS

FILE = "/home/u/project/.agentd/config.toml"


async def test_a_file_is_untrusted_until_trusted_and_a_new_trust_replaces_the_old(tmp_path: Path) -> None:
    store = await Store.open(str(tmp_path / "agentd.db"))
    try:
        assert await store.mcp_trusted_digest(FILE) is None
        await store.trust_mcp(FILE, "a" * 64)
        assert await store.mcp_trusted_digest(FILE) == "a" * 64
        assert await store.mcp_trusted_digest("/elsewhere/.agentd/config.toml") is None
        await store.trust_mcp(FILE, "b" * 64)
        assert await store.mcp_trusted_digest(FILE) == "b" * 64
    finally:
        await store.aclose()


async def test_trust_survives_reopening_the_database(tmp_path: Path) -> None:
    path = str(tmp_path / "agentd.db")
    store = await Store.open(path)
    await store.trust_mcp(FILE, "c" * 64)
    await store.aclose()
    store = await Store.open(path)
    try:
        assert await store.mcp_trusted_digest(FILE) == "c" * 64
    finally:
        await store.aclose()


def database_of_version(path: Path, version: int) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    for schema in _MIGRATIONS[:version]:
        for statement in schema.split(";"):
            if statement.strip():
                conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {version}")
    conn.close()


async def test_a_version_4_database_migrates_to_hold_trust_and_keeps_its_workspaces(tmp_path: Path) -> None:
    path = tmp_path / "agentd.db"
    database_of_version(path, 4)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("INSERT INTO workspaces (id, path, created_at) VALUES ('ws_old', ?, 0)", (str(tmp_path),))
    conn.close()
    store = await Store.open(str(path))
    try:
        assert (await store.workspace_for_path(str(tmp_path))).id == "ws_old"
        assert await store.mcp_trusted_digest(FILE) is None
        await store.trust_mcp(FILE, "d" * 64)
        assert await store.mcp_trusted_digest(FILE) == "d" * 64
    finally:
        await store.aclose()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,) == (5,)
    conn.close()


async def test_a_version_5_database_without_its_trust_table_is_damaged(tmp_path: Path) -> None:
    path = tmp_path / "agentd.db"
    database_of_version(path, 5)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP TABLE mcp_trust")
    conn.close()
    with pytest.raises(DatabaseDamaged) as damaged:
        await Store.open(str(path))
    assert "table mcp_trust is missing" in str(damaged.value)
