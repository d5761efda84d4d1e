"""The promise's bookkeeping: which runs were accepted, what an observer saw of them, and what is wrong with that.

Sans-io: `accepted()` and `observe()` only record and check, so every check is
a unit test on a hand-made event sequence (tests/test_lifecycle_machine.py).
Only `settle()` talks to the daemon, once everything is idle: `run.wait` for
every accepted run, and `server.status`.

The observer is one subscription per workspace, connected throughout. When a
workspace closes (its subscription ends with `workspace.closed`) and opens
again, the observer subscribes again with `since` the last seq it saw, so the
event log fills the seam; events are told apart by (workspace_id, seq), which
the daemon never reuses, so an event that reaches the observer twice (live on
the old subscription and replayed on the new one) counts once.

What is checked, as each event comes (`violations()`):

- at most one `run.complete` per run;
- nothing published for a run after its `run.complete`, by seq (the one
  exception the protocol makes: the failed run's `agent.error`, right after
  it, with the same message);
- a session runs one run at a time: no `run.started` while another run of the
  session has started and not completed (by seq, as are the others: the
  events of two subscriptions can come interleaved);
- runs of one session start in the order they were accepted (for runs whose
  session the caller named in `accepted()`: it vouches that it awaited each
  send's reply before the next send to that session);
- at most one `permission.resolved` per `permission.request`;
- a `run.complete` for a run that was never accepted is only counted: another
  client may have sent it, or its reply was lost with a connection.

And once idle (`settle()`): every accepted run has its `run.complete`;
`run.wait` agrees with it; every request is resolved, and none was resolved
without being requested; `server.status`
`active_runs` is back to 0.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import attrs
import trio

from agentctl.client import Client, RpcError

__all__ = ["Ledger"]

# What run.wait and the run.complete event must agree on.
_AGREED = ("run_id", "session_id", "message_id", "text", "error", "cancelled", "stop_reason", "changes")


@attrs.define
class _Run:
    workspace_id: str
    session_id: str | None = None
    accepted: bool = False
    # Set by the caller of accepted(): the order check applies to this run.
    ordered: bool = False
    started_seq: int | None = None
    complete: dict[str, Any] | None = None
    complete_seq: int | None = None
    # The highest seq of an event naming this run, other than its run.complete and its agent.error.
    last_seq: int = 0
    agent_errors: int = 0


@attrs.define
class _Request:
    workspace_id: str
    run_id: str | None
    requested: bool = False
    resolved: int = 0


class Ledger:
    def __init__(self, how_to_reproduce: str = "") -> None:
        # Appended to every violation: how to run this again ("seed 7: pytest ...").
        self.how_to_reproduce = how_to_reproduce
        self.counts: dict[str, int] = Counter()
        self._runs: dict[str, _Run] = {}
        # session -> its runs in the order they were accepted (those the order check applies to).
        self._accept_order: dict[str, list[str]] = {}
        # session -> its runs that started.
        self._session_runs: dict[str, list[str]] = {}
        # Pairs of runs already reported, so that a broken order is told once.
        self._reported: set[tuple[str, str]] = set()
        self._requests: dict[str, _Request] = {}
        # (workspace_id, seq) -> (type, run_id) of each event seen.
        self._seen: dict[tuple[str, int], tuple[str, str | None]] = {}
        self._violations: list[str] = []
        self._changed = trio.Event()

    # --- what the caller tells ---------------------------------------------------------------------------------

    def accepted(
        self, workspace_id: str, run_id: str, *, session_id: str | None = None, queued: bool | None = None
    ) -> None:
        """`agent.send` replied without an error: the run is owed exactly one run.complete.

        With `session_id`, the caller vouches that this is the order the daemon
        accepted the session's runs in, and their run.started must keep it.
        """
        run = self._runs.setdefault(run_id, _Run(workspace_id))
        if run.accepted:
            return  # sent again with the same run_id: the same run
        run.accepted = True
        self.counts["runs_accepted"] += 1
        if queued:
            self.counts["runs_queued"] += 1
        if session_id is not None:
            if run.session_id is not None and run.session_id != session_id:
                self._violate(
                    f"run {run_id} was accepted for session {session_id} but its events name {run.session_id}"
                )
            run.session_id = session_id
            if run.started_seq is None:
                # A run whose run.started came before its send's reply is out of the order check.
                run.ordered = True
                self._accept_order.setdefault(session_id, []).append(run_id)
        self._changed.set()

    def observe(self, event: dict[str, Any]) -> None:
        """One event envelope of an observer subscription."""
        workspace_id, seq, kind = event["workspace_id"], event["seq"], event["type"]
        payload = event.get("payload") or {}
        if kind == "events.gap":
            if "dropped" in payload:
                # Lossy events it fell behind on: the must-deliver ones it checks still come.
                self.counts["observer_dropped"] += int(payload["dropped"])
            else:
                # A replay that cannot promise the log after `since`: what the observer checks may be missing.
                self._violate(f"the observer's replay of {workspace_id} opens with a gap at seq {seq}: {payload}")
            return
        if (workspace_id, seq) in self._seen:
            return
        run_id = payload.get("run_id") if isinstance(payload, dict) else None
        self._seen[(workspace_id, seq)] = (kind, run_id if isinstance(run_id, str) else None)
        self.counts["events"] += 1
        self.counts[f"events.{kind}"] += 1
        if kind == "run.complete":
            self._run_complete(workspace_id, seq, payload)
        elif kind == "permission.request":
            self._permission_request(workspace_id, seq, payload)
        elif kind == "permission.resolved":
            self._permission_resolved(workspace_id, seq, payload)
        if isinstance(run_id, str) and kind != "run.complete":
            self._event_of_run(workspace_id, seq, kind, run_id, payload)
        self._changed.set()

    def seen(self, workspace_id: str, seq: int) -> tuple[str, str | None] | None:
        """The type and run_id of the event the observer saw at `seq`, or None: to check another subscriber against."""
        return self._seen.get((workspace_id, seq))

    def complete_of(self, run_id: str) -> dict[str, Any] | None:
        """The run.complete the observer saw for `run_id` (its first), or None: to check the run's record against."""
        run = self._runs.get(run_id)
        return run.complete if run is not None else None

    def violations(self) -> list[str]:
        """What is already wrong, each a sentence ending with how to reproduce it."""
        return list(self._violations)

    # --- once idle ---------------------------------------------------------------------------------------------

    async def settle(self, client: Client, timeout: float) -> list[str]:
        """What is wrong once every accepted run should have ended, waiting at most `timeout` in all.

        The observer must still be running (its events come in meanwhile).
        Returns every violation, those found before included.
        """
        with trio.move_on_after(timeout) as waiting:
            while not self._all_complete():
                self._changed = trio.Event()
                await self._changed.wait()
        if waiting.cancelled_caught:
            for run_id, run in self._runs.items():
                if run.accepted and run.complete is None:
                    self._violate(f"accepted run {run_id} (workspace {run.workspace_id}) has no run.complete")
        for request_id, request in self._requests.items():
            if not request.requested:
                self._violate(f"permission request {request_id} of run {request.run_id} was resolved, never requested")
            elif request.resolved == 0:
                self._violate(f"permission request {request_id} of run {request.run_id} was never resolved")
        with trio.move_on_after(timeout) as waiting:
            for run_id, run in self._runs.items():
                if run.accepted and run.complete is not None:
                    await self._check_wait(client, run_id, run.complete)
        if waiting.cancelled_caught:
            self._violate(f"run.wait did not answer for every completed run within {timeout} s")
        await self._check_idle(client, timeout)
        return self.violations()

    async def _check_wait(self, client: Client, run_id: str, event: dict[str, Any]) -> None:
        try:
            waited = await client.call("run.wait", {"run_id": run_id, "timeout": 0})
        except RpcError as exc:
            self._violate(f"run.wait for completed run {run_id} failed: {exc}")
            return
        differ = {key: (waited.get(key), event.get(key)) for key in _AGREED if waited.get(key) != event.get(key)}
        if differ:
            self._violate(f"run.wait disagrees with run.complete for run {run_id}: (run.wait, event) {differ}")

    async def _check_idle(self, client: Client, timeout: float) -> None:
        # The count lives in the daemon: polled, with a bound.
        active = None
        with trio.move_on_after(timeout):
            while True:
                active = (await client.call("server.status"))["active_runs"]
                if active == 0:
                    return
                await trio.sleep(0.02)
        self._violate(f"server.status active_runs is {active}, not 0, {timeout} s after every run completed")

    def _all_complete(self) -> bool:
        return all(run.complete is not None for run in self._runs.values() if run.accepted)

    # --- the checks ----------------------------------------------------------------------------------------

    def _run_complete(self, workspace_id: str, seq: int, payload: dict[str, Any]) -> None:
        run_id, session_id = payload["run_id"], payload.get("session_id")
        run = self._runs.setdefault(run_id, _Run(workspace_id))
        self.counts["run_completes"] += 1
        if run.complete is not None:
            self._violate(
                f"run {run_id} has a second run.complete (seq {run.complete_seq} and {seq}):"
                f" {run.complete} then {payload}"
            )
            return
        if not run.accepted:
            self.counts["run_completes_not_accepted_here"] += 1
        run.complete, run.complete_seq = payload, seq
        if run.session_id is None:
            run.session_id = session_id
        if run.last_seq > seq:
            self._violate(f"run {run_id} published an event (seq {run.last_seq}) after its run.complete (seq {seq})")
        if run.started_seq is not None and isinstance(run.session_id, str):
            self._check_session(run.session_id)
        if payload.get("cancelled") and payload.get("error") is not None:
            self._violate(f"run {run_id}'s run.complete is cancelled and has an error: {payload}")

    def _event_of_run(self, workspace_id: str, seq: int, kind: str, run_id: str, payload: dict[str, Any]) -> None:
        run = self._runs.setdefault(run_id, _Run(workspace_id))
        session_id = payload.get("session_id")
        if run.session_id is None and isinstance(session_id, str):
            run.session_id = session_id
        if kind == "agent.error":
            run.agent_errors += 1
            # A failed run's agent.error follows its run.complete, with the same message: not an event "after" it.
            if run.agent_errors > 1:
                self._violate(f"run {run_id} has {run.agent_errors} agent.error events (seq {seq})")
            if run.complete is not None and payload.get("message") != run.complete.get("error"):
                self._violate(
                    f"run {run_id}'s agent.error (seq {seq}) says {payload.get('message')!r},"
                    f" its run.complete's error {run.complete.get('error')!r}"
                )
            return
        run.last_seq = max(run.last_seq, seq)
        if run.complete_seq is not None and seq > run.complete_seq:
            self._violate(f"run {run_id} published {kind} (seq {seq}) after its run.complete (seq {run.complete_seq})")
        if kind == "run.started" and isinstance(session_id, str):
            self._run_started(run_id, run, session_id, seq)

    def _run_started(self, run_id: str, run: _Run, session_id: str, seq: int) -> None:
        if run.started_seq is not None:
            self._violate(f"run {run_id} started twice (seq {run.started_seq} and {seq})")
            return
        run.started_seq = seq
        self._session_runs.setdefault(session_id, []).append(run_id)
        self._check_session(session_id)

    def _check_session(self, session_id: str) -> None:
        """One run at a time, started in the order accepted: by seq, whatever order the events came in."""
        started = sorted((self._runs[r].started_seq or 0, r) for r in self._session_runs.get(session_id, []))
        for (start, run_id), (next_start, next_id) in zip(started, started[1:], strict=False):
            run = self._runs[run_id]
            pair = (run_id, next_id)
            if pair in self._reported:
                continue
            if run.complete_seq is not None and run.complete_seq > next_start:
                self._reported.add(pair)
                self._violate(
                    f"run {next_id} started (seq {next_start}) while run {run_id} of the same session {session_id}"
                    f" ran (seq {start} to {run.complete_seq})"
                )
            order = self._accept_order.get(session_id, [])
            if run.ordered and self._runs[next_id].ordered and order.index(next_id) < order.index(run_id):
                self._reported.add(pair)
                self._violate(
                    f"run {next_id} of session {session_id} was accepted before run {run_id}"
                    f" but started after it (seq {next_start} after {start})"
                )

    def _permission_request(self, workspace_id: str, seq: int, payload: dict[str, Any]) -> None:
        request = self._requests.setdefault(payload["request_id"], _Request(workspace_id, payload.get("run_id")))
        if request.requested:
            self._violate(f"permission request {payload['request_id']} was published twice (again at seq {seq})")
        request.requested = True

    def _permission_resolved(self, workspace_id: str, seq: int, payload: dict[str, Any]) -> None:
        request_id = payload["request_id"]
        # Its request may come later: replayed on a new subscription, it can arrive after this.
        request = self._requests.setdefault(request_id, _Request(workspace_id, payload.get("run_id")))
        request.resolved += 1
        self.counts[f"permission.{payload.get('outcome')}"] += 1
        if request.resolved > 1:
            self._violate(f"permission request {request_id} was resolved {request.resolved} times (again at seq {seq})")

    def _violate(self, what: str) -> None:
        self._violations.append(f"{what} ({self.how_to_reproduce})" if self.how_to_reproduce else what)
