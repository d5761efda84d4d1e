"""The dispatcher: owns every run task of a workspace, one lane of runs per session.

A session runs one prompt at a time; later prompts wait in its lane's queue,
each with its own run_id and its own RunComplete. The dispatcher is the
boundary a run's failure stops at: it turns the error into `agent.error` and,
when the coordinator never got as far as publishing the run's RunComplete, a
fallback errored one. An error from one run never reaches another.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import attrs
import trio

from agentd.protocol import AgentErrorPayload, events, unstructure
from agentd.pubsub import Broker
from agentd.rpc import clip

from ._run import Run, RunState
from ._terminal import RunTerminal

__all__ = ["Dispatcher", "RunExecutor", "describe_error"]

log = logging.getLogger(__name__)


class RunExecutor(Protocol):
    """The coordinator: runs one accepted run and publishes its RunComplete."""

    async def run(self, run: Run) -> None: ...


class Closing(Exception):
    """The workspace is closing and takes no new runs."""


@attrs.define
class _Lane:
    session_id: str
    active: Run | None = None
    queue: deque[Run] = attrs.field(factory=deque)


def describe_error(exc: BaseException) -> str:
    """One line for the user, also for exception groups (their leaves, joined)."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe_error(e) for e in exc.exceptions)
    text = str(exc)
    return text or type(exc).__name__


class Dispatcher:
    def __init__(
        self,
        nursery: trio.Nursery,
        executor: RunExecutor,
        terminal: RunTerminal,
        broker: Broker,
        on_busy_changed: Callable[[str], Awaitable[None]],
    ) -> None:
        self._nursery = nursery
        self._executor = executor
        self._terminal = terminal
        self._broker = broker
        self._on_busy_changed = on_busy_changed
        self._lanes: dict[str, _Lane] = {}
        self._closing = False
        self._tasks = 0
        self._idle = trio.Event()
        self._idle.set()

    # --- what requests ask (all synchronous: no await between check and act)

    def accept(self, run: Run) -> bool:
        """Reserve `run` before the caller replies; True when it waits behind another.

        Synchronous on purpose: once this returns the run exists, so a cancel
        that arrives after the reply but before the run task starts finds it.
        """
        if self._closing:
            raise Closing("workspace is closing")
        lane = self._lanes.get(run.session_id)
        if lane is None:
            lane = self._lanes[run.session_id] = _Lane(run.session_id)
        if lane.active is not None:
            lane.queue.append(run)
            return True
        lane.active = run
        self._spawn(self._drive, lane)
        return False

    def _spawn(self, fn: Callable[[Any], Awaitable[None]], arg: Any) -> None:
        if self._tasks == 0:
            self._idle = trio.Event()
        self._tasks += 1
        self._nursery.start_soon(self._tracked, fn, arg)

    async def _tracked(self, fn: Callable[[Any], Awaitable[None]], arg: Any) -> None:
        try:
            await fn(arg)
        finally:
            self._tasks -= 1
            if self._tasks == 0:
                self._idle.set()

    async def wait_idle(self) -> None:
        """Until every run task, and every completion of a cleared run, has finished."""
        await self._idle.wait()

    def is_busy(self, session_id: str) -> bool:
        lane = self._lanes.get(session_id)
        return lane is not None and lane.active is not None

    def queued(self, session_id: str) -> list[Run]:
        lane = self._lanes.get(session_id)
        return list(lane.queue) if lane is not None else []

    def active_runs(self) -> int:
        return sum(1 for lane in self._lanes.values() if lane.active is not None)

    def clear_queue(self, session_id: str) -> list[Run]:
        """Drop the session's waiting runs; each still gets a cancelled RunComplete."""
        lane = self._lanes.get(session_id)
        if lane is None or not lane.queue:
            return []
        cleared = list(lane.queue)
        lane.queue.clear()
        # The workspace owns these completions, not the request that asked:
        # a client hanging up right after must not cost anyone their terminal event.
        self._spawn(self._complete_cleared, cleared)
        return cleared

    def cancel(self, session_id: str) -> tuple[Run | None, list[Run]]:
        """Cancel the session's active run and clear its queue.

        With nothing running or reserved this does nothing at all, so it cannot
        poison the session's next prompt.
        """
        cleared = self.clear_queue(session_id)
        lane = self._lanes.get(session_id)
        active = lane.active if lane is not None else None
        if active is not None:
            active.scope.cancel()
        return active, cleared

    def cancel_run(self, session_id: str, run_id: str) -> tuple[Run | None, list[Run]]:
        """Cancel one run, active or queued, and nothing else of the session.

        A client that queued a prompt behind someone else's cancels its own
        prompt, not theirs.
        """
        lane = self._lanes.get(session_id)
        if lane is None:
            return None, []
        if lane.active is not None and lane.active.id == run_id:
            lane.active.scope.cancel()
            return lane.active, []
        cleared = [r for r in lane.queue if r.id == run_id]
        if cleared:
            lane.queue.remove(cleared[0])
            self._spawn(self._complete_cleared, cleared)
        return None, cleared

    def close(self, error: str | None = None) -> None:
        """Take no new runs and stop every run there is.

        With `error` (the workspace failed), each run ends errored with it;
        otherwise cancelled.
        """
        self._closing = True
        if error is not None:
            for lane in self._lanes.values():
                for run in (lane.active, *lane.queue):
                    if run is not None:
                        run.abort_error = error
        for session_id in list(self._lanes):
            self.cancel(session_id)

    # --- the run tasks

    async def _drive(self, lane: _Lane) -> None:
        await self._notify_busy(lane.session_id)
        while lane.active is not None:
            await self._dispatch(lane.active)
            lane.active = lane.queue.popleft() if lane.queue else None
        del self._lanes[lane.session_id]
        await self._notify_busy(lane.session_id)

    async def _notify_busy(self, session_id: str) -> None:
        with self._terminal.shielded():
            try:
                await self._on_busy_changed(session_id)
            except Exception:
                log.exception("session %s: publishing its busy state failed", session_id)

    async def _dispatch(self, run: Run) -> None:
        """Run one accepted run to its one RunComplete."""
        run.state = RunState.RUNNING
        try:
            with run.scope:
                await self._executor.run(run)
        except* Exception as group:
            message = describe_error(group)
            log.info("run %s failed: %s", run.id, clip(message))
            with self._terminal.shielded():
                self._broker.publish(
                    events.AGENT_ERROR,
                    unstructure(AgentErrorPayload(run.session_id, run.id, message)),
                )
                # Only when the coordinator did not get as far as its own
                # RunComplete (say, an unknown model): never a second one.
                if run.complete is None:
                    await self._terminal.complete(run, error=message)
        finally:
            if run.complete is None:
                # Cancelled from outside the run's own scope (or a coordinator
                # that returned without publishing): the run still ends, once.
                cancelled = run.scope.cancel_called or run.scope.cancelled_caught
                await self._terminal.complete(
                    run,
                    cancelled=cancelled,
                    error=None if cancelled else "run ended without a result",
                )

    async def _complete_cleared(self, runs: list[Run]) -> None:
        for run in runs:
            await self._terminal.complete(run, cancelled=True)
