"""History: what a run costs, and how long a start after a crash takes, as the database grows.

A user's database grows with every run: messages, run records, the event log.
What one more run costs must not grow with it. Measured, in one run of the
suite, against an empty database as the reference:

- the daemon's CPU per one-word `echo` run (utime + stime of the daemon,
  from /proc, around batches of runs) at an empty database and at realistic
  sizes up to about 1 GB, a daemon on each, their batches taken in turns and
  the median batch reported;
- the time to start (spawn until the socket is ready) after a crash left 100
  runs unfinished in the largest database, against a start on an empty one,
  and the first start on a copy of it in schema version 2 (the upgrade);
- a run's time and CPU in a session of 10,000 messages, against a new session;
- what the database holds per run, in bytes, for a known prompt and answer.

The big databases are built by inserting rows directly (the shapes a daemon
writes: two messages, a run record and seven logged events per run, all in
one workspace, the events younger than a day so none are pruned), once, and
cached in a temporary directory for later runs (rebuilt after 12 hours, so
their events stay young). `--quick` builds only a small one.

    python -m bench.history [--quick]
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import msgpack

from agentctl.autostart import spawn_daemon
from agentctl.blocking import BlockingClient
from agentd.store import SCHEMA_VERSION
from agentd.store import _schema as store_schema

from ._common import Daemon, Row, bench_env, daemon

__all__ = ["run"]

SECTION = "history"

CACHE = Path(tempfile.gettempdir()) / "agentd-bench-history"
CACHE_MAX_AGE_S = 12 * 3600
# Runs of history per database: ~15 KB each, so the largest is about 1.2 GB.
SIZES = (0, 8_000, 80_000)
QUICK_SIZES = (0, 2_000)
RUNS_PER_SESSION = 20
PROMPT_CHARS = 200
ANSWER_CHARS = 800
# The prompt of the bytes-per-run row: long enough that its copies dominate a run's bookkeeping.
SIZED_PROMPT_CHARS = 2_000
INTERRUPTED_RUNS = 100
LONG_SESSION_MESSAGES = 10_000
CALL_TIMEOUT = 60.0
START_TIMEOUT = 300.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

_WORDS = "the quick brown fox jumps over a lazy dog while seven wizards quietly hex jolly bad mice".split()


def _text(i: int, chars: int) -> str:
    words: list[str] = []
    n = 0
    k = i
    while n < chars:
        word = _WORDS[k % len(_WORDS)]
        words.append(word)
        n += len(word) + 1
        k = k * 7 + 3
    return " ".join(words)[:chars]


# --- building a database of a given history


def _db_dir(runs: int, version: int) -> Path:
    return CACHE / f"v{version}-{runs}"


def _project(data_dir: Path) -> Path:
    path = data_dir / "project"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _create_empty(data_dir: Path) -> None:
    """The schema as the daemon under test creates it: start it once and stop it."""
    with daemon("--data-dir", str(data_dir)):
        pass


def _create_version_2(data_dir: Path) -> None:
    """The schema of version 2, as an agentd of before the upgrade left it."""
    db = sqlite3.connect(data_dir / "agentd.db", isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    for schema in (store_schema._SCHEMA, store_schema._SCHEMA_2):
        for statement in schema.split(";"):
            if statement.strip():
                db.execute(statement)
    db.execute("PRAGMA user_version = 2")
    db.close()


def _build(data_dir: Path, runs: int, version: int) -> dict[str, Any]:
    """A database holding `runs` runs of history in one workspace (at `_project(data_dir)`)."""
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    if version == 2:
        _create_version_2(data_dir)
    else:
        _create_empty(data_dir)
    project = str(_project(data_dir).resolve())
    db = sqlite3.connect(data_dir / "agentd.db", isolation_level=None)
    db.execute("PRAGMA synchronous = OFF")
    now = time.time()
    ws_id = f"ws_{uuid.uuid4().hex}"
    pack = msgpack.Packer(use_bin_type=True).pack
    db.execute("BEGIN")
    db.execute("INSERT INTO workspaces (id, path, created_at) VALUES (?, ?, ?)", (ws_id, project, now))
    seq = 0
    run_ids: list[str] = []
    batch_runs: list[tuple[Any, ...]] = []
    batch_messages: list[tuple[Any, ...]] = []
    batch_events: list[tuple[Any, ...]] = []
    session: dict[str, Any] = {}

    def flush() -> None:
        db.executemany(
            "INSERT INTO runs (id, workspace_id, session_id, model, prompt, state, message_id, complete,"
            " created_at, started_at, finished_at) VALUES (?, ?, ?, 'echo', ?, 'done', ?, ?, ?, ?, ?)",
            batch_runs,
        )
        db.executemany(
            "INSERT INTO messages (id, session_id, position, role, text, run_id, created_at, finish_reason)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, 'stop')",
            batch_messages,
        )
        db.executemany(
            "INSERT INTO events (workspace_id, seq, type, payload, created_at) VALUES (?, ?, ?, ?, ?)", batch_events
        )
        batch_runs.clear()
        batch_messages.clear()
        batch_events.clear()

    def event(kind: str, payload: dict[str, Any]) -> None:
        nonlocal seq
        seq += 1
        batch_events.append((ws_id, seq, kind, pack(payload), now))

    for i in range(runs):
        if i % RUNS_PER_SESSION == 0:
            if session:
                db.execute(
                    "INSERT INTO sessions (id, workspace_id, title, created_at, updated_at, message_count)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (session["id"], ws_id, session["title"], now, now, session["message_count"]),
                )
            session = {"id": f"ses_{uuid.uuid4().hex}", "title": f"session {i}", "message_count": 0}
            session_view = {"workspace_id": ws_id, "created_at": now, "updated_at": now, "busy": False}
            session_view |= {"prompt_tokens": 0, "completion_tokens": 0}
        run_id = uuid.uuid4().hex
        run_ids.append(run_id)
        prompt, answer = _text(i, PROMPT_CHARS), _text(i + 1, ANSWER_CHARS)
        user_id, assistant_id = f"msg_{uuid.uuid4().hex}", f"msg_{uuid.uuid4().hex}"
        position = session["message_count"]
        session["message_count"] += 2
        rc = {"session_id": session["id"], "run_id": run_id, "message_id": assistant_id}
        rc |= {"text": answer, "error": None, "cancelled": False}
        batch_runs.append((run_id, ws_id, session["id"], prompt, assistant_id, json.dumps(rc), now, now, now))
        for offset, (mid, role, text) in enumerate(((user_id, "user", prompt), (assistant_id, "assistant", answer))):
            batch_messages.append((mid, session["id"], position + offset, role, text, run_id, now))
        view = {"id": session["id"], "title": session["title"], "message_count": position, **session_view}
        message = {"session_id": session["id"], "run_id": run_id, "created_at": now}
        event("session.updated", view | {"busy": True})
        event("message.created", message | {"id": user_id, "role": "user", "text": prompt, "finish_reason": "stop"})
        event("run.started", {"session_id": session["id"], "run_id": run_id})
        event("message.created", message | {"id": assistant_id, "role": "assistant", "text": "", "finish_reason": None})
        event("message.updated", message | {"id": assistant_id, "role": "assistant", "text": answer})
        event("run.complete", rc)
        event("session.updated", view | {"message_count": position + 2})
        if len(batch_runs) >= 5_000:
            flush()
    flush()
    if session:
        db.execute(
            "INSERT INTO sessions (id, workspace_id, title, created_at, updated_at, message_count)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (session["id"], ws_id, session["title"], now, now, session["message_count"]),
        )
    db.execute("UPDATE workspaces SET seq_reserved = ? WHERE id = ?", (seq, ws_id))
    db.execute("COMMIT")
    db.close()
    info = {"runs": runs, "events": seq, "interruptible": run_ids[-INTERRUPTED_RUNS:], "built_at": now}
    (data_dir / "history.json").write_text(json.dumps(info))
    return info


def _database(runs: int, version: int = SCHEMA_VERSION) -> tuple[Path, dict[str, Any], float | None]:
    """The cached database of `runs` runs (built if missing or stale): its dir, its facts, seconds to build.

    `version`: the current schema, made by the daemon under test, or 2, for an upgrade.
    """
    data_dir = _db_dir(runs, version)
    facts = data_dir / "history.json"
    if facts.exists():
        info: dict[str, Any] = json.loads(facts.read_text())
        if time.time() - info["built_at"] < CACHE_MAX_AGE_S:
            return data_dir, info, None
    start = time.perf_counter()
    info = _build(data_dir, runs, version)
    return data_dir, info, time.perf_counter() - start


def _size_mb(data_dir: Path) -> float:
    return sum(p.stat().st_size for p in data_dir.glob("agentd.db*") if not p.name.endswith(".lock")) / 1e6


# --- measuring


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    # utime and stime: fields 14 and 15 of stat(5), 12 and 13 after the name.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class _Runner:
    def __init__(self, d: Daemon, project: Path) -> None:
        self.d = d
        self.client = BlockingClient.connect(str(d.socket_path))
        self.client.call("initialize", {"client_name": "bench-history"}, timeout=CALL_TIMEOUT)
        self.ws = self.client.call("workspace.open", {"path": str(project)}, timeout=CALL_TIMEOUT)["id"]

    def new_session(self) -> str:
        return str(self.client.call("session.create", {"workspace_id": self.ws}, timeout=CALL_TIMEOUT)["id"])

    def echo(self, session_id: str, prompt: str = "hello") -> None:
        params = {"workspace_id": self.ws, "session_id": session_id, "prompt": prompt, "model": "echo"}
        reply = self.client.call("agent.send", params, timeout=CALL_TIMEOUT)
        rc = self.client.call("run.wait", {"run_id": reply["run_id"]}, timeout=CALL_TIMEOUT)
        if rc["error"] is not None:
            raise RuntimeError(f"an echo run failed: {rc['error']}")

    def batch(self, session_id: str, n: int) -> tuple[float, float]:
        """Daemon CPU and wall time per run (ms), over `n` sequential one-word echo runs."""
        cpu, wall = _cpu_s(self.d.pid), time.perf_counter()
        for _ in range(n):
            self.echo(session_id)
        return (_cpu_s(self.d.pid) - cpu) / n * 1000, (time.perf_counter() - wall) / n * 1000

    def close(self) -> None:
        self.client.close()


def _interleaved(points: list[tuple[_Runner, str]], rounds: int, n: int) -> list[dict[str, float]]:
    """Per run, at each (runner, session): the median over `rounds` batches of `n` runs, taken in turns.

    In turns, so that whatever else the machine does weighs on every point alike.
    """
    for runner, session_id in points:
        for _ in range(3):
            runner.echo(session_id)  # the first prompt's one-time work is not a run's cost
    samples: list[list[tuple[float, float]]] = [[] for _ in points]
    for _ in range(rounds):
        for i, (runner, session_id) in enumerate(points):
            samples[i].append(runner.batch(session_id, n))
    return [
        {
            "cpu_ms": statistics.median(cpu for cpu, _ in batches),
            "wall_ms": statistics.median(wall for _, wall in batches),
            "n": rounds * n,
        }
        for batches in samples
    ]


def _per_run_curve(sizes: tuple[int, ...], rounds: int, n: int) -> list[dict[str, Any]]:
    """A daemon on each database at once, their runs measured in turns."""
    databases = [_database(runs) for runs in sizes]
    with ExitStack() as stack:
        points = []
        for data_dir, _info, _built in databases:
            d = stack.enter_context(daemon("--data-dir", str(data_dir)))
            runner = _Runner(d, _project(data_dir))
            stack.callback(runner.close)
            points.append((runner, runner.new_session()))
        measured = _interleaved(points, rounds, n)
    return [
        {**result, "runs": runs, "events": info["events"], "size_mb": _size_mb(data_dir), "built_s": built_s}
        for result, runs, (data_dir, info, built_s) in zip(measured, sizes, databases, strict=True)
    ]


def _interrupt(data_dir: Path, run_ids: list[str]) -> None:
    """Leave `run_ids` as a kill -9 mid-stream would: running, their answers unfinished, the workspace live."""
    db = sqlite3.connect(data_dir / "agentd.db", isolation_level=None)
    db.execute("BEGIN")
    for run_id in run_ids:
        db.execute("UPDATE runs SET state = 'running', complete = NULL, finished_at = NULL WHERE id = ?", (run_id,))
        db.execute(
            "UPDATE messages SET finish_reason = NULL WHERE id = (SELECT message_id FROM runs WHERE id = ?)", (run_id,)
        )
    db.execute("UPDATE workspaces SET live = 1")
    db.execute("COMMIT")
    db.close()


def _start_s(data_dir: Path) -> float:
    """Seconds from spawning agentd until it listens (allowed far longer than agentctl's 15 s)."""
    workdir = Path(tempfile.mkdtemp(prefix="agbh", dir="/tmp"))
    try:
        start = time.perf_counter()
        proc = spawn_daemon(
            workdir / "agentd.sock",
            ("--data-dir", str(data_dir)),
            log_path=workdir / "agentd.log",
            timeout=START_TIMEOUT,
            env=bench_env(workdir),
        )
        elapsed = time.perf_counter() - start
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return elapsed


def _crash_start(runs: int) -> dict[str, Any]:
    data_dir, info, _ = _database(runs)
    empty = Path(tempfile.mkdtemp(prefix="agbh", dir="/tmp"))
    try:
        _create_empty(empty)
        baseline = min(_start_s(empty) for _ in range(3))
    finally:
        shutil.rmtree(empty, ignore_errors=True)
    _start_s(data_dir)  # the page cache warm, as after a crash the file mostly is
    crashed = []
    for _ in range(3):
        _interrupt(data_dir, info["interruptible"])
        crashed.append(_start_s(data_dir))
    return {
        "start_s": min(crashed),
        "start_s_all": crashed,
        "empty_start_s": baseline,
        "size_mb": _size_mb(data_dir),
        "interrupted": INTERRUPTED_RUNS,
    }


def _upgrade_start(runs: int) -> dict[str, Any]:
    """The first start on a copy of a version 2 database: the schema migrates before the daemon is ready."""
    source, _info, _ = _database(runs, 2)
    copy = Path(tempfile.mkdtemp(prefix="agbh", dir="/tmp"))
    try:
        for part in source.glob("agentd.db*"):
            if not part.name.endswith(".lock"):
                shutil.copyfile(part, copy / part.name)
        _project(copy)
        size_mb = _size_mb(copy)
        return {"start_s": _start_s(copy), "size_mb": size_mb}
    finally:
        shutil.rmtree(copy, ignore_errors=True)


def _long_session(rounds: int, n: int) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix="agbh", dir="/tmp"))
    try:
        with daemon("--data-dir", str(data_dir)) as d:
            runner = _Runner(d, _project(data_dir))
            try:
                fresh = runner.new_session()
                long = runner.new_session()
                _fill_session(data_dir, long, LONG_SESSION_MESSAGES)
                short, at_10k = _interleaved([(runner, fresh), (runner, long)], rounds, n)
            finally:
                runner.close()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    return {"new_session": short, "long_session": at_10k, "messages": LONG_SESSION_MESSAGES}


def _fill_session(data_dir: Path, session_id: str, count: int) -> None:
    """`count` messages in a session, written beside the running daemon (WAL lets both in)."""
    db = sqlite3.connect(data_dir / "agentd.db", isolation_level=None, timeout=30)
    now = time.time()
    rows = [
        (f"msg_{uuid.uuid4().hex}", session_id, i, ("user", "assistant")[i % 2], _text(i, 300), None, now, "stop")
        for i in range(count)
    ]
    db.execute("BEGIN IMMEDIATE")
    db.executemany(
        "INSERT INTO messages (id, session_id, position, role, text, run_id, created_at, finish_reason)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    db.execute("UPDATE sessions SET message_count = ? WHERE id = ?", (count, session_id))
    db.execute("COMMIT")
    db.close()


def _bytes_per_run(n: int) -> dict[str, Any]:
    """Database bytes in use per run, for a prompt of SIZED_PROMPT_CHARS and its echo."""
    data_dir = Path(tempfile.mkdtemp(prefix="agbh", dir="/tmp"))
    prompt = _text(1, SIZED_PROMPT_CHARS)
    try:
        with daemon("--data-dir", str(data_dir)) as d:
            runner = _Runner(d, _project(data_dir))
            try:
                session = runner.new_session()
                runner.echo(session, prompt)
                before = _used_bytes(data_dir)
                for _ in range(n):
                    runner.echo(session, prompt)
            finally:
                runner.close()
        # Stopped: the event log is all written.
        after = _used_bytes(data_dir)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    return {"bytes_per_run": (after - before) / n, "text_chars": 2 * len(prompt), "n": n}


def _used_bytes(data_dir: Path) -> int:
    """Bytes of the database's pages in use (free pages not counted)."""
    db = sqlite3.connect(data_dir / "agentd.db", timeout=30)
    try:
        (pages,) = db.execute("PRAGMA page_count").fetchone()
        (free,) = db.execute("PRAGMA freelist_count").fetchone()
        (page_size,) = db.execute("PRAGMA page_size").fetchone()
        return int((pages - free) * page_size)
    finally:
        db.close()


# --- the rows


def _ratio(value: float, reference: float) -> str:
    return f"{value / reference:.2f}x" if reference > 0 else "n/a"


def _rows(r: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    curve = r["per_run"]
    base = curve[0]
    worst = max(point["cpu_ms"] / base["cpu_ms"] for point in curve) if base["cpu_ms"] > 0 else float("nan")
    for point in curve:
        where = (
            "empty database"
            if point["runs"] == 0
            else f"{point['size_mb']:,.0f} MB database ({point['runs']:,} runs, {point['events']:,} logged events)"
        )
        rows.append(
            Row(
                SECTION,
                f"echo run, daemon CPU per run: {where}",
                f"{point['cpu_ms']:.2f} ms ({_ratio(point['cpu_ms'], base['cpu_ms'])}); "
                f"{point['wall_ms']:.1f} ms wall; {point['n']} runs",
                "flat (<= 1.3x empty)" if point["runs"] else "",
                worst <= 1.3 if point is curve[-1] else None,
            )
        )
    crash = r["crash_start"]
    rows.append(
        Row(
            SECTION,
            f"start after a crash: {crash['size_mb']:,.0f} MB, {crash['interrupted']} interrupted runs",
            f"{crash['start_s']:.2f} s (empty database: {crash['empty_start_s']:.2f} s, "
            f"{_ratio(crash['start_s'], crash['empty_start_s'])})",
            "< 1 s",
            crash["start_s"] < 1.0,
        )
    )
    upgrade = r["upgrade_start"]
    rows.append(
        Row(
            SECTION,
            f"first start on a {upgrade['size_mb']:,.0f} MB database of schema version 2 (the upgrade)",
            f"{upgrade['start_s']:.2f} s",
            "< 5 s (agentctl waits 15 s)",
            upgrade["start_s"] < 5.0,
        )
    )
    long = r["long_session"]
    new, at = long["new_session"], long["long_session"]
    rows.append(
        Row(
            SECTION,
            f"echo run in a session of {long['messages']:,} messages",
            f"{at['wall_ms']:.1f} ms wall, {at['cpu_ms']:.2f} ms CPU (new session: {new['wall_ms']:.1f} ms, "
            f"{new['cpu_ms']:.2f} ms; {_ratio(at['wall_ms'], new['wall_ms'])} wall)",
            "flat (<= 1.3x)",
            at["wall_ms"] <= 1.3 * new["wall_ms"],
        )
    )
    size = r["bytes_per_run"]
    rows.append(
        Row(
            SECTION,
            f"database bytes held per run ({SIZED_PROMPT_CHARS:,}-char prompt, echoed)",
            f"{size['bytes_per_run']:,.0f} B for {size['text_chars']} chars of prompt and answer",
        )
    )
    return rows


def run(quick: bool = False) -> tuple[dict[str, Any], list[Row]]:
    sizes = QUICK_SIZES if quick else SIZES
    rounds, n = (2, 5) if quick else (5, 40)
    results: dict[str, Any] = {"per_run": _per_run_curve(sizes, rounds, n)}
    results["crash_start"] = _crash_start(sizes[-1])
    results["upgrade_start"] = _upgrade_start(sizes[-1])
    results["long_session"] = _long_session(rounds, n)
    results["bytes_per_run"] = _bytes_per_run(20 if quick else 100)
    return results, _rows(results)


def _main() -> None:
    results, rows = run(quick="--quick" in sys.argv[1:])
    for row in rows:
        mark = {True: "ok", False: "FAIL", None: ""}[row.ok]
        print(f"{row.what:80} {row.value:70} {row.target:10} {mark}")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    _main()
