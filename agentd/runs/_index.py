"""Every run by run_id: the ones still running in memory, the rest in the store.

What `agent.send` (is this run_id known?), `run.wait` and `run.get` consult.
"""

from __future__ import annotations

import math

import trio

from agentd.errors import InvalidRequest, NotFound, TimedOut
from agentd.protocol import RunComplete, RunInfo
from agentd.store import Store

from ._run import Run

__all__ = ["RunIndex"]


class RunIndex:
    """Every run by id: the unfinished ones in memory, the rest in the store."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._live: dict[str, Run] = {}

    def __len__(self) -> int:
        return len(self._live)

    def unfinished(self) -> int:
        """Runs accepted and without a RunComplete (one whose record failed stays listed, finished)."""
        return sum(1 for run in self._live.values() if run.complete is None)

    def add(self, run: Run) -> None:
        self._live[run.id] = run

    def get(self, run_id: str) -> Run | None:
        return self._live.get(run_id)

    def forget(self, run: Run) -> None:
        """A finished run is answered from the store from now on."""
        if self._live.get(run.id) is run:
            del self._live[run.id]

    async def wait(self, run_id: str, timeout: float | None) -> RunComplete:
        """The run's RunComplete, once it has one; TimedOut after `timeout` seconds."""
        if timeout is not None and timeout < 0:
            raise InvalidRequest("timeout: must be >= 0")
        run = self._live.get(run_id)
        if run is not None:
            with trio.move_on_after(timeout if timeout is not None else math.inf):
                await run.finished.wait()
            if run.complete is None:
                raise TimedOut(f"run {run_id} has not completed after {timeout}s")
            return run.complete
        record = await self._store.get_run(run_id)
        if record is None or record.complete is None:
            raise _no_run(run_id)
        return record.complete

    async def info(self, run_id: str) -> RunInfo:
        run = self._live.get(run_id)
        if run is not None:
            return RunInfo(
                run_id=run.id,
                workspace_id=run.workspace_id,
                session_id=run.session_id,
                model=run.model or "",
                prompt=run.prompt,
                state=run.state.value,
                created_at=run.created_at,
                complete=run.complete,
            )
        record = await self._store.get_run(run_id)
        if record is None:
            raise _no_run(run_id)
        return RunInfo(
            run_id=record.id,
            workspace_id=record.workspace_id,
            session_id=record.session_id,
            model=record.model,
            prompt=record.prompt,
            state=record.state,
            created_at=record.created_at,
            complete=record.complete,
        )


def _no_run(run_id: str) -> NotFound:
    return NotFound(f"run_id: no such run {run_id!r}")
