"""The one place a run's RunComplete is published: exactly once, whatever asks."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager

import attrs
import trio

from agentd.protocol import RunComplete, events, run_complete, unstructure
from agentd.pubsub import Broker
from agentd.shutdown import Shutdown
from agentd.store import Store, TerminalRecord

from ._run import Run, RunState

__all__ = ["RunTerminal"]

log = logging.getLogger(__name__)

# Room for the store write on top of the must-deliver wait.
_BOOKKEEPING_MARGIN = 5.0
# How often a RunComplete the store refused is written again.
_RECORD_RETRY_INTERVAL = 5.0

# (message_id, text, finish_reason): how a run's assistant message ends.
FinalMessage = tuple[str, str, str | None]


@attrs.define
class _Unrecorded:
    run: Run
    complete: RunComplete
    final_message: FinalMessage | None


class RunTerminal:
    def __init__(self, broker: Broker, store: Store, on_finished: Callable[[Run], None], shutdown: Shutdown) -> None:
        self._broker = broker
        self._shutdown = shutdown
        self._store = store
        self._on_finished = on_finished
        # RunCompletes published but not yet in the database (they are in its
        # terminal log, or nowhere durable): written again until they are.
        self._unrecorded: dict[str, _Unrecorded] = {}

    async def keep_recording(self) -> None:
        """Retry unrecorded RunCompletes now and then, for the workspace's life."""
        while True:
            await trio.sleep(_RECORD_RETRY_INTERVAL)
            await self.record_unrecorded()

    async def record_unrecorded(self) -> None:
        for run_id, entry in list(self._unrecorded.items()):
            try:
                message = await self._store.finish_run(entry.complete, entry.final_message)
            except Exception as exc:
                log.warning("run %s: recording its RunComplete failed again: %s", run_id, exc)
                return
            del self._unrecorded[run_id]
            self._on_finished(entry.run)
            if message is not None:
                # The message's final text, now that the database has it too.
                self._broker.publish(events.MESSAGE_UPDATED, unstructure(message))

    @property
    def bound(self) -> float:
        """How long the shielded end-of-run work may take before it is abandoned."""
        return self._broker.must_deliver_timeout + _BOOKKEEPING_MARGIN

    def shielded(self) -> AbstractContextManager[trio.CancelScope]:
        """The scope end-of-run work runs in: shielded, `bound`, and never past the shutdown deadline."""
        return self._shutdown.shielded(self.bound)

    async def complete(
        self,
        run: Run,
        *,
        message_id: str | None = None,
        text: str = "",
        error: str | None = None,
        cancelled: bool = False,
        finish_reason: str | None = None,
        changes: int = 0,
        stop_reason: str | None = None,
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
        if cancelled and run.abort_error is not None:
            # Stopped because its workspace failed: an error, not the user's cancel.
            cancelled, error = False, run.abort_error
        rc = run_complete(
            run.session_id,
            run.id,
            message_id=message_id,
            text=text,
            error=error,
            cancelled=cancelled,
            changes=changes,
            stop_reason=stop_reason,
        )
        run.complete = rc
        run.state = RunState.DONE
        final = (message_id, text, finish_reason) if message_id is not None and finish_reason else None
        with self.shielded() as scope:
            message = None
            recorded = False
            try:
                message = await self._store.finish_run(rc, final)
                recorded = True
            except Exception:
                log.exception("run %s: recording its RunComplete failed", run.id)
            if recorded:
                run.finished.set()
                # From now on run.wait and run.get answer from the store.
                self._on_finished(run)
                if message is not None:
                    self._broker.publish(events.MESSAGE_UPDATED, unstructure(message))
                await self._broker.publish_must_deliver(events.RUN_COMPLETE, unstructure(rc))
            else:
                await self._publish_unrecorded(run, rc, final)
        if scope.cancelled_caught:
            log.error("run %s: publishing its RunComplete took over %.1fs", run.id, self.bound)
        return True

    async def _publish_unrecorded(self, run: Run, rc: RunComplete, final: FinalMessage | None) -> None:
        """Publish a RunComplete the database refused, once it is durable beside it.

        What clients are told must be what the next daemon finds, even if this
        one dies before the database takes the write: so the RunComplete goes
        into the store's terminal log first, with the seq it is about to be
        published under. No checkpoint between reading that seq and publishing.
        """
        seq = self._broker.seq + 1
        try:
            self._store.terminal_log.append(TerminalRecord(run.workspace_id, seq, rc, final))
        except OSError as exc:
            # Nothing durable at all. The run still ends (it must never end
            # silently), but not as a success nothing holds; a daemon that dies
            # before the database recovers finishes it again as interrupted.
            log.error("run %s: its RunComplete could not be kept beside the database either: %s", run.id, exc)
            if not rc.cancelled:
                rc = attrs.evolve(rc, error=rc.error or f"the run could not be saved: {exc}")
                run.complete = rc
        self._unrecorded[run.id] = _Unrecorded(run, rc, final)
        # run.wait and run.get answer from memory until the database has it.
        run.finished.set()
        event = await self._broker.publish_must_deliver(events.RUN_COMPLETE, unstructure(rc))
        if event.seq != seq:
            log.error("run %s: its RunComplete went out as seq %d, not the %d kept aside", run.id, event.seq, seq)
