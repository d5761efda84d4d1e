"""Slow and vanishing clients while runs stream and call tools: stallers, pausers, half-closers, leavers, churn.

`drive_clients` opens two workspaces under the project folder it is given,
keeps one observer subscribed to each throughout, and streams runs (plain
bursts, and tool steps with and without a permission to ask), two at a time
in each workspace, while these clients misbehave around them:

- a staller subscribes and stops reading: once a run that started after it
  has streamed more than a socket holds, that run's `run.complete` cannot be
  written, and the daemon must close it within the must-deliver timeout;
- a pauser reads what has come, then stops for a fraction of the timeout,
  again and again: it must lose only lossy events, be told with
  `events.gap`, and stay connected;
- a half-closer shuts its writing side with requests under way and keeps
  reading: every request is answered, then the daemon closes;
- a leaver stalls until a must-deliver event is owed to it, then vanishes
  (close, reset or shutdown) while the daemon is writing it;
- churn: short-lived connections that vanish mid-request, with a run.wait
  owed, with a subscription (some replaying), after an `agent.send` whose
  reply they never read.

What must hold: each observer gets exactly one `run.complete` for every run
accepted in its workspace, and a `permission.resolved` for each request; no
run and no ping waits past its bound; and (`_health.leaks`, the caller's) nothing
is left behind once they are gone. The seed fixes every choice the driver
makes, not the daemon's timing.
"""

from __future__ import annotations

import functools
import json
import os
import random
import select
import socket
import struct
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import attrs
import msgpack
import trio

from agentctl.client import Client, ConnectionLost, RpcError, open_client

from ._stats import Stats

__all__ = ["Stats", "drive_clients"]

# Every run streams this much text after it starts: more than any Unix socket
# holds, so a subscriber that stopped reading before the run began cannot take
# its run.complete.
_CHUNK = 8192
_CHUNKS_PER_RUN = 80
# A loaded machine's allowance on top of each bound the daemon promises.
_SLACK = 5.0
# How often the staller looks at its socket for the daemon's hang-up (the socket's state is the kernel's).
_POLL = 0.05
_CHURNERS = 10
_MIN_CHURN = 200
_T = TypeVar("_T")
_MUST_DELIVER = frozenset({"run.complete", "permission.request", "permission.resolved", "workspace.closed"})


# --- a connection of our own, byte by byte -------------------------------------------------------------


class _Raw:
    """A client socket we can stall, half-close, reset or abandon at will."""

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self.sock = sock
        self._unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=1 << 30)
        self._msgid = 0
        self._fed = 0
        self.closed = False
        self.subscription_id = ""  # once it has subscribed: for what the daemon's log says of it

    @classmethod
    async def connect(cls, path: Path) -> _Raw:
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            await sock.connect(os.fspath(path))
        except BaseException:
            sock.close()
            raise
        return cls(sock)

    def request(self, method: str, params: dict[str, Any] | None = None) -> tuple[int, bytes]:
        self._msgid += 1
        return self._msgid, msgpack.packb([0, self._msgid, method, [params] if params is not None else []])

    async def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[await self.sock.send(view) :]

    async def next(self) -> list[Any] | None:
        """The next message, or None once the daemon has closed (or reset) the connection."""
        while True:
            try:
                return next(self._unpacker)  # type: ignore[no-any-return]
            except StopIteration:
                pass
            try:
                data = await self.sock.recv(1 << 16)
            except OSError:
                return None
            if not data:
                return None
            self._unpacker.feed(data)
            self._fed += len(data)

    def ready(self) -> bool:
        """Whether something has come that is not read yet: bytes we hold, or bytes (or the end) in the socket."""
        if self._fed > self._unpacker.tell():
            return True
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLIN)
        return bool(poller.poll(0))

    async def call(self, method: str, params: dict[str, Any] | None, events: list[dict[str, Any]]) -> Any:
        """The reply's result; event envelopes read on the way go to `events`. Raises RpcError, ConnectionLost."""
        msgid, data = self.request(method, params)
        await self.send(data)
        while True:
            message = await self.next()
            if message is None:
                raise ConnectionLost(f"closed before the reply to {method}")
            if message[0] == 2 and message[1] == "event":
                events.append(message[2][0])
            elif message[0] == 1 and message[1] == msgid:
                if message[2] is not None:
                    raise RpcError(message[2][0], message[2][1])
                return message[3]

    def hung_up(self) -> bool:
        """Whether the daemon has closed its end, read or not what it sent before."""
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLRDHUP)
        return any(ev & (select.POLLRDHUP | select.POLLHUP) for _fd, ev in poller.poll(0))

    def close(self, how: str = "close") -> None:
        if self.closed:
            return
        self.closed = True
        if how == "reset":
            # No orderly end: unread data makes a Unix socket's peer see a reset.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif how == "shutdown":
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.sock.close()


# --- the observers: subscribed throughout, the promise's witnesses --------------------------------------


class _Observer:
    """One workspace's events as a client connected throughout sees them (deltas only counted)."""

    def __init__(self, workspace_id: str) -> None:
        self.workspace_id = workspace_id
        self.started: dict[str, int] = {}  # run_id -> seq of run.started
        self.completes: dict[str, list[tuple[int, float]]] = {}  # run_id -> (seq, when seen) of each run.complete
        self.requests: dict[str, int] = {}  # request_id -> seq
        self.resolved: Counter[str] = Counter()
        self.must_deliver: list[tuple[int, str, str | None, float]] = []  # seq, type, run_id, when seen
        self.last_seq = 0
        self.events = 0
        self.lost: str | None = None
        self._tick = trio.Event()

    def note(self, envelope: dict[str, Any]) -> None:
        self.events += 1
        seq, kind, payload = envelope["seq"], envelope["type"], envelope["payload"]
        self.last_seq = max(self.last_seq, seq)
        if kind == "message.delta":
            return
        now = trio.current_time()
        run_id = str(payload.get("run_id")) if isinstance(payload, dict) else None
        if run_id is None:
            pass
        elif kind == "run.started":
            self.started[run_id] = seq
        elif kind == "run.complete":
            self.completes.setdefault(run_id, []).append((seq, now))
        elif kind == "permission.request":
            self.requests[payload["request_id"]] = seq
        elif kind == "permission.resolved":
            self.resolved[payload["request_id"]] += 1
        if kind in _MUST_DELIVER:
            self.must_deliver.append((seq, kind, run_id, now))
        self._tick.set()
        self._tick = trio.Event()

    async def until(self, found: Callable[[], _T | None], timeout: float) -> _T | None:
        """The first non-None answer of `found`, asked after each event; None after `timeout`."""
        with trio.move_on_after(timeout):
            while (answer := found()) is None:
                await self._tick.wait()
            return answer
        return None

    def complete_of_run_started_after(self, seq: int) -> float | None:
        """When this observer saw the run.complete of a run that started after `seq`, if it has."""
        for run_id, started in self.started.items():
            if started > seq and run_id in self.completes:
                return self.completes[run_id][0][1]
        return None

    def must_deliver_of_run_started_after(self, seq: int) -> tuple[str, float] | None:
        for event_seq, kind, run_id, when in self.must_deliver:
            if event_seq > seq and run_id is not None and self.started.get(run_id, -1) > seq:
                return kind, when
        return None


@attrs.define
class _Workspace:
    path: Path
    id: str = ""
    observer: _Observer | None = None
    running: set[str] = attrs.Factory(set)


# --- the drive -------------------------------------------------------------------------------------


class _Drive:
    def __init__(
        self,
        socket_path: Path,
        project: Path,
        seed: int,
        deadline: float,
        must_deliver_timeout: float,
        churn_bound: float | None = None,
    ):
        self.socket_path = socket_path
        # A churner's whole life: what it asks may wait out the timeout once (a stalled subscriber ahead of it).
        self.churn_bound = churn_bound if churn_bound is not None else must_deliver_timeout + _SLACK
        self.seed = seed
        self.rng = random.Random(seed)
        self.deadline = deadline
        self.timeout = must_deliver_timeout
        # A run's must-deliver events (a permission request, its resolution, the
        # run.complete) may each wait out the timeout for a stuck subscriber.
        self.run_budget = 3 * must_deliver_timeout + 4 * _SLACK
        self.counts: Counter[str] = Counter()
        self.violations: list[str] = []
        self.workspaces = [_Workspace(project / f"clients-{name}") for name in ("a", "b")]
        self.accepted: dict[str, _Workspace] = {}
        # Sent by churn, whose reply nobody read: accepted or not, run.get says.
        self.maybe_accepted: dict[str, _Workspace] = {}
        # Set once every session has sent its last run and had its run.wait answered.
        self.runs_over = trio.Event()
        self._sessions_running = 0

    def violation(self, text: str) -> None:
        self.violations.append(
            f"{text} (seed {self.seed}: AGENTD_STRESS_SEED={self.seed} pytest tests/test_vanishing_clients.py,"
            f" or python -m bench.stress --seed {self.seed})"
        )

    def going(self) -> bool:
        return trio.current_time() < self.deadline

    # --- runs

    def script(self) -> tuple[str, list[str] | None, str]:
        """A prompt for the scripted model, its `allow`, and what kind of run it is."""
        repeat = self.rng.choice([1, 1, 2, 4])
        text = {
            "chunks": [self.rng.choice("abcdefgh") * _CHUNK] * (_CHUNKS_PER_RUN // repeat),
            "repeat": repeat,
            "delay_ms": self.rng.randint(0, 3),
        }
        kind = self.rng.choice(["stream", "stream", "tools", "ask"])
        if kind == "stream":
            return json.dumps(text), None, kind
        call = {"name": "bash", "arguments": {"command": f"echo step {self.rng.randint(0, 999)}"}}
        steps = [{"chunks": ["looking"], "tool_calls": [call]}, text]
        # "ask": no rule allows the call, so it waits for a permission.request's answer (the observer's).
        return json.dumps({"steps": steps}), (["*"] if kind == "tools" else None), kind

    async def run_sessions(self, client: Client, ws: _Workspace, session_ids: list[str]) -> None:
        """Rounds of one run per session, sent together, so their bursts of text overlap.

        Interleaved deltas of two messages cannot be merged in a full queue: a
        subscriber that pauses through them loses some, and must be told.
        """
        self._sessions_running += 1
        try:
            while self.going():
                failed: list[bool] = []
                async with trio.open_nursery() as nursery:
                    for session_id in session_ids:
                        nursery.start_soon(self.one_run, client, ws, session_id, failed)
                if failed:
                    return
        finally:
            self._sessions_running -= 1
            if not self._sessions_running:
                self.runs_over.set()

    async def one_run(self, client: Client, ws: _Workspace, session_id: str, failed: list[bool]) -> None:
        prompt, allow, kind = self.script()
        run_id = uuid.uuid4().hex
        params: dict[str, Any] = {
            "workspace_id": ws.id,
            "session_id": session_id,
            "prompt": prompt,
            "model": "scripted",
            "run_id": run_id,
        }
        if allow is not None:
            params["allow"] = allow
        try:
            await client.call("agent.send", params)
        except RpcError as exc:
            self.violation(f"agent.send of a {kind} run was refused: {exc.code} {exc.message}")
            failed.append(True)
            return
        self.accepted[run_id] = ws
        ws.running.add(run_id)
        self.counts["runs"] += 1
        self.counts[f"runs_{kind}"] += 1
        started = trio.current_time()
        try:
            rc = await client.call("run.wait", {"run_id": run_id, "timeout": self.run_budget})
        except RpcError as exc:
            self.violation(f"run {run_id} ({kind}) had no run.complete within {self.run_budget:.0f}s: {exc}")
            failed.append(True)
            return
        finally:
            ws.running.discard(run_id)
        took = trio.current_time() - started
        self.counts["max_run_ms"] = max(self.counts["max_run_ms"], int(took * 1000))
        if rc["error"] is not None:
            self.violation(f"run {run_id} ({kind}) failed: {rc['error']}")

    async def observe(self, client: Client, ws: _Workspace, ready: trio.Event, stop: trio.Event) -> None:
        observer = ws.observer
        assert observer is not None
        async with trio.open_nursery() as nursery:
            try:
                async with client.subscribe(ws.id) as subscription:
                    ready.set()
                    async for ev in subscription:
                        observer.note(
                            {
                                "seq": ev.seq,
                                "type": ev.type,
                                "payload": ev.payload if ev.type != "message.delta" else {},
                            }
                        )
                        if ev.type == "events.gap":
                            # Allowed: it shares a process with all the others, and may fall behind a burst.
                            self.counts["observer_gaps"] += 1
                        if ev.type == "permission.request":
                            nursery.start_soon(self.answer, client, ws, str(ev.payload["request_id"]))
                        if stop.is_set():
                            break
            except ConnectionLost as exc:
                if not stop.is_set():
                    observer.lost = str(exc)
                    self.violation(f"the observer of {ws.id} was disconnected: {exc}")

    async def answer(self, client: Client, ws: _Workspace, request_id: str) -> None:
        # Answered a little later: meanwhile the request is owed to every subscriber, leavers included.
        await trio.sleep(self.rng.uniform(0, 0.3))
        params = {"workspace_id": ws.id, "request_id": request_id, "action": "allow"}
        try:
            await client.call("permission.grant", params)
        except (RpcError, ConnectionLost) as exc:
            self.violation(f"permission.grant of {request_id} failed: {exc}")

    async def pings(self, client: Client) -> None:
        # The daemon's loop never waits on a subscriber: a ping is answered at once whoever stalls.
        budget = _SLACK
        while self.going():
            sent = trio.current_time()
            with trio.move_on_after(budget) as scope:
                await client.call("ping")
            took = trio.current_time() - sent
            self.counts["pings"] += 1
            self.counts["max_ping_ms"] = max(self.counts["max_ping_ms"], int(took * 1000))
            if scope.cancelled_caught:
                self.violation(f"a ping was not answered within {budget:.0f}s")
            await trio.sleep(0.1)

    # --- misbehaving subscribers

    async def owed(self, observer: _Observer, found: Callable[[], _T | None]) -> _T | None:
        """`observer.until(found)` for as long as a run may still make it true: None once none can."""
        answer: _T | None = None
        async with trio.open_nursery() as nursery:

            async def look() -> None:
                nonlocal answer
                answer = await observer.until(found, self.run_budget)
                nursery.cancel_scope.cancel()

            async def give_up() -> None:
                await self.runs_over.wait()
                # run.wait may answer before the observer's copy of the last run.complete is on its way.
                await observer.until(functools.partial(self.seen_every_complete, observer), self.timeout + _SLACK)
                nursery.cancel_scope.cancel()

            nursery.start_soon(look)
            nursery.start_soon(give_up)
        # The last event may have woken both: it counts.
        return answer if answer is not None else found()

    def seen_every_complete(self, observer: _Observer) -> bool | None:
        """True once `observer` has seen the run.complete of every run its workspace's sessions sent."""
        runs = [run_id for run_id, ws in self.accepted.items() if ws.observer is observer]
        return True if all(run_id in observer.completes for run_id in runs) else None

    async def subscribed_raw(self, ws: _Workspace, events: list[dict[str, Any]]) -> tuple[_Raw, int]:
        raw = await _Raw.connect(self.socket_path)
        try:
            await raw.call("workspace.open", {"path": str(ws.path)}, events)
            sub = await raw.call("events.subscribe", {"workspace_id": ws.id}, events)
        except BaseException:
            raw.close()
            raise
        raw.subscription_id = str(sub["subscription_id"])
        return raw, int(sub["seq"])

    async def stall(self, ws: _Workspace) -> None:
        """Subscribe, never read; the daemon must close us within the timeout of a run.complete we cannot take."""
        observer = ws.observer
        assert observer is not None
        raw, seq = await self.subscribed_raw(ws, [])
        try:
            seen = await self.owed(observer, lambda: observer.complete_of_run_started_after(seq))
            if seen is None:
                self.counts["stalls_without_run"] += 1
                return
            cut_by = seen + self.timeout + _SLACK
            while not raw.hung_up():
                if trio.current_time() > cut_by:
                    self.violation(
                        f"a subscriber of {ws.id} that stopped reading was still connected"
                        f" {self.timeout + _SLACK:.0f}s after a run.complete it could not take"
                        f" (must-deliver timeout {self.timeout}s)"
                    )
                    return
                await trio.sleep(_POLL)
            self.counts["stalled_cut"] += 1
            late = int((trio.current_time() - seen) * 1000)
            self.counts["max_cut_after_complete_ms"] = max(self.counts["max_cut_after_complete_ms"], late)
        finally:
            raw.close()

    async def pause(self, ws: _Workspace) -> None:
        """Read in bursts with pauses well inside the timeout: gaps, never a disconnect, every must-deliver event.

        Before each pause it reads what has already come: a pause is then a
        pause, never a backlog carried into the next one, which could add up to
        more than the timeout however short each pause is.
        """
        observer = ws.observer
        assert observer is not None
        received: list[dict[str, Any]] = []
        raw, seq = await self.subscribed_raw(ws, received)
        subscribed = last_message = trio.current_time()
        longest_pause = 0.0

        async def read() -> bool:
            """One message; False if the daemon closed the connection (a violation, said here)."""
            nonlocal last_message
            message = await raw.next()
            now = trio.current_time()
            if message is None:
                got = {e["seq"] for e in received}
                owed = [
                    f"{kind} {s} seen by the observer {now - when:.2f}s before"
                    for s, kind, _run, when in observer.must_deliver
                    if s > seq and s not in got
                ]
                self.violation(
                    f"a subscriber of {ws.id} that paused at most {self.timeout / 4:.2f}s"
                    f" (a quarter of the must-deliver timeout), each time having read what had come,"
                    f" was disconnected ({raw.subscription_id}, {now - subscribed:.1f}s after it subscribed,"
                    f" {now - last_message:.2f}s after its last message, its longest pause {longest_pause:.2f}s;"
                    f" owed {owed[:3]})"
                )
                return False
            last_message = now
            if message[0] == 2 and message[1] == "event":
                received.append(_brief(message[2][0]))
            return True

        try:
            while self.going():
                with trio.move_on_after(self.rng.uniform(0.05, 0.3)):
                    while True:
                        if not await read():
                            return
                        if received and received[-1]["type"] == "run.started" and not raw.ready():
                            break  # caught up as a burst of text begins: what a pause should miss
                # Bounded: a daemon that publishes faster than we read would keep it going.
                with trio.move_on_after(self.timeout):
                    while raw.ready():
                        if not await read():
                            return
                paused = trio.current_time()
                await trio.sleep(self.rng.uniform(0.1, 0.25) * self.timeout)
                longest_pause = max(longest_pause, trio.current_time() - paused)
        finally:
            raw.close()
        self.counts["pausers"] += 1
        self.counts["pauser_events"] += len(received)
        self.counts["pauser_gaps"] += sum(e["type"] == "events.gap" for e in received)
        self.check_accounted(ws, seq, received)

    def check_accounted(self, ws: _Workspace, seq: int, received: list[dict[str, Any]]) -> None:
        """Every seq it passed is an event it got, one a gap told it it lost, or one merged into a delta."""
        observer = ws.observer
        assert observer is not None
        previous = seq
        after_gap = False
        for e in received:
            if e["type"] == "permission.request" and e["seq"] <= seq:
                continue  # pending when we subscribed: sent first, with the seq it was published with
            if e["seq"] <= previous and e["type"] != "events.gap":
                self.violation(f"a subscriber of {ws.id} got seq {e['seq']} after {previous}")
                return
            if e["type"] == "events.gap":
                after_gap = True
                previous = e["seq"]
                continue
            if e["seq"] != previous + 1 and not after_gap and e["type"] != "message.delta":
                self.violation(
                    f"a subscriber of {ws.id} went from seq {previous} to {e['seq']} ({e['type']}) with no events.gap"
                )
                return
            after_gap = False
            previous = e["seq"]
        got = {e["seq"] for e in received if e["type"] in _MUST_DELIVER}
        owed = {s for s, _kind, _run, _when in observer.must_deliver if seq < s <= previous}
        if owed - got:
            self.violation(
                f"a subscriber of {ws.id} that stayed connected missed must-deliver seqs {sorted(owed - got)}"
            )

    async def half_close(self, ws: _Workspace) -> None:
        """Ask, shut our writing side, keep reading: every request answered, then the daemon closes."""
        raw = await _Raw.connect(self.socket_path)
        try:
            target = next(iter(sorted(ws.running)), None)
            asked: dict[int, str] = {}
            batch = []
            calls: list[tuple[str, dict[str, Any] | None]] = [
                ("workspace.open", {"path": str(ws.path)}),
                ("events.subscribe", {"workspace_id": ws.id}),
                *([("run.wait", {"run_id": target, "timeout": self.run_budget})] if target else []),
                ("ping", None),
            ]
            for method, params in calls:
                msgid, data = raw.request(method, params)
                asked[msgid] = method
                batch.append(data)
            await raw.send(b"".join(batch))
            raw.sock.shutdown(socket.SHUT_WR)
            replies: dict[int, Any] = {}
            budget = self.run_budget + _SLACK
            with trio.move_on_after(budget):
                while (message := await raw.next()) is not None:
                    if message[0] == 1:
                        replies[message[1]] = message
                self.counts["half_closed"] += 1
                if set(replies) != set(asked):
                    missing = [asked[m] for m in sorted(set(asked) - set(replies))]
                    self.violation(f"a half-closed client of {ws.id} was closed with {missing} unanswered")
                for msgid, reply in replies.items():
                    if reply[2] is not None:
                        self.violation(f"a half-closed client's {asked[msgid]} got error {reply[2]}")
                    elif asked[msgid] == "run.wait" and reply[3]["run_id"] != target:
                        self.violation(f"a half-closed client's run.wait of {target} got {reply[3]['run_id']}")
                return
            self.violation(f"a half-closed client of {ws.id} was not closed within {budget:.0f}s")
        finally:
            raw.close()

    async def leave_mid_must_deliver(self, ws: _Workspace) -> None:
        """Stall until a must-deliver event is owed to us and cannot be written, then vanish while it is."""
        observer = ws.observer
        assert observer is not None
        raw, seq = await self.subscribed_raw(ws, [])
        how = self.rng.choice(["close", "reset", "shutdown"])
        try:
            seen = await self.owed(observer, lambda: observer.must_deliver_of_run_started_after(seq))
            if seen is None:
                self.counts["leavers_without_event"] += 1
                return
            # Somewhere inside the timeout: the daemon is writing it, or waiting for room to.
            await trio.sleep(self.rng.uniform(0, 0.5) * self.timeout)
            self.counts[f"left_mid_{seen[0]}"] += 1
            self.counts["left_mid_must_deliver"] += 1
        finally:
            raw.close(how)

    async def loop(self, what: Callable[[_Workspace], Any], name: str) -> None:
        while self.going():
            ws = self.rng.choice(self.workspaces)
            try:
                await what(ws)
            except (OSError, ConnectionLost, RpcError) as exc:
                self.violation(f"{name} on {ws.id} failed: {type(exc).__name__}: {exc}")
                return

    # --- churn

    async def churn(self, rng: random.Random) -> None:
        while self.going() or self.counts["churned"] < _MIN_CHURN:
            ws = rng.choice(self.workspaces)
            how = rng.choice(_CHURN)
            began = trio.current_time()
            with trio.move_on_after(self.churn_bound) as scope:
                try:
                    await how(self, rng, ws)
                except (OSError, ConnectionLost) as exc:
                    self.violation(f"churn {how.__name__} on {ws.id}: {type(exc).__name__}: {exc}")
                    return
                except RpcError as exc:
                    self.violation(f"churn {how.__name__} on {ws.id} got error {exc.code}: {exc.message}")
            took_ms = int((trio.current_time() - began) * 1000)
            self.counts["max_churn_ms"] = max(self.counts["max_churn_ms"], took_ms)
            if scope.cancelled_caught:
                self.violation(f"churn {how.__name__} on {ws.id} took over {self.churn_bound:.0f}s")
            self.counts["churned"] += 1
            self.counts[f"churn_{how.__name__}"] += 1

    # --- the whole

    async def run(self) -> Stats:
        for ws in self.workspaces:
            ws.path.mkdir(parents=True, exist_ok=True)
        async with open_client(self.socket_path) as runner, open_client(self.socket_path) as watcher:
            await runner.call("initialize", {"client_name": "stress-clients"})
            await watcher.call("initialize", {"client_name": "stress-observer"})
            stop = trio.Event()
            async with trio.open_nursery() as observers:
                for ws in self.workspaces:
                    ws.id = (await runner.call("workspace.open", {"path": str(ws.path)}))["id"]
                    ws.observer = _Observer(ws.id)
                    ready = trio.Event()
                    observers.start_soon(self.observe, watcher, ws, ready, stop)
                    await ready.wait()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self.pings, watcher)
                    for ws in self.workspaces:
                        sessions = [
                            (await runner.call("session.create", {"workspace_id": ws.id}))["id"] for _ in range(2)
                        ]
                        nursery.start_soon(self.run_sessions, runner, ws, sessions)
                    nursery.start_soon(self.loop, self.stall, "a staller")
                    # Two: whether a pause overlaps a burst the daemon cannot hold for it is timing's.
                    for _ in range(2):
                        nursery.start_soon(self.loop, self.pause, "a pauser")
                    nursery.start_soon(self.loop, self.half_close, "a half-closer")
                    nursery.start_soon(self.loop, self.leave_mid_must_deliver, "a leaver")
                    for i in range(_CHURNERS):
                        nursery.start_soon(self.churn, random.Random(f"{self.seed}-{i}"))
                await self.settle(runner)
                stop.set()
                # The observers end at their next event; a quiet workspace sends none.
                observers.cancel_scope.cancel()
        for ws in self.workspaces:
            assert ws.observer is not None
            self.counts["observed_events"] += ws.observer.events
        return Stats(dict(self.counts), list(self.violations))

    async def settle(self, client: Client) -> None:
        """Once idle: every accepted run has had exactly one run.complete at its observer, every request one answer."""
        for run_id, ws in self.maybe_accepted.items():
            try:
                await client.call("run.get", {"run_id": run_id})
            except RpcError:
                continue  # never accepted: its sender left before it was read
            self.accepted[run_id] = ws
            self.counts["churn_runs_accepted"] += 1
        for run_id in self.accepted:
            try:
                await client.call("run.wait", {"run_id": run_id, "timeout": self.run_budget})
            except RpcError as exc:
                self.violation(f"run {run_id} had no run.complete within {self.run_budget:.0f}s: {exc}")
        for run_id, ws in self.accepted.items():
            observer = ws.observer
            assert observer is not None
            # run.wait may answer before the observer's copy is on its way: give it the timeout.
            got = await observer.until(functools.partial(observer.completes.get, run_id), self.timeout + _SLACK)
            if got is not None:
                if len(got) != 1:
                    self.violation(f"the observer of {ws.id} got {len(got)} run.complete of {run_id}")
            elif observer.lost is None:
                self.violation(f"the observer of {ws.id}, connected throughout, never got the run.complete of {run_id}")
        for ws in self.workspaces:
            observer = ws.observer
            assert observer is not None
            for request_id in observer.requests:
                if observer.resolved[request_id] != 1:
                    got_resolved = observer.resolved[request_id]
                    self.violation(f"the observer of {ws.id} got {got_resolved} permission.resolved of {request_id}")
            self.counts["permission_requests"] += len(observer.requests)


def _brief(envelope: dict[str, Any]) -> dict[str, Any]:
    """What a check needs of an event: deltas' text is dropped as soon as it is read."""
    return {"seq": envelope["seq"], "type": envelope["type"]}


# --- churn: one short-lived connection each ------------------------------------------------------------


async def _connect_and_vanish(drive: _Drive, rng: random.Random, ws: _Workspace) -> None:
    raw = await _Raw.connect(drive.socket_path)
    raw.close(rng.choice(["close", "reset"]))


async def _half_a_request(drive: _Drive, rng: random.Random, ws: _Workspace) -> None:
    raw = await _Raw.connect(drive.socket_path)
    _msgid, data = raw.request("workspace.open", {"path": str(ws.path)})
    await raw.send(data[: rng.randint(1, len(data) - 1)])
    raw.close(rng.choice(["close", "reset"]))


async def _owed_a_run_wait(drive: _Drive, rng: random.Random, ws: _Workspace) -> None:
    raw = await _Raw.connect(drive.socket_path)
    target = next(iter(sorted(ws.running)), uuid.uuid4().hex)
    _msgid, data = raw.request("run.wait", {"run_id": target})
    await raw.send(data)
    if rng.random() < 0.5:
        await raw.call("ping", None, [])  # so the run.wait is surely being served
    raw.close(rng.choice(["close", "reset"]))


async def _subscribed_then_gone(drive: _Drive, rng: random.Random, ws: _Workspace) -> None:
    events: list[dict[str, Any]] = []
    raw = await _Raw.connect(drive.socket_path)
    try:
        if rng.random() < 0.5:
            await raw.call("workspace.open", {"path": str(ws.path)}, events)
        params: dict[str, Any] = {"workspace_id": ws.id}
        observer = ws.observer
        if rng.random() < 0.5 and observer is not None and observer.last_seq:
            # A replay the daemon is still writing when we go.
            params["since"] = rng.randint(0, observer.last_seq)
        await raw.call("events.subscribe", params, events)
        with trio.move_on_after(0.5):
            for _ in range(rng.randint(0, 20)):
                if await raw.next() is None:
                    break
    finally:
        raw.close(rng.choice(["close", "reset", "shutdown"]))


async def _sent_and_gone(drive: _Drive, rng: random.Random, ws: _Workspace) -> None:
    raw = await _Raw.connect(drive.socket_path)
    try:
        events: list[dict[str, Any]] = []
        session = await raw.call("session.create", {"workspace_id": ws.id}, events)
        run_id = uuid.uuid4().hex
        prompt = json.dumps({"chunks": ["gone "] * rng.randint(1, 50), "delay_ms": rng.randint(0, 2)})
        params = {"workspace_id": ws.id, "session_id": session["id"], "prompt": prompt}
        _msgid, data = raw.request("agent.send", {**params, "model": "scripted", "run_id": run_id})
        drive.maybe_accepted[run_id] = ws
        await raw.send(data)
    finally:
        raw.close(rng.choice(["close", "reset"]))


async def _pings_unread(drive: _Drive, rng: random.Random, ws: _Workspace) -> None:
    raw = await _Raw.connect(drive.socket_path)
    await raw.send(b"".join(raw.request("ping")[1] for _ in range(rng.randint(1, 500))))
    raw.close(rng.choice(["close", "reset"]))


async def _half_closed_and_gone(drive: _Drive, rng: random.Random, ws: _Workspace) -> None:
    raw = await _Raw.connect(drive.socket_path)
    try:
        await raw.call("events.subscribe", {"workspace_id": ws.id}, [])
        raw.sock.shutdown(socket.SHUT_WR)
    finally:
        raw.close()


async def _a_real_client(drive: _Drive, rng: random.Random, ws: _Workspace) -> None:
    async with open_client(drive.socket_path) as client, client.subscribe(ws.id) as subscription:
        with trio.move_on_after(0.5):
            for _ in range(rng.randint(0, 5)):
                await subscription.__anext__()


_CHURN = (
    _connect_and_vanish,
    _half_a_request,
    _owed_a_run_wait,
    _subscribed_then_gone,
    _subscribed_then_gone,
    _sent_and_gone,
    _pings_unread,
    _half_closed_and_gone,
    _a_real_client,
)


async def drive_clients(
    socket_path: Path,
    project: Path,
    seed: int,
    deadline: float,
    *,
    must_deliver_timeout: float = 10.0,
    churn_bound: float | None = None,
) -> Stats:
    """Slow and vanishing clients around streaming and tool-calling runs, until `deadline` (a trio.current_time()).

    `must_deliver_timeout` is the daemon's (`--must-deliver-timeout`): the
    bound within which a subscriber that cannot take a must-deliver event is
    closed. The workspaces are `project/clients-a` and `project/clients-b`.
    `churn_bound` is how long one churner may take in all (the timeout and a
    loaded machine's allowance, unless given).
    """
    return await _Drive(socket_path, project, seed, deadline, must_deliver_timeout, churn_bound).run()
