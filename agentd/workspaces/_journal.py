"""A workspace's event journal: the events a client may replay, on their way to the store.

Publishing never waits on the disk: logged events are kept here, in seq
order, until a background task has written them, and a replay reads both the
store and what is still here, so nothing published is missing from it.
"""

from __future__ import annotations

import logging

import trio

from agentd.protocol import events
from agentd.pubsub import Event
from agentd.store import Store

__all__ = ["LOGGED_EVENTS", "EventJournal"]

log = logging.getLogger(__name__)

# The terminal and state-changing events: enough to rebuild what a client
# shows. Deltas are left out; `message.updated` and `run.complete` carry the
# full text.
LOGGED_EVENTS = frozenset(
    {
        events.SESSION_CREATED,
        events.SESSION_UPDATED,
        events.SESSION_DELETED,
        events.MESSAGE_CREATED,
        events.MESSAGE_UPDATED,
        events.RUN_STARTED,
        events.AGENT_ERROR,
        events.RUN_COMPLETE,
        events.WORKSPACE_CLOSED,
    }
)

# If the store keeps failing, keep at most this many unwritten events.
_MAX_PENDING = 50_000


class EventJournal:
    def __init__(self, workspace_id: str, store: Store) -> None:
        self._workspace_id = workspace_id
        self._store = store
        self._pending: list[Event] = []
        self._wakeup = trio.Event()

    def record(self, event: Event) -> None:
        """Called by the broker, synchronously, for every logged event it publishes."""
        self._pending.append(event)
        if len(self._pending) > _MAX_PENDING:
            del self._pending[0]
        self._wakeup.set()

    def unwritten(self, since: int, through: int) -> list[Event]:
        return [e for e in self._pending if since < e.seq <= through]

    async def run(self) -> None:
        """Write what is recorded, as it comes, in batches."""
        while True:
            await self._wakeup.wait()
            self._wakeup = trio.Event()
            await self.flush()

    async def flush(self) -> None:
        batch = list(self._pending)
        if not batch:
            return
        try:
            await self._store.append_events(self._workspace_id, [(e.seq, e.type, e.payload) for e in batch])
        except Exception:
            # Kept, and tried again with the next batch: replay still sees them.
            log.exception("workspace %s: writing %d events to the log failed", self._workspace_id, len(batch))
            return
        # Only now: a replay that read the store before this write still found them here.
        written = {id(e) for e in batch}
        self._pending = [e for e in self._pending if id(e) not in written]
