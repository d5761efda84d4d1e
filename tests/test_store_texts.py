"""Each text held once: a prompt and an answer live in their messages, and everything else reads them there.

The run record and the event log hold what they are about (ids, outcomes)
without the text; `run.get`, `run.wait` and a replay put it back.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import msgpack
import trio
from support import WAIT, Daemon, DaemonFactory, Workspace, open_workspace

from agentctl.client import Client
from agentd.store import SCHEMA_VERSION, Store
from agentd.store._schema import _SCHEMA, _SCHEMA_2, APPLICATION_ID


def database(env: dict[str, str]) -> Path:
    return Path(env["XDG_DATA_HOME"]) / "agentd" / "agentd.db"


def copies(db: Path, text: str) -> int:
    """How many times `text` is held in the database, in any table."""
    conn = sqlite3.connect(db)
    try:
        count = 0
        for (message_text,) in conn.execute("SELECT text FROM messages"):
            count += message_text.count(text)
        for row in conn.execute("SELECT * FROM runs"):
            count += sum(str(value).count(text) for value in row if value is not None)
        for (payload,) in conn.execute("SELECT payload FROM events"):
            count += json.dumps(msgpack.unpackb(payload)).count(text)
        return count
    finally:
        conn.close()


async def replay_all(client: Client, workspace_id: str) -> list[dict[str, Any]]:
    sub = await client.call("events.subscribe", {"workspace_id": workspace_id, "since": 0})
    replayed: list[dict[str, Any]] = []
    with trio.fail_after(WAIT):
        while len(replayed) < sub["replayed"]:
            _method, params = await client.notifications.receive()
            if params[0]["subscription_id"] == sub["subscription_id"]:
                replayed.append(params[0])
    return replayed


async def test_a_run_holds_its_prompt_and_answer_once_and_reads_back_in_full(
    start_daemon: DaemonFactory, env: dict[str, str], project: Path
) -> None:
    prompt = "a prompt worth keeping once " * 20
    daemon = start_daemon()
    async with daemon.client() as client:
        ws = await open_workspace(client, project)
        session_id = await ws.new_session()
        reply = await ws.send(session_id, prompt)
        live = await ws.events.until_complete(reply["run_id"])
        published = [e for e in ws.events.seen if e["type"] in ("message.created", "message.updated", "run.complete")]
    daemon.terminate()
    # echo answers with the prompt: one copy in the user message, one in the answer.
    assert copies(database(env), prompt.strip()) == 2

    again = start_daemon()
    async with again.client() as client:
        opened = await client.call("workspace.open", {"path": str(project)})
        run = await client.call("run.get", {"run_id": reply["run_id"]})
        assert run["prompt"] == prompt and run["complete"] == live
        assert await client.call("run.wait", {"run_id": reply["run_id"]}) == live
        replayed = {e["seq"]: e for e in await replay_all(client, opened["id"])}
    # Replayed exactly as published, texts and all.
    for event in published:
        assert replayed[event["seq"]]["payload"] == event["payload"]


async def test_a_deleted_sessions_runs_keep_their_texts_and_its_replayed_messages_carry_none(
    start_daemon: DaemonFactory, project: Path
) -> None:
    daemon = start_daemon()
    async with daemon.client() as client:
        ws = await open_workspace(client, project)
        session_id = await ws.new_session()
        reply = await ws.send(session_id, "soon deleted")
        live = await ws.events.until_complete(reply["run_id"])
    # A clean stop writes the whole event log before the session goes.
    daemon.terminate()
    async with start_daemon().client() as client:
        ws = await open_workspace(client, project)
        await client.call("session.delete", {"workspace_id": ws.id, "session_id": session_id})
        run = await client.call("run.get", {"run_id": reply["run_id"]})
        assert run["prompt"] == "soon deleted" and run["complete"] == live
        replayed = await replay_all(client, ws.id)
        messages = [e["payload"] for e in replayed if e["type"] in ("message.created", "message.updated")]
        assert messages and all(m["text"] == "" for m in messages)
        completes = [e["payload"] for e in replayed if e["type"] == "run.complete"]
        assert completes == [live]


def _v2_database(path: Path, workspace_path: str) -> dict[str, str]:
    """A database as version 2 wrote it: each prompt 3 times, each answer 5."""
    conn = sqlite3.connect(path, isolation_level=None)
    for schema in (_SCHEMA, _SCHEMA_2):
        for statement in schema.split(";"):
            if statement.strip():
                conn.execute(statement)
    ids = {"ws": "ws_old", "session": "ses_old", "run": "run_old", "user": "msg_u", "assistant": "msg_a"}
    prompt, answer = "the old prompt", "the old answer"
    rc: dict[str, Any] = {"session_id": ids["session"], "run_id": ids["run"], "message_id": ids["assistant"]}
    rc["text"] = answer
    rc |= {"error": None, "cancelled": False}
    conn.execute(
        "INSERT INTO workspaces (id, path, created_at, seq_reserved) VALUES (?, ?, 0, 3)", (ids["ws"], workspace_path)
    )
    conn.execute(
        "INSERT INTO sessions (id, workspace_id, title, created_at, updated_at, message_count)"
        " VALUES (?, ?, 't', 0, 0, 2)",
        (ids["session"], ids["ws"]),
    )
    turns = ((ids["user"], "user", prompt), (ids["assistant"], "assistant", answer))
    for position, (mid, role, text) in enumerate(turns):
        conn.execute(
            "INSERT INTO messages (id, session_id, position, role, text, run_id, created_at, finish_reason)"
            " VALUES (?, ?, ?, ?, ?, ?, 0, 'stop')",
            (mid, ids["session"], position, role, text, ids["run"]),
        )
    conn.execute(
        "INSERT INTO runs (id, workspace_id, session_id, model, prompt, state, text, message_id, complete, created_at)"
        " VALUES (?, ?, ?, 'echo', ?, 'done', ?, ?, ?, 0)",
        (ids["run"], ids["ws"], ids["session"], prompt, answer, ids["assistant"], json.dumps(rc)),
    )
    message = {"session_id": ids["session"], "run_id": ids["run"], "created_at": 0, "finish_reason": "stop"}
    logged = [
        ("message.created", message | {"id": ids["user"], "role": "user", "text": prompt}),
        ("message.updated", message | {"id": ids["assistant"], "role": "assistant", "text": answer}),
        ("run.complete", rc),
    ]
    for seq, (kind, payload) in enumerate(logged, 1):
        conn.execute(
            "INSERT INTO events (workspace_id, seq, type, payload, created_at) VALUES (?, ?, ?, ?, 0)",
            (ids["ws"], seq, kind, msgpack.packb(payload)),
        )
    conn.execute("PRAGMA user_version = 2")
    conn.close()
    return ids | {"prompt": prompt, "answer": answer, "rc": json.dumps(rc)}


async def test_a_version_2_database_migrates_marked_and_reads_the_same(tmp_path: Path) -> None:
    path = tmp_path / "agentd.db"
    old = _v2_database(path, str(tmp_path))
    store = await Store.open(str(path))
    try:
        run = await store.get_run(old["run"])
        assert run is not None and run.prompt == old["prompt"] and run.complete is not None
        assert run.complete.text == old["answer"] and run.complete.message_id == old["assistant"]
        replay = await store.events_after(old["ws"], 0, 3)
        assert [e.payload["text"] for e in replay.events] == [old["prompt"], old["answer"], old["answer"]]
    finally:
        await store.aclose()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    # The old run keeps its record as it was, but for the answer's third copy.
    prompt, text, complete = conn.execute("SELECT prompt, text, complete FROM runs").fetchone()
    assert (prompt, text, complete) == (old["prompt"], None, old["rc"])
    conn.close()


async def test_a_queued_runs_prompt_is_kept_until_its_message_holds_it(tmp_path: Path) -> None:
    from agentd.store import RunRecord

    path = tmp_path / "agentd.db"
    store = await Store.open(str(path))
    try:
        workspace = await store.workspace_for_path(str(tmp_path))
        session = await store.create_session(workspace.id, "t")
        await store.create_run(RunRecord("r1", workspace.id, session.id, "wait for me", "echo", 0.0), 0)
        record = await store.get_run("r1")
        assert record is not None and record.prompt == "wait for me"
        await store.start_run("r1")
        await store.add_message(session.id, "user", "wait for me", "r1", "stop")
        record = await store.get_run("r1")
        assert record is not None and record.prompt == "wait for me"
        conn = sqlite3.connect(path)
        assert conn.execute("SELECT prompt FROM runs WHERE id = 'r1'").fetchone() == ("",)
        conn.close()
    finally:
        await store.aclose()


async def test_a_model_that_ignores_history_never_reads_it(daemon: Daemon, ws: Workspace, env: dict[str, str]) -> None:
    session_id = await ws.new_session()
    first = await ws.send(session_id, "an earlier turn")
    await ws.events.until_complete(first["run_id"])
    # The earlier answer can no longer be read as text: a run that read the
    # conversation would fail on it.
    conn = sqlite3.connect(database(env), isolation_level=None)
    conn.execute("UPDATE messages SET text = CAST(x'ff' AS TEXT) WHERE role = 'assistant'")
    conn.close()
    for model, prompt in (("echo", "still answered"), ("scripted", json.dumps({"chunks": ["scripted too"]}))):
        reply = await ws.send(session_id, prompt, model=model)
        rc = await ws.events.until_complete(reply["run_id"])
        assert rc["error"] is None, model


async def test_a_provider_model_is_given_the_conversation_so_far(
    start_daemon: DaemonFactory, project: Path, env: dict[str, str]
) -> None:
    from loopback_http import Streamed, start_loopback_server
    from test_models_e2e import HELLO, configure

    async with trio.open_nursery() as nursery:
        server = await start_loopback_server(nursery)
        configure(env, server.url)
        daemon = start_daemon()
        server.script(Streamed([HELLO]), Streamed([HELLO]))
        async with daemon.client() as client:
            ws = await open_workspace(client, project)
            session_id = await ws.new_session()
            for prompt in ("first question", "second question"):
                reply = await ws.send(session_id, prompt, model="quick")
                assert (await ws.events.until_complete(reply["run_id"]))["error"] is None
        assert [m for m in server.requests[1].json["messages"] if m["role"] != "system"] == [
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "Hello there"},
            {"role": "user", "content": "second question"},
        ]
        nursery.cancel_scope.cancel()
