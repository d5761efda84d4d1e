"""Faults that need to own the daemon: kill -9 and start it again, hold its database's write lock, fill its disk.

`OwnedDaemon` is an agentd this process starts, kills and starts again on
one socket and one database. `WriteLock` is another process holding the
database's write lock (`BEGIN IMMEDIATE`), released or killed on demand.
`SmallDisk` is a tmpfs of a few MiB in a mount namespace of its own, for a
database to fill. `kill_loop` is the driver: traffic with runs, tool calls
and permission requests in flight, SIGKILL, restart, resubscribe with
`since`, and the promise checked after each restart.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import attrs
import trio

from agentctl.autostart import wait_ready
from agentctl.client import Client, ConnectionLost, RpcError, event_params, open_client

from ._ledger import Ledger
from ._stats import Stats

__all__ = [
    "INTEGRITY_OK",
    "OwnedDaemon",
    "SmallDisk",
    "StartFailed",
    "Stats",
    "WriteLock",
    "integrity_check",
    "kill_loop",
]

READY_TIMEOUT = 30.0  # a start on two loaded cores, with the database's recovery after a kill
STOP_TIMEOUT = 15.0
INTEGRITY_OK = "ok"
INTERRUPTED = "interrupted: daemon restarted"  # docs/protocol.md §9.3


class StartFailed(RuntimeError):
    """The daemon exited, or never said it was ready; `status` is its exit status, `said` its last life's log."""

    def __init__(self, status: int | None, said: str) -> None:
        super().__init__(f"agentd did not start (status {status}): {said}")
        self.status = status
        self.said = said


def _repro(seed: int) -> str:
    return f"seed {seed}: AGENTD_STRESS_SEED={seed} pytest tests/test_process_faults.py"


# --- the daemon ------------------------------------------------------------------------------------


@attrs.define
class OwnedDaemon:
    """An agentd this process starts and kills, on one socket and one database, with a log per life.

    `prefix` is a command the daemon runs under (`nsenter` into a mount
    namespace, for `SmallDisk`); the paths are as the daemon sees them.
    """

    socket_path: Path
    data_dir: Path
    log_dir: Path
    env: dict[str, str]
    args: tuple[str, ...] = ()
    prefix: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = None
    lives: int = 0

    @property
    def db_path(self) -> Path:
        return self.data_dir / "agentd.db"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def log_path(self, life: int) -> Path:
        return self.log_dir / f"agentd-{life}.log"

    def log(self) -> str:
        """Every life's log, oldest first."""
        parts = []
        for life in range(self.lives):
            path = self.log_path(life)
            if path.exists():
                parts.append(f"--- life {life} ---\n" + path.read_text(errors="replace"))
        return "\n".join(parts)

    def client(self) -> Any:
        return open_client(self.socket_path)

    async def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.proc = await trio.to_thread.run_sync(self._spawn)

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_path(self.lives)
        self.lives += 1
        read_fd, write_fd = os.pipe()
        try:
            with open(log_path, "ab") as log:
                proc = subprocess.Popen(
                    [
                        *self.prefix,
                        sys.executable,
                        "-m",
                        "agentd",
                        "--socket",
                        str(self.socket_path),
                        "--data-dir",
                        str(self.data_dir),
                        "--ready-fd",
                        str(write_fd),
                        "--log-file",
                        str(log_path),
                        *self.args,
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    pass_fds=(write_fd,),
                    start_new_session=True,
                    env=self.env,
                )
        finally:
            os.close(write_fd)
        try:
            ready = wait_ready(read_fd, READY_TIMEOUT)
        finally:
            os.close(read_fd)
        if not ready:
            # It closed the pipe as it exited, or hung: reaped, or killed (status None).
            status: int | None
            try:
                status = proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                status = None
                proc.kill()
                proc.wait()
            raise StartFailed(status, log_path.read_text(errors="replace") if log_path.exists() else "")
        return proc

    async def kill(self) -> None:
        """SIGKILL, and wait for it: nothing of the daemon runs any more."""
        proc = self.proc
        assert proc is not None
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        await trio.to_thread.run_sync(proc.wait)

    async def restart(self) -> None:
        await self.kill()
        await self.start()

    async def stop(self) -> int:
        """SIGTERM, its exit status; killed if it outlasts STOP_TIMEOUT (then the status says so)."""
        proc = self.proc
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return await trio.to_thread.run_sync(lambda: proc.wait(timeout=STOP_TIMEOUT))
        except subprocess.TimeoutExpired:
            proc.kill()
            await trio.to_thread.run_sync(proc.wait)
            return -signal.SIGKILL


# --- the database from outside ----------------------------------------------------------------------

_INTEGRITY_SCRIPT = """
import sqlite3, sys
conn = sqlite3.connect("file:" + sys.argv[1] + "?mode=ro", uri=True, timeout=10)
print("\\n".join(str(row[0]) for row in conn.execute("PRAGMA integrity_check")))
"""


async def integrity_check(db_path: Path, prefix: tuple[str, ...] = ()) -> str:
    """`PRAGMA integrity_check` of the database, opened read-only by another process: "ok", or SQLite's report."""
    with trio.fail_after(30):
        result = await trio.run_process(
            [*prefix, sys.executable, "-c", _INTEGRITY_SCRIPT, str(db_path)],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    if result.returncode != 0:
        return f"integrity_check could not run (status {result.returncode}): {result.stderr.decode(errors='replace')}"
    return result.stdout.decode(errors="replace").strip()


_HOLDER_SCRIPT = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
conn.execute("BEGIN IMMEDIATE")
if sys.argv[2] == "dirty":
    # More than SQLite's page cache holds: uncommitted pages spill into the WAL.
    conn.execute("PRAGMA cache_size = 100")
    conn.execute("CREATE TABLE holder_scratch (blob BLOB)")
    for _ in range(64):
        conn.execute("INSERT INTO holder_scratch VALUES (zeroblob(65536))")
print("held", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
conn.close()
print("released", flush=True)
"""


class WriteLock:
    """Another process holding the database's write lock, as an open `sqlite3` shell in a transaction does.

    `BEGIN IMMEDIATE` takes the lock every writer needs; the daemon's readers
    go on, its writes wait out the store's busy timeout and fail.
    """

    def __init__(self, process: trio.Process, lines: trio.abc.ReceiveStream) -> None:
        self.process = process
        self._lines = lines

    @classmethod
    async def hold(cls, db_path: Path, prefix: tuple[str, ...] = (), *, dirty: bool = False) -> WriteLock:
        """Take the lock; `dirty`: and write 4 MiB the transaction never commits, some of it into the WAL."""
        process = await trio.lowlevel.open_process(
            [*prefix, sys.executable, "-c", _HOLDER_SCRIPT, str(db_path), "dirty" if dirty else "clean"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert process.stdout is not None
        lock = cls(process, process.stdout)
        line = await lock._line()
        if line != "held":
            await lock.kill()
            raise RuntimeError(f"could not take the write lock of {db_path}: {line!r}")
        return lock

    async def _line(self) -> str:
        data = b""
        with trio.fail_after(30):
            while not data.endswith(b"\n"):
                chunk = await self._lines.receive_some(64)
                if not chunk:
                    break
                data += chunk
        return data.decode().strip()

    async def release(self) -> None:
        """ROLLBACK, and the holder exits: the lock is free."""
        assert self.process.stdin is not None
        await self.process.stdin.send_all(b"release\n")
        line = await self._line()
        with trio.fail_after(30):
            await self.process.wait()
        if line != "released":
            raise RuntimeError(f"the lock holder did not release: {line!r}")

    async def kill(self) -> None:
        """SIGKILL the holder in its transaction: the system drops its locks with it."""
        self.process.kill()
        with trio.fail_after(30):
            await self.process.wait()


# --- a disk to fill ----------------------------------------------------------------------------------


class SmallDisk:
    """A tmpfs of `size` bytes at `mountpoint`, seen only in a mount namespace a holder process keeps.

    Nothing outside the namespace sees the mount, and it goes with the
    holder (which ends when its stdin closes, so also when the test dies).
    Its files are reached from outside through `/proc/PID/root` (`outside`),
    SQLite through `prefix` (nsenter), since SQLite resolves that link to
    the path it names in our own namespace.
    """

    def __init__(self, process: trio.Process, mountpoint: Path, prefix: tuple[str, ...]) -> None:
        self.process = process
        self.mountpoint = mountpoint
        self.prefix = prefix

    @staticmethod
    def unavailable() -> str | None:
        """Why no SmallDisk can be made here, or None."""
        for tool in ("unshare", "nsenter", "mount"):
            if shutil.which(tool) is None:
                return f"{tool} is not installed: a small tmpfs of its own cannot be mounted"
        return None

    @classmethod
    async def mount(cls, mountpoint: Path, size: int) -> SmallDisk:
        """The mount, or RuntimeError saying precisely why not (no privilege, no user namespaces...)."""
        mountpoint.mkdir(parents=True, exist_ok=True)
        as_user = ["--map-root-user"] if os.getuid() != 0 else []
        script = 'mount -t tmpfs -o "size=$2,mode=0700" agentd-small-disk "$1" && echo mounted && exec cat'
        process = await trio.lowlevel.open_process(
            ["unshare", "--mount", "--propagation", "private", *as_user, "sh", "-c", script, "sh", str(mountpoint)]
            + [str(size)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert process.stdout is not None and process.stderr is not None
        data = b""
        with trio.fail_after(30):
            while not data.endswith(b"\n"):
                chunk = await process.stdout.receive_some(64)
                if not chunk:
                    break
                data += chunk
        if data.strip() != b"mounted":
            with trio.fail_after(30):
                await process.wait()
                err = await process.stderr.receive_some(4096)
            raise RuntimeError(
                f"unshare --mount and mount -t tmpfs failed (status {process.returncode}): "
                + err.decode(errors="replace").strip()
            )
        ns = f"/proc/{process.pid}/ns"
        user = [f"--user={ns}/user", "--preserve-credentials"] if as_user else []
        return cls(process, mountpoint, ("nsenter", *user, f"--mount={ns}/mnt", "--"))

    def outside(self, path: Path) -> Path:
        """`path` (under the mountpoint) as this process reaches it."""
        return Path(f"/proc/{self.process.pid}/root") / path.relative_to("/")

    def fill(self, name: str = "filler") -> int:
        """Write a file until the disk is full; how many bytes it took."""
        written = 0
        block = b"\0" * 65536
        with open(self.outside(self.mountpoint / name), "ab", buffering=0) as f:
            try:
                while True:
                    written += f.write(block) or 0
            except OSError as exc:
                if exc.errno != 28:  # ENOSPC: what this is for
                    raise
            # The last pages: a block the size of what is left.
            for size in (4096, 512, 1):
                try:
                    while True:
                        written += f.write(b"\0" * size) or 0
                except OSError:
                    pass
        return written

    def free(self, name: str = "filler") -> None:
        self.outside(self.mountpoint / name).unlink()

    async def aclose(self) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.aclose()
        with trio.fail_after(30):
            await self.process.wait()


# --- the kill loop ------------------------------------------------------------------------------------


def _script(rng: random.Random, kind: str, tag: str) -> str:
    if kind == "finish":
        return json.dumps({"chunks": [f"{tag} ", "done"], "delay_ms": rng.choice([0, 5, 30])})
    if kind == "hang":
        return json.dumps({"chunks": [f"{tag} ", "streaming"], "delay_ms": rng.choice([0, 20]), "hang": True})
    if kind == "fail":
        return json.dumps({"chunks": [f"{tag} "], "error": "scripted failure"})
    # Tool steps: a write (asked about unless the run allows it), then a bash that appends, then text.
    return json.dumps(
        {
            "steps": [
                {"tool_calls": [{"name": "write", "arguments": {"path": f"out/{tag}.txt", "content": tag + "\n"}}]},
                {"tool_calls": [{"name": "bash", "arguments": {"command": f"echo more >> out/{tag}.txt"}}]},
                {"chunks": [f"{tag} wrote"]},
            ]
        }
    )


@attrs.define
class _Loop:
    """The kill loop's bookkeeping across the daemon's lives.

    What the `Ledger` checks as events come holds across a restart too, and
    is its: at most one run.complete per run, nothing for a run after it, a
    permission request resolved at most once, a session's runs one at a time
    and in the order accepted. It tells events apart by (workspace, seq),
    and seqs are the event log's: a new life hands out seqs above every one
    the last could have (docs/protocol.md §9.4), so an event replayed with
    `since` after it was seen live counts once, and a RunComplete the
    restart logs comes after every event of its run's last life. What it
    leaves to us: a replay after a kill opens with a `lost` gap (the
    protocol's, not a fault: checked here against the records), and a
    request the kill cut short is never resolved (so `Ledger.settle` is not
    for a loop of kills).
    """

    seed: int
    ledger: Ledger
    violations: list[str] = attrs.Factory(list)
    counts: dict[str, int] = attrs.Factory(dict)
    accepted: dict[str, str] = attrs.Factory(dict)  # run_id -> workspace_id
    since: dict[str, int] = attrs.Factory(dict)  # workspace_id -> the last seq received, gaps aside
    sessions: dict[str, list[str]] = attrs.Factory(dict)  # workspace_id -> its sessions
    messages: dict[tuple[str, str], list[dict[str, Any]]] = attrs.Factory(dict)  # before the last kill
    milestones: dict[str, trio.Event] = attrs.Factory(dict)  # event type -> what the kill waits for
    projects: dict[str, Path] = attrs.Factory(dict)  # workspace_id -> its directory
    tool_runs: set[str] = attrs.Factory(set)  # runs whose script writes out/RUN_ID.txt

    def count(self, what: str, n: int = 1) -> None:
        self.counts[what] = self.counts.get(what, 0) + n

    def violation(self, text: str) -> None:
        self.violations.append(f"{text} ({_repro(self.seed)})")

    def observe(self, workspace_id: str, event: dict[str, Any]) -> None:
        self.count("events")
        if event["type"] == "events.gap":
            if event["payload"].get("reason") == "lost":
                return  # every replay across a kill opens with one: _check_records holds it to the records
        else:
            self.since[workspace_id] = max(self.since.get(workspace_id, 0), event["seq"])
        self.ledger.observe(event)

    def stats(self) -> Stats:
        counts = dict(self.counts)
        counts.update({f"ledger_{key}": value for key, value in self.ledger.counts.items()})
        return Stats(counts, [*self.violations, *self.ledger.violations()])


async def kill_loop(
    daemon: OwnedDaemon,
    projects: list[Path],
    seed: int,
    rounds: int,
    *,
    round_budget: float = 10.0,
    deadline: float | None = None,
) -> Stats:
    """`rounds` lives of the daemon, each ended by SIGKILL with runs, tools and permission requests in flight.

    With a `deadline` (a trio.current_time()), fewer once it has passed: the
    life that starts after it is the last, checked and not killed.

    After each restart, every client resubscribes with `since`, and: every
    accepted run has its one terminal record (`run.get`, `run.wait`) and it
    is the run.complete a subscriber was told, if one was; a run never
    told is covered by a `lost` gap; no message `session.messages`
    returned before the kill is gone or changed once it was finished; the
    database passes `PRAGMA integrity_check`. Throughout, every event goes
    to a `Ledger` (see `_Loop` for what it checks across lives).
    """
    loop = _Loop(seed, Ledger(how_to_reproduce=_repro(seed)))
    rng = random.Random(seed)
    for round_no in range(rounds + 1):
        last = round_no == rounds or (deadline is not None and trio.current_time() >= deadline)
        with trio.move_on_after(round_budget * 3) as overtime:
            await _one_life(daemon, projects, rng, loop, round_no, last=last)
        if overtime.cancelled_caught:
            loop.violation(f"round {round_no}: the daemon's life took over {round_budget * 3:.0f} s")
        report = await integrity_check(daemon.db_path, daemon.prefix)
        if report != INTEGRITY_OK:
            loop.violation(f"round {round_no}: PRAGMA integrity_check after the restart: {report}")
        if last:
            break
        await daemon.restart()
        loop.count("kills")
    return loop.stats()


async def _one_life(
    daemon: OwnedDaemon, projects: list[Path], rng: random.Random, loop: _Loop, round_no: int, *, last: bool
) -> None:
    try:
        async with daemon.client() as client, trio.open_nursery() as nursery:
            workspaces, lost = await _resubscribe(client, projects, loop, nursery)
            await _check_records(client, loop, round_no, lost)
            await _check_messages(client, loop, round_no)
            if last:
                nursery.cancel_scope.cancel()
                return
            milestone = await _traffic(client, workspaces, rng, loop, round_no, nursery)
            # Kill at a point the seed picks: a milestone reached, or its bound.
            with trio.move_on_after(5):
                await milestone.wait()
            await _snapshot_messages(client, loop)
            # The kill itself, with every connection still open and everything in flight.
            await daemon.kill()
            nursery.cancel_scope.cancel()
    except* (ConnectionLost, OSError, trio.BrokenResourceError, trio.ClosedResourceError):
        if daemon.proc is not None and daemon.proc.poll() is None:
            raise


async def _resubscribe(
    client: Client, projects: list[Path], loop: _Loop, nursery: trio.Nursery
) -> tuple[list[str], set[str]]:
    """Open every project and subscribe with `since` where we have one, and read the replays.

    The workspaces, and those whose replay began with a `lost` gap.
    """
    workspaces = []
    replays: dict[str, tuple[int, str]] = {}
    for project in projects:
        opened = await client.call("workspace.open", {"path": str(project)})
        workspace_id = opened["id"]
        workspaces.append(workspace_id)
        loop.projects[workspace_id] = project
        params: dict[str, Any] = {"workspace_id": workspace_id}
        if workspace_id in loop.since:
            params["since"] = loop.since[workspace_id]
        sub = await client.call("events.subscribe", params)
        replays[sub["subscription_id"]] = (sub["replayed"], workspace_id)
    subs = {sub_id: ws for sub_id, (_, ws) in replays.items()}
    lost: set[str] = set()
    left = sum(n for n, _ in replays.values())
    with trio.fail_after(30):
        while left:
            method, params = await client.notifications.receive()
            event = event_params(params) if method == "event" else None
            if event is None or event["subscription_id"] not in subs:
                continue
            left -= 1
            workspace_id = subs[event["subscription_id"]]
            if event["type"] == "events.gap" and event["payload"].get("reason") == "lost":
                lost.add(workspace_id)
            loop.observe(workspace_id, event)
    nursery.start_soon(_read_live, client, subs, loop)
    return workspaces, lost


async def _read_live(client: Client, subs: dict[str, str], loop: _Loop) -> None:
    async for method, params in client.notifications:
        event = event_params(params) if method == "event" else None
        if event is None or event["subscription_id"] not in subs:
            continue
        workspace_id = subs[event["subscription_id"]]
        loop.observe(workspace_id, event)
        kind = event["type"]
        if kind == "permission.request":
            loop.count("permission_requests")
            # Most are answered, some are left to the kill; by the run's id, which the seed makes.
            pick = zlib.crc32(event["payload"]["run_id"].encode())
            if pick % 3:
                grant = {
                    "workspace_id": workspace_id,
                    "request_id": event["payload"]["request_id"],
                    "action": "allow" if pick % 2 else "deny",
                }
                try:
                    await client.call("permission.grant", grant)
                except RpcError as exc:
                    loop.violation(f"permission.grant {grant} failed: {exc.code} {exc}")
        elif kind == "tool.finished":
            loop.count("tool_calls")
        if kind in loop.milestones:
            loop.milestones[kind].set()


async def _check_records(client: Client, loop: _Loop, round_no: int, lost: set[str]) -> None:
    """Every accepted run has its terminal record, and it is what a subscriber was told.

    A run the kill interrupted is told in the replay (its RunComplete is
    logged at the start, in the new life); one that ended before the kill
    was told live, or the replay admits with a `lost` gap that it may not be.
    """
    for run_id in loop.accepted:
        try:
            run = await client.call("run.get", {"run_id": run_id})
        except RpcError as exc:
            loop.violation(f"round {round_no}: run.get {run_id} of an accepted run: {exc.code} {exc}")
            continue
        if run["state"] != "done" or run["complete"] is None:
            # Accepted in this life's predecessor, so done by now: interrupted at the start at least.
            loop.violation(f"round {round_no}: run {run_id} is {run['state']} after the restart: {run}")
            continue
        with trio.fail_after(10):
            waited = await client.call("run.wait", {"run_id": run_id, "timeout": 5})
        if waited != run["complete"]:
            loop.violation(f"round {round_no}: run {run_id}: run.wait {waited} but run.get {run['complete']}")
        told = loop.ledger.complete_of(run_id)
        if told is not None and told != run["complete"]:
            loop.violation(f"round {round_no}: run {run_id}: subscribers were told {told}, its record is {run}")
        elif told is None and run["complete"]["error"] == INTERRUPTED:
            loop.violation(f"round {round_no}: run {run_id} was interrupted, and the replay did not tell it: {run}")
        elif told is None and loop.accepted[run_id] not in lost:
            loop.violation(
                f"round {round_no}: run {run_id} ended before the kill, was never told its run.complete, and the"
                f" replay since the last seq received admitted no lost events: {run}"
            )
        await _check_changes(client, loop, round_no, run_id, run["complete"])
        loop.count("records_checked")


async def _check_changes(client: Client, loop: _Loop, round_no: int, run_id: str, complete: dict[str, Any]) -> None:
    """What the run's tools wrote is recorded, also when the kill came between the write and the run's end.

    The file before a run's first write is committed before the file is
    written (docs/protocol.md §9.6): a file the run's `write` made must be
    listed, whenever the kill came, and its RunComplete counts what
    run.changes lists (an interrupted one too: a write the kill cut short
    is finished at the restart from the file on disk).
    """
    changes = await client.call("run.changes", {"run_id": run_id})
    paths = [f["path"] for f in changes["files"]]
    if len(paths) != complete["changes"]:
        loop.violation(
            f"round {round_no}: run {run_id}: its RunComplete counts {complete['changes']} changes,"
            f" run.changes lists {paths}"
        )
    if run_id in loop.tool_runs:
        written = loop.projects[loop.accepted[run_id]] / "out" / f"{run_id}.txt"
        try:
            content = written.read_text()
        except FileNotFoundError:
            content = ""
        # `bash` appends "more" (and creates the file if `write` did not run): only `write` is recorded.
        if content.startswith(run_id) and f"out/{run_id}.txt" not in paths:
            loop.violation(f"round {round_no}: run {run_id} wrote {written} and run.changes does not list it: {paths}")
        elif content.startswith(run_id):
            loop.count("writes_recorded")


def _finished(message: dict[str, Any]) -> bool:
    return message["finish_reason"] is not None


async def _snapshot_messages(client: Client, loop: _Loop) -> None:
    loop.messages.clear()
    for workspace_id, sessions in loop.sessions.items():
        for session_id in sessions:
            params = {"workspace_id": workspace_id, "session_id": session_id}
            loop.messages[(workspace_id, session_id)] = await client.call("session.messages", params)


async def _check_messages(client: Client, loop: _Loop, round_no: int) -> None:
    """What session.messages said before the kill is still there: finished messages as they were."""
    for (workspace_id, session_id), before in loop.messages.items():
        after = await client.call("session.messages", {"workspace_id": workspace_id, "session_id": session_id})
        by_id = {m["id"]: m for m in after}
        for message in before:
            now = by_id.get(message["id"])
            if now is None:
                loop.violation(f"round {round_no}: message {message['id']} of session {session_id} is gone: {message}")
            elif _finished(message) and now != message:
                loop.violation(f"round {round_no}: finished message changed across the kill: {message} -> {now}")
            elif not _finished(now):
                loop.violation(f"round {round_no}: message {message['id']} still unfinished after the restart: {now}")
            elif now["role"] != message["role"] or now["run_id"] != message["run_id"]:
                loop.violation(f"round {round_no}: message {message['id']} changed its run or role: {now}")
        loop.count("messages_checked", len(before))


async def _traffic(
    client: Client, workspaces: list[str], rng: random.Random, loop: _Loop, round_no: int, nursery: trio.Nursery
) -> trio.Event:
    """This life's runs, in every workspace; the event the kill waits for."""
    loop.milestones.clear()
    milestone = trio.Event()
    kind = rng.choice(["none", "permission.request", "tool.finished", "run.complete", "message.delta"])
    if kind != "none":
        loop.milestones[kind] = milestone
    else:
        milestone.set()
    loop.count(f"kill_after_{kind}")
    for workspace_id in workspaces:
        sessions = loop.sessions.setdefault(workspace_id, [])
        if len(sessions) < 3:
            created = await client.call("session.create", {"workspace_id": workspace_id, "title": f"r{round_no}"})
            sessions.append(created["id"])
        for n in range(rng.randint(2, 4)):
            session_id = rng.choice(sessions)
            run_kind = rng.choice(["finish", "hang", "fail", "tools", "tools", "tools_allowed"])
            run_id = f"k{loop.seed}-{round_no}-{workspace_id[-6:]}-{n}"
            params: dict[str, Any] = {
                "workspace_id": workspace_id,
                "session_id": session_id,
                "prompt": _script(rng, run_kind.removesuffix("_allowed"), run_id),
                "model": "scripted",
                "run_id": run_id,
            }
            if run_kind == "tools_allowed":
                params["allow"] = ["*"]
            try:
                reply = await client.call("agent.send", params)
            except RpcError as exc:
                loop.violation(f"round {round_no}: agent.send {run_kind} refused: {exc.code} {exc}")
                continue
            loop.accepted[run_id] = workspace_id
            # Each send's reply is awaited before the next: the order the session's runs must start in.
            loop.ledger.accepted(workspace_id, run_id, session_id=session_id, queued=reply.get("queued"))
            if run_kind.startswith("tools"):
                loop.tool_runs.add(run_id)
            loop.count("runs")
    return milestone
