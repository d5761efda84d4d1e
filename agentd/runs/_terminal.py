"""The one place a run's RunComplete is published: exactly once, whatever asks."""

from __future__ import annotations

import logging
from collections.abc import Callable

import attrs
import trio

from agentd.protocol import RunComplete, events, unstructure
from agentd.pubsub import Broker
from agentd.store import Store

from ._run import Run, RunState

__all__ = ["RunTerminal"]

log = logging.getLogger(__name__)

# Room for the store write on top of the must-deliver wait.
_BOOKKEEPING_MARGIN = 5.0
# How often a RunComplete the store refused is written again.
_RECORD_RETRY_INTERVAL = 5.0


class RunTerminal:
    def __init__(self, broker: Broker, store: Store, on_finished: Callable[[Run], None]) -> None:
        self._broker = broker
        self._store = store
        self._on_finished = on_finished
        # RunCompletes published but not yet in the store: written again until
        # they are, so a restart does not finish their runs a second time.
        self._unrecorded: dict[str, tuple[Run, RunComplete]] = {}

    async def keep_recording(self) -> None:
        """Retry unrecorded RunCompletes now and then, for the workspace's life."""
        while True:
            await trio.sleep(_RECORD_RETRY_INTERVAL)
            await self.record_unrecorded()

    async def record_unrecorded(self) -> None:
        for run_id, (run, rc) in list(self._unrecorded.items()):
            try:
                await self._store.finish_run(rc)
            except Exception as exc:
                log.warning("run %s: recording its RunComplete failed again: %s", run_id, exc)
                return
            del self._unrecorded[run_id]
            self._on_finished(run)

    @property
    def bound(self) -> float:
        """How long the shielded end-of-run work may take before it is abandoned."""
        return self._broker.must_deliver_timeout + _BOOKKEEPING_MARGIN

    async def complete(
        self,
        run: Run,
        *,
        message_id: str | None = None,
        text: str = "",
        error: str | None = None,
        cancelled: bool = False,
        finish_reason: str | None = None,
    ) -> bool:
        """Decide `run`'s RunComplete, record it, and publish it; False if it already had one.

        With `message_id` and `finish_reason`, the run's assistant message is
        finished with `text` in the same transaction that records the
        RunComplete: the messages are durable before anyone hears the run is
        over, and `message.updated` goes out just ahead of `run.complete`.

        Shielded and bounded: a cancelled run must still report that it was
        cancelled, and a stuck subscriber is disconnected by the broker within
        the must-deliver timeout, so this cannot hang.
        """
        if run.complete is not None:
            return False
        rc = RunComplete(
            session_id=run.session_id,
            run_id=run.id,
            message_id=message_id,
            text=text,
            error=None if cancelled else error,
            cancelled=cancelled,
        )
        run.complete = rc
        run.state = RunState.DONE
        with trio.move_on_after(self.bound, shield=True) as scope:
            final = (message_id, text, finish_reason) if message_id is not None and finish_reason else None
            message = None
            recorded = False
            try:
                message = await self._store.finish_run(rc, final)
                recorded = True
            except Exception as exc:
                # The subscribers still get their terminal event (a run must never
                # end silently), but not a success the store does not hold.
                log.exception("run %s: recording its RunComplete failed", run.id)
                if not cancelled:
                    rc = attrs.evolve(rc, error=rc.error or f"the run could not be saved: {exc}")
                    run.complete = rc
                self._unrecorded[run.id] = (run, rc)
            run.finished.set()
            if recorded:
                # From now on run.wait and run.get answer from the store; until
                # then (and for the daemon's life if the write failed) from memory.
                self._on_finished(run)
            if message is not None:
                self._broker.publish(events.MESSAGE_UPDATED, unstructure(message))
            await self._broker.publish_must_deliver(events.RUN_COMPLETE, unstructure(rc))
        if scope.cancelled_caught:
            log.error("run %s: publishing its RunComplete took over %.1fs", run.id, self.bound)
        return True
