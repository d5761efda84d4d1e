"""The lifecycle driver: seeded random schedules of what clients do to runs, checked after every step.

`drive_lifecycle()` takes one step at a time, each from one of several client
connections, chosen by `random.Random(seed)`: prompts for the `scripted` model
that succeed, fail, hang, or call tools (a `write` of the session's own file
and a `bash`, allowed; or a `write` that asks for permission), a prompt for a
model that does not exist, `agent.cancel` (of a session, of one run, and from
a connection that closes right after writing it), `agent.queue_clear`,
answers to permission requests from one client, from two at once, or from
none (so the daemon's `[permissions] timeout` ends them), connections coming
and going, subscriptions with and without `since`, `workspace.close` of every
claim (so the workspace closes once idle, and is opened again later),
`session.delete`, and `run.revert` of a session's last writes, checked
against the contents the driver kept itself.

Steps are taken one after another, so the order the daemon accepts a
session's runs in is the order the driver tells the `Ledger`. An observer
connection, subscribed to each workspace throughout, feeds the ledger every
event; after every step its `violations()` must be empty, and the driver
stops at the first step that breaks something, naming the seed, the step and
the steps before it. At the end it cancels what still runs and waits for
every run it started to complete; the caller then calls `Ledger.settle()`.

The seed fixes the schedule's choices, not the daemon's timing: what a step
finds (which runs have completed, which requests wait) depends on it, so a
seed re-runs the same kinds of step in the same order, with its targets
picked the same way among what is there.
"""

from __future__ import annotations

import json
import random
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import msgpack
import trio

from agentctl.client import Client, ConnectionLost, RpcError, event_params, open_client

from ._ledger import Ledger
from ._stats import Stats

__all__ = ["Stats", "drive_lifecycle", "mcp_config", "reproduce_hint"]

# The bound on one step, and on each wait the driver makes for the daemon.
STEP_BOUND = 10.0
# How long a cancelled hanging run may take to complete (well inside STEP_BOUND).
CANCEL_BOUND = 5.0
# Connections the driver keeps, besides its observer.
MAX_CLIENTS = 4
# How many steps are shown before the one that broke something.
SCHEDULE_SHOWN = 12
MUST_DELIVER = frozenset({"run.complete", "permission.request", "permission.resolved", "workspace.closed"})
UNKNOWN_MODEL = "no-such-model"
# The tests' toolbox MCP server, whose tools the "mcp" runs call, and the bound on each of its calls (its `never`).
TOOLBOX = Path(__file__).resolve().parents[2] / "tests" / "mcp_servers" / "toolbox.py"
MCP_CALL_TIMEOUT = 2.0
# How long a run's first turn waits for a server still starting (workspaces open and close all the time here):
# the toolbox's start, the SDK's imports, takes seconds on a loaded machine; shorter, and most calls find no tool.
MCP_WAIT = 5.0


def mcp_config(name: str) -> str:
    """config.toml tables that give every workspace the toolbox as server `name`, for `drive_lifecycle(mcp=name)`."""
    command = json.dumps([sys.executable, str(TOOLBOX)])
    return f"[mcp.{name}]\ncommand = {command}\ncall_timeout = {MCP_CALL_TIMEOUT}\n\n[agent]\nmcp_wait = {MCP_WAIT}\n"


def reproduce_hint(seed: int) -> str:
    return (
        f"seed {seed}: AGENTD_STRESS_SEED={seed} pytest tests/test_lifecycle_machine.py -k by_seed,"
        f" or python -m bench.stress --seed {seed}"
    )


@attrs.define(eq=False)
class _Conn:
    name: str
    client: Client | None = None
    scope: trio.CancelScope | None = None
    closed: trio.Event = attrs.Factory(trio.Event)
    claims: set[str] = attrs.Factory(set)
    # subscription_id -> (workspace_id, the reply's seq)
    subs: dict[str, tuple[str, int]] = attrs.Factory(dict)
    # Must-deliver events its own subscriptions received: checked against the observer's at the end.
    events: list[dict[str, Any]] = attrs.Factory(list)


@attrs.define(eq=False)
class _Workspace:
    path: Path
    id: str | None = None
    # The observer's subscription of its present opening, and the highest seq it knows of.
    sub_id: str | None = None
    seq: int = 0
    closes: int = 0


@attrs.define(eq=False)
class _Session:
    workspace: _Workspace
    id: str
    file: str
    # What the driver expects the session's file to hold (None: no file), and the runs that wrote it, last on top.
    content: str | None = None
    writers: list[str] = attrs.Factory(list)
    runs: list[str] = attrs.Factory(list)
    deleted: bool = False


@attrs.define(eq=False)
class _Run:
    session: _Session
    kind: str
    content: str | None = None  # what its write writes
    before: str | None = None  # the file's content before its write, once it wrote
    wrote: bool = False
    complete: dict[str, Any] | None = None


class _Driver:
    def __init__(
        self,
        socket_path: Path,
        projects: list[Path],
        seed: int,
        ledger: Ledger,
        hint: str,
        idle_grace: float | None,
        wait_for_timeouts: bool,
        mcp: str | None = None,
    ) -> None:
        self.socket_path = socket_path
        self.mcp = mcp
        self.idle_grace = idle_grace
        self.wait_for_timeouts = wait_for_timeouts
        self.rng = random.Random(seed)
        self.ledger = ledger
        self.hint = hint
        self.counts: Counter[str] = Counter()
        self.violations: list[str] = []
        self.workspaces = [_Workspace(path) for path in projects]
        self.sessions: list[_Session] = []
        self.runs: dict[str, _Run] = {}
        self.conns: list[_Conn] = []
        self.gone: list[_Conn] = []
        self.observer = _Conn("observer")
        # run_id -> the permission request waiting for it, as the observer saw it; and those resolved.
        self.pending: dict[str, dict[str, Any]] = {}
        self.changed = trio.Event()
        self.schedule: list[str] = []
        self.step = 0
        self.nursery: trio.Nursery | None = None
        self.waiting: tuple[str, float] = ("", 0.0)
        # run.completes the observer saw before the driver knew the run was accepted.
        self.early: dict[str, dict[str, Any]] = {}

    # --- connections ---------------------------------------------------------------------------------------

    async def connect(self, conn: _Conn, on_event: Callable[[_Conn, dict[str, Any]], None]) -> None:
        assert self.nursery is not None
        ready = trio.Event()

        async def hold() -> None:
            try:
                with trio.CancelScope() as conn.scope:
                    async with open_client(self.socket_path) as client:
                        conn.client = client
                        await client.call("initialize", {"client_name": conn.name})
                        ready.set()
                        async for method, params in client.notifications:
                            envelope = event_params(params) if method == "event" else None
                            if envelope is not None:
                                on_event(conn, envelope)
                    if not conn.scope.cancel_called:
                        self.violate(f"the daemon closed connection {conn.name}: {client.close_reason}")
            finally:
                conn.claims.clear()
                conn.closed.set()
                ready.set()

        self.nursery.start_soon(hold)
        await ready.wait()

    async def disconnect(self, conn: _Conn) -> None:
        assert conn.scope is not None
        conn.scope.cancel()
        await conn.closed.wait()
        if conn in self.conns:
            self.conns.remove(conn)
            self.gone.append(conn)

    def on_client_event(self, conn: _Conn, envelope: dict[str, Any]) -> None:
        if envelope["type"] in MUST_DELIVER:
            conn.events.append(envelope)

    def on_observed(self, _conn: _Conn, envelope: dict[str, Any]) -> None:
        self.ledger.observe(envelope)
        workspace = next((w for w in self.workspaces if w.id == envelope["workspace_id"]), None)
        if workspace is not None:
            workspace.seq = max(workspace.seq, envelope["seq"])
        kind, payload = envelope["type"], envelope["payload"]
        if kind == "permission.request":
            self.pending[payload["request_id"]] = payload
        elif kind == "permission.resolved":
            self.pending.pop(payload["request_id"], None)
        elif kind == "workspace.closed" and workspace is not None:
            workspace.closes += 1
        elif kind == "run.complete":
            self.run_complete(payload)
        elif kind == "tool.finished" and str(payload.get("name", "")).startswith("mcp__"):
            # Which of the server's calls ended how: the soak's proof that the server was there to call.
            self.counts[f"{payload['name']}.{payload.get('status')}"] += 1
        self.changed.set()

    def run_complete(self, payload: dict[str, Any]) -> None:
        run = self.runs.get(payload["run_id"])
        if run is None:
            # Not ours, or ours before its agent.send's reply was read (a quick run, on a loaded machine): send()
            # takes it from here.
            self.early[payload["run_id"]] = payload
            return
        if run.complete is not None:
            return  # a second one: the ledger reports that
        run.complete = payload
        session, cancelled, error = run.session, payload["cancelled"], payload["error"]
        expected_text = {"ok": "a b ", "tools": "done", "ask": "done", "mcp": "done"}.get(run.kind)
        if cancelled:
            pass
        elif run.kind == "hang":
            self.violate(f"run {payload['run_id']} hangs until cancelled, yet completed uncancelled: {payload}")
        elif run.kind == "error":
            if error is None or "boom" not in error:
                self.violate(f"run {payload['run_id']} was scripted to fail with 'boom': {payload}")
        elif error is not None or payload["text"] != expected_text:
            self.violate(f"run {payload['run_id']} ({run.kind}) should answer {expected_text!r}: {payload}")
        if run.content is not None and payload["changes"] > 0:
            # The session's runs run one at a time, so this is the file as the session's previous writer left it.
            run.wrote, run.before = True, session.content
            session.content = run.content
            session.writers.append(payload["run_id"])

    def pick_conn(self) -> _Conn:
        return self.rng.choice(self.conns)

    # --- waiting for what the observer sees ----------------------------------------------------------------

    async def until(self, done: Callable[[], bool], timeout: float = STEP_BOUND) -> bool:
        with trio.move_on_after(timeout):
            while not done():
                self.changed = trio.Event()
                await self.changed.wait()
            return True
        return False

    # --- workspaces --------------------------------------------------------------------------------------

    async def claim(self, conn: _Conn, workspace: _Workspace) -> bool:
        """Open `workspace` on `conn`; the observer follows it into a new opening."""
        assert conn.client is not None and self.observer.client is not None
        was_claimed = any(workspace.id in c.claims for c in self.conns if workspace.id is not None)
        opened = await self.call(conn, "workspace.open", {"path": str(workspace.path)})
        if opened is None:
            return False
        conn.claims.add(opened["id"])
        if workspace.id is None or not was_claimed:
            # Unclaimed, it may have closed: subscribe again from the last seq seen (the log fills the
            # seam), and let the old subscription go (it ended if the workspace closed).
            params: dict[str, Any] = {"workspace_id": opened["id"]}
            if workspace.id is not None:
                params["since"] = workspace.seq
            old, workspace.id = workspace.sub_id, opened["id"]
            sub = await self.observer.client.call("events.subscribe", params)
            workspace.sub_id = sub["subscription_id"]
            workspace.seq = max(workspace.seq, sub["seq"])
            if old is not None:
                try:
                    await self.observer.client.call("events.unsubscribe", {"subscription_id": old})
                except RpcError as exc:
                    self.expect_code(exc, {2}, "events.unsubscribe of the observer's old subscription")
        return True

    def claimed(self, workspace: _Workspace) -> bool:
        return workspace.id is not None and any(workspace.id in c.claims for c in self.conns)

    def unclaimed_codes(self, workspace: _Workspace) -> set[int]:
        """The errors a request to `workspace` may get: unclaimed, its runs may all have ended and it closed (2) or
        be closing (3), though the driver has not heard of their ends yet."""
        return set() if self.claimed(workspace) else {2, 3}

    # --- calls -------------------------------------------------------------------------------------------

    async def call(
        self, conn: _Conn, method: str, params: dict[str, Any], expect: frozenset[int] | set[int] = frozenset()
    ) -> Any:
        """The result, or None for an error reply with a code in `expect` (any other is a violation)."""
        assert conn.client is not None
        self.counts["requests"] += 1
        # What a step that overruns its bound was waiting on, and since when.
        self.waiting = (f"{method} on {conn.name} {params}", trio.current_time())
        try:
            return await conn.client.call(method, params)
        except RpcError as exc:
            self.expect_code(exc, expect, f"{method} {params}")
            return None
        except ConnectionLost as exc:
            self.violate(f"{method} on {conn.name} lost its connection: {exc}")
            return None

    def expect_code(self, exc: RpcError, expect: frozenset[int] | set[int], what: str) -> None:
        self.counts[f"error_{exc.code}"] += 1
        if exc.code not in expect:
            self.violate(f"{what} failed with code {exc.code}: {exc.message}")

    def violate(self, what: str) -> None:
        shown = "; ".join(self.schedule[-SCHEDULE_SHOWN:])
        self.violations.append(f"step {self.step}: {what} [steps before: {shown}] ({self.hint})")

    # --- the steps -----------------------------------------------------------------------------------------

    async def some_session(self) -> _Session | None:
        live = [s for s in self.sessions if not s.deleted]
        if live and self.rng.random() < 0.75:
            return self.rng.choice(live)
        return await self.new_session()

    async def new_session(self) -> _Session | None:
        workspace = self.rng.choice(self.workspaces)
        conn = self.pick_conn()
        if not self.claimed(workspace) and not await self.claim(conn, workspace):
            return None
        assert workspace.id is not None
        created = await self.call(conn, "session.create", {"workspace_id": workspace.id}, {2, 3})
        if created is None:
            return None
        session = _Session(workspace, created["id"], f"notes_{len(self.sessions)}.txt")
        self.sessions.append(session)
        return session

    def prompt(self, kind: str, session: _Session, run_id: str) -> tuple[str, dict[str, Any]]:
        extra: dict[str, Any] = {}
        content = f"written by {run_id}\n"
        if kind == "ok":
            script: dict[str, Any] = {"chunks": ["a ", "b "], "delay_ms": self.rng.choice([0, 5, 30])}
        elif kind == "error":
            script = {"chunks": ["a "], "error": "boom"}
        elif kind == "hang":
            script = {"chunks": ["a "], "hang": True}
        elif kind == "tools":
            write = {"name": "write", "arguments": {"path": session.file, "content": content}}
            bash = {"name": "bash", "arguments": {"command": "echo ran"}}
            script = {"steps": [{"tool_calls": [write, bash]}, {"chunks": ["done"]}]}
            extra["allow"] = ["*"]
        elif kind == "mcp":
            script = {"steps": [{"tool_calls": [self.mcp_call()]}, {"chunks": ["done"]}]}
            # Most run at once; the others ask first, as an MCP tool does unless allowed.
            if self.rng.random() < 0.7:
                extra["allow"] = ["*"]
        else:  # "ask": a write no rule allows, so it waits for an answer
            write = {"name": "write", "arguments": {"path": session.file, "content": content}}
            script = {"steps": [{"tool_calls": [write]}, {"chunks": ["done"]}]}
        return json.dumps(script), extra

    def mcp_call(self) -> dict[str, Any]:
        """A toolbox call: one that answers, one that fails, one that never answers, one that kills the server."""
        tool, arguments = self.rng.choice(
            [
                ("echo", {"text": "hi"}),
                ("echo", {"text": "ho"}),
                ("refuse", {"reason": "no"}),
                ("never", {}),
                ("crash", {}),
            ]
        )
        return {"name": f"mcp__{self.mcp}__{tool}", "arguments": arguments}

    async def send(self) -> str:
        session = await self.some_session()
        if session is None:
            return "send: no session"
        kinds = ["ok", "ok", "ok", "error", "hang", "tools", "tools", "tools", "ask", "unknown_model"]
        if self.mcp is not None:
            kinds += ["mcp", "mcp"]
        kind = self.rng.choice(kinds)
        run_id = f"lc{self.rng.getrandbits(64):016x}"
        prompt, extra = self.prompt(kind, session, run_id)
        params = {
            "workspace_id": session.workspace.id,
            "session_id": session.id,
            "prompt": prompt,
            "run_id": run_id,
            "model": UNKNOWN_MODEL if kind == "unknown_model" else "scripted",
            **extra,
        }
        conn = self.pick_conn()
        # Sent to a workspace nobody claims, it may have closed (2) or be closing (3).
        expect: set[int] = {1} if kind == "unknown_model" else set()
        if not self.claimed(session.workspace):
            expect |= {2, 3}
        reply = await self.call(conn, "agent.send", params, expect)
        if kind == "unknown_model":
            if reply is not None:
                self.violate(f"agent.send with model {UNKNOWN_MODEL!r} was accepted: {reply}")
            return f"send {UNKNOWN_MODEL} to {session.id}"
        if reply is None:
            return f"send {kind} to {session.id}: refused"
        assert session.workspace.id is not None
        self.runs[run_id] = _Run(session, kind, content=f"written by {run_id}\n" if kind in ("tools", "ask") else None)
        session.runs.append(run_id)
        if run_id in self.early:
            self.run_complete(self.early.pop(run_id))
        self.ledger.accepted(session.workspace.id, run_id, session_id=session.id, queued=reply["queued"])
        self.counts["runs"] += 1
        self.counts[f"runs_{kind}"] += 1
        return f"send {kind} {run_id} to {session.id} ({reply['state']})"

    def active(self, session: _Session) -> list[str]:
        return [r for r in session.runs if self.runs[r].complete is None]

    async def cancel(self) -> str:
        busy = [s for s in self.sessions if self.active(s) and not s.deleted]
        if not busy:
            return "cancel: nothing runs"
        session = self.rng.choice(busy)
        params: dict[str, Any] = {"workspace_id": session.workspace.id, "session_id": session.id}
        how = self.rng.choice(["session", "run", "and_vanish"])
        if how != "session":
            params["run_id"] = self.rng.choice(self.active(session))
        if how == "and_vanish":
            return await self.cancel_and_vanish(session, params)
        await self.call(self.pick_conn(), "agent.cancel", params, self.unclaimed_codes(session.workspace))
        self.counts["cancels"] += 1
        return f"cancel {params.get('run_id', 'session')} of {session.id}"

    async def cancel_and_vanish(self, session: _Session, params: dict[str, Any]) -> str:
        """agent.cancel written on a connection that closes at once: the cancel must still be applied."""
        run_id = params["run_id"]
        stream = await trio.open_unix_socket(str(self.socket_path))
        async with stream:
            await stream.send_all(msgpack.packb([0, 1, "agent.cancel", [params]]))
        self.counts["cancels_vanished"] += 1
        if self.runs[run_id].kind == "hang":
            # A hanging run ends only by a cancel: if this one was lost, it never does.
            if not await self.until(lambda: self.runs[run_id].complete is not None, CANCEL_BOUND):
                self.violate(f"agent.cancel of hanging run {run_id} from a connection that closed at once was lost")
                await self.call(self.pick_conn(), "agent.cancel", params)
        return f"cancel {run_id} of {session.id} and close the connection"

    async def queue_clear(self) -> str:
        busy = [s for s in self.sessions if self.active(s) and not s.deleted]
        if not busy:
            return "queue_clear: nothing queued"
        session = self.rng.choice(busy)
        params = {"workspace_id": session.workspace.id, "session_id": session.id}
        await self.call(self.pick_conn(), "agent.queue_clear", params, self.unclaimed_codes(session.workspace))
        return f"queue_clear {session.id}"

    async def answer(self) -> str:
        if not self.pending:
            return "answer: no request waits"
        request = self.pending[self.rng.choice(sorted(self.pending))]
        how = self.rng.choice(["one", "two", "none"])
        if how == "none":
            # Nobody answers: the daemon's [permissions] timeout ends it (or its run's cancel, or its workspace).
            request_id = request["request_id"]
            if self.wait_for_timeouts and not await self.until(lambda: request_id not in self.pending, CANCEL_BOUND):
                self.violate(f"permission request {request_id}, unanswered, did not time out within {CANCEL_BOUND} s")
            return f"leave request {request_id} to time out"
        workspace_id = self.runs[request["run_id"]].session.workspace.id if request["run_id"] in self.runs else None
        if workspace_id is None:
            return "answer: not our request"
        answerers = [self.pick_conn()] if how == "one" or len(self.conns) < 2 else self.rng.sample(self.conns, 2)
        actions = [self.rng.choice(["allow", "deny"]) for _ in answerers]
        results: list[Any] = []

        async def grant(conn: _Conn, action: str) -> None:
            params = {"workspace_id": workspace_id, "request_id": request["request_id"], "action": action}
            results.append(await self.call(conn, "permission.grant", params, {2, 3}))

        async with trio.open_nursery() as nursery:
            for conn, action in zip(answerers, actions, strict=True):
                nursery.start_soon(grant, conn, action)
        won = [r for r in results if r is not None and r["resolved"]]
        if len(won) > 1:
            self.violate(f"two answers to permission request {request['request_id']} both resolved it: {results}")
        self.counts["answers"] += len(answerers)
        return f"answer {request['request_id']} {actions} from {[c.name for c in answerers]}"

    async def connect_one(self) -> str:
        if len(self.conns) >= MAX_CLIENTS:
            return await self.disconnect_one()
        conn = _Conn(f"c{self.step}")
        self.conns.append(conn)
        await self.connect(conn, self.on_client_event)
        self.counts["connects"] += 1
        return f"connect {conn.name}"

    async def disconnect_one(self) -> str:
        if len(self.conns) <= 2:
            return await self.connect_one()
        conn = self.pick_conn()
        await self.disconnect(conn)
        self.counts["disconnects"] += 1
        return f"disconnect {conn.name}"

    async def subscribe(self) -> str:
        workspace = self.rng.choice(self.workspaces)
        if workspace.id is None:
            return "subscribe: never opened"
        conn = self.pick_conn()
        params: dict[str, Any] = {"workspace_id": workspace.id}
        since = self.rng.choice([None, 0, max(0, workspace.seq - self.rng.randint(0, 20))])
        if since is not None:
            params["since"] = since
        sub = await self.call(conn, "events.subscribe", params, set() if self.claimed(workspace) else {2, 3})
        if sub is not None:
            conn.subs[sub["subscription_id"]] = (workspace.id, sub["seq"])
            self.counts["subscriptions"] += 1
        return f"subscribe {conn.name} to {workspace.id} since {since}"

    async def close_workspace(self) -> str:
        workspace = self.rng.choice(self.workspaces)
        holders = [c for c in self.conns if workspace.id in c.claims]
        if not holders or workspace.id is None:
            return "close: not claimed"
        mine = [s for s in self.sessions if s.workspace is workspace and not s.deleted]
        if self.rng.random() < 0.5 and any(self.active(s) for s in mine):
            # Quieted first, half the time: a workspace released busy is mostly claimed again before it is idle,
            # and then its closing is never heard.
            for session in mine:
                if self.active(session):
                    params = {"workspace_id": workspace.id, "session_id": session.id}
                    await self.call(holders[0], "agent.cancel", params)
            if not await self.until(lambda: not any(self.active(s) for s in mine), CANCEL_BOUND):
                self.violate(
                    f"workspace {workspace.id}: its cancelled runs had no run.complete within {CANCEL_BOUND} s"
                )
        for conn in holders:
            await self.call(conn, "workspace.close", {"workspace_id": workspace.id})
            conn.claims.discard(workspace.id)
        # Once more: this connection holds no claim now, and is told so.
        again = self.rng.choice(holders)
        await self.call(again, "workspace.close", {"workspace_id": workspace.id}, {2})
        self.counts["workspace_releases"] += 1
        if self.idle_grace is not None and not any(self.active(s) for s in self.sessions if s.workspace is workspace):
            # Idle and unclaimed, it closes after the grace: the observer hears it.
            closes = workspace.closes
            if not await self.until(lambda: workspace.closes > closes, self.idle_grace + CANCEL_BOUND):
                self.violate(f"workspace {workspace.id}, idle and unclaimed, did not close after its idle grace")
        return f"close {workspace.id} on {[c.name for c in holders]}"

    async def delete_session(self) -> str:
        live = [s for s in self.sessions if not s.deleted]
        if not live:
            return "delete: no session"
        session = self.rng.choice(live)
        params = {"workspace_id": session.workspace.id, "session_id": session.id}
        if not self.claimed(session.workspace) and not await self.claim(self.pick_conn(), session.workspace):
            return "delete: cannot open"
        # Busy, it refuses (3); the driver may not have seen its last run.complete yet.
        if await self.call(self.pick_conn(), "session.delete", params, {3}) is None:
            return f"delete {session.id}: busy"
        session.deleted = True
        # Deleted, it was idle: every run.complete of it was published, if not yet read here.
        if not await self.until(lambda: not self.active(session), CANCEL_BOUND):
            self.violate(f"session {session.id} was deleted, yet runs {self.active(session)} never completed")
        return f"delete {session.id}"

    async def revert(self) -> str:
        ready = [s for s in self.sessions if s.writers and not s.deleted and not self.active(s)]
        if not ready:
            return "revert: nothing to revert"
        session = self.rng.choice(ready)
        run_id = session.writers[-1]
        run = self.runs[run_id]
        path = session.workspace.path / session.file
        found = path.read_text() if path.exists() else None
        if found != session.content:
            self.violate(f"{path} holds {found!r}, not {session.content!r} as the session's runs left it")
            return f"revert {run_id}: file differs"
        reply = await self.call(self.pick_conn(), "run.revert", {"run_id": run_id})
        if reply is None:
            return f"revert {run_id}: refused"
        if reply["refused"] or [f["path"] for f in reply["reverted"]] != [session.file]:
            self.violate(f"run.revert of {run_id} should put back {session.file} alone: {reply}")
        found = path.read_text() if path.exists() else None
        if found != run.before:
            self.violate(
                f"run.revert of {run_id} left {path} holding {found!r}, not its content before: {run.before!r}"
            )
        session.writers.pop()
        session.content = run.before
        self.counts["reverts"] += 1
        return f"revert {run_id}"

    async def wait_run(self) -> str:
        if not self.runs:
            return "run.wait: no run"
        run_id = self.rng.choice(sorted(self.runs))
        await self.call(self.pick_conn(), "run.wait", {"run_id": run_id, "timeout": self.rng.choice([0, 0.05])}, {6})
        return f"run.wait {run_id}"

    # --- the schedule ---------------------------------------------------------------------------------------

    STEPS: tuple[tuple[str, int], ...] = (
        ("send", 10),
        ("cancel", 3),
        ("queue_clear", 1),
        ("answer", 3),
        ("connect_one", 1),
        ("disconnect_one", 1),
        ("subscribe", 1),
        ("close_workspace", 1),
        ("delete_session", 1),
        ("revert", 2),
        ("wait_run", 1),
    )

    async def take_step(self) -> None:
        names = [name for name, _ in self.STEPS]
        weights = [weight for _, weight in self.STEPS]
        name = self.rng.choices(names, weights)[0]
        step: Callable[[], Awaitable[str]] = getattr(self, name)
        done = f"{self.step}: {name}"
        self.waiting = ("", trio.current_time())
        with trio.move_on_after(STEP_BOUND) as bound:
            done = f"{self.step}: {await step()}"
        if bound.cancelled_caught:
            what, since = self.waiting
            self.violate(
                f"{name} did not finish within {STEP_BOUND} s"
                f" (its last request, {trio.current_time() - since:.1f} s before: {what[:300] or 'none'})"
            )
        self.schedule.append(done)
        self.counts["steps"] += 1

    async def wind_down(self) -> None:
        """Cancel what still runs, and wait for every run of ours to complete."""
        for session in self.sessions:
            if self.active(session) and not session.deleted:
                params = {"workspace_id": session.workspace.id, "session_id": session.id}
                await self.call(self.conns[0], "agent.cancel", params, self.unclaimed_codes(session.workspace))
        if not await self.until(lambda: all(run.complete is not None for run in self.runs.values())):
            missing = [run_id for run_id, run in self.runs.items() if run.complete is None]
            # What the daemon says of them: still running (a slow cancel), or done (an event the observer missed).
            states = {}
            for run_id in missing[:5]:
                with trio.move_on_after(CANCEL_BOUND):
                    got = await self.call(self.observer, "run.get", {"run_id": run_id}, {2})
                    states[run_id] = "unknown" if got is None else f"{got['state']} {got['complete']}"
            self.violate(
                f"runs {missing} had no run.complete {STEP_BOUND} s after they were cancelled; run.get: {states}"
            )

    def check_subscribers(self) -> None:
        """What other subscriptions got as must-deliver events is what the observer saw at the same seq."""
        for conn in [*self.conns, *self.gone]:
            for envelope in conn.events:
                seen = self.ledger.seen(envelope["workspace_id"], envelope["seq"])
                payload = envelope["payload"]
                got = (envelope["type"], payload.get("run_id") if isinstance(payload.get("run_id"), str) else None)
                if seen is not None and seen != got and envelope["type"] != "workspace.closed":
                    self.violate(f"{conn.name} got {got} at seq {envelope['seq']}, the observer {seen}")


async def drive_lifecycle(
    socket_path: Path,
    projects: list[Path],
    seed: int,
    deadline: float,
    ledger: Ledger,
    *,
    steps: int | None = None,
    reproduce: str | None = None,
    idle_grace: float | None = None,
    permission_timeout: float | None = None,
    mcp: str | None = None,
) -> Stats:
    """Random steps against the daemon at `socket_path` until `deadline` (or `steps` of them), in `projects`.

    Given the daemon's `idle_grace` (`--idle-grace`), a workspace released
    while idle must be heard closing within it; given its `[permissions]
    timeout`, short, a request nobody answers must be heard ending. Without
    them the driver does not wait for either. Given `mcp`, the name of a
    server of the toolbox's (tests/mcp_servers/toolbox.py) that the daemon's
    configuration starts, some runs call its tools: one that answers, one
    that fails, one that never answers (cancelled, or its call timeout), one
    that kills the server.
    """
    hint = reproduce or reproduce_hint(seed)
    wait_for_timeouts = permission_timeout is not None and permission_timeout < CANCEL_BOUND
    driver = _Driver(socket_path, projects, seed, ledger, hint, idle_grace, wait_for_timeouts, mcp)
    reported = len(ledger.violations())
    async with trio.open_nursery() as nursery:
        driver.nursery = nursery
        await driver.connect(driver.observer, driver.on_observed)
        for i in range(2):
            conn = _Conn(f"c{i}")
            driver.conns.append(conn)
            await driver.connect(conn, driver.on_client_event)
        while trio.current_time() < deadline and (steps is None or driver.step < steps):
            driver.step += 1
            await driver.take_step()
            fresh = ledger.violations()[reported:]
            for violation in fresh:
                driver.violate(violation)
            reported += len(fresh)
            if driver.violations:
                break
        driver.step += 1
        driver.schedule.append(f"{driver.step}: wind down")
        await driver.wind_down()
        driver.check_subscribers()
        for violation in ledger.violations()[reported:]:
            driver.violate(violation)
        nursery.cancel_scope.cancel()
    counts = dict(driver.counts)
    counts["workspace_closes"] = sum(workspace.closes for workspace in driver.workspaces)
    counts.update({f"ledger_{key}": value for key, value in ledger.counts.items()})
    return Stats(counts=counts, violations=driver.violations)
