"""A workspace's event fan-out: one bounded queue per subscriber, two delivery classes.

Lossy events (deltas, status) never wait. A delta that finds its subscriber's
queue nearly full is appended to the delta at the queue's tail when it
continues it (a burst is not a lag: the subscriber loses no text, and the room
left takes the events that end the burst); any lossy event that finds no room
is lost for that subscriber alone, the loss is counted, and it is told with one
`events.gap` once it has room again. Must-deliver events (run.complete) wait for
room, in order behind everything already queued; a subscriber that cannot take
one within the must-deliver timeout is disconnected, never skipped while it
stays connected. Subscribers that keep up are served at once either way: the
waiting happens per subscriber, concurrently.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable
from typing import Any, Final

import trio

from agentd.protocol import GapPayload, events, unstructure
from agentd.shutdown import Shutdown

from ._event import Event
from ._queue import EventQueue

__all__ = ["Broker", "DropStats", "Event", "Subscriber"]

log = logging.getLogger(__name__)

DEFAULT_SUBSCRIBER_CAPACITY: Final = 1024
DEFAULT_MUST_DELIVER_TIMEOUT: Final = 10.0


class DropStats:
    """Daemon-wide count of lossy events dropped for lagging subscribers."""

    __slots__ = ("events_dropped",)

    def __init__(self) -> None:
        self.events_dropped = 0


class Subscriber:
    """One subscription: a bounded queue its connection's writer drains."""

    def __init__(
        self,
        subscription_id: str,
        workspace_id: str,
        capacity: int,
        on_overflow: Callable[[Subscriber], None],
        on_close: Callable[[Subscriber], None],
    ) -> None:
        self.id = subscription_id
        self.workspace_id = workspace_id
        self._queue = EventQueue(capacity)
        #: What the connection's writer reads: a memory receive channel's interface.
        self.receive_channel = self._queue
        self._on_overflow = on_overflow
        self._on_close = on_close
        self.dropped_total = 0
        # Losses not told yet, oldest first, each run `[count, seq of its last
        # event]`. A run never spans a must-deliver event that waits for room:
        # the gap for what was lost before it goes ahead of it, the gap for what
        # was lost after it behind it, so seq never goes back.
        self._losses: deque[list[int]] = deque()
        # ticket -> seq of the must-deliver event waiting with it.
        self._waiting_seqs: dict[int, int] = {}
        # Must-deliver events that found no room wait their turn, in seq order:
        # tickets are handed out as they are published, served strictly in turn.
        self._tickets_issued = 0
        self._turn = 0
        self._abandoned: set[int] = set()
        self._turn_changed = trio.lowlevel.ParkingLot()
        # Deadlines of the must-deliver events queued but not yet written out,
        # oldest first: the writer must flush each by its deadline or the
        # subscriber is disconnected. A channel with room is not delivery.
        self._flush_deadlines: deque[float] = deque()
        #: The writer's current write, whose deadline a new must-deliver event tightens.
        self.write_scope: trio.CancelScope | None = None
        self.closed = False
        self.disconnected = False

    # --- the writer's side

    @property
    def flush_deadline(self) -> float:
        """When the oldest unwritten must-deliver event must be on the wire (inf if none)."""
        return self._flush_deadlines[0] if self._flush_deadlines else math.inf

    def flushed(self, must_deliver_count: int) -> None:
        """The writer put this many must-deliver events on the wire."""
        for _ in range(must_deliver_count):
            if self._flush_deadlines:
                self._flush_deadlines.popleft()

    def take_gap(self) -> Event | None:
        """The `events.gap` owed to this subscriber now, if any, clearing that debt.

        Only for losses older than every must-deliver event still waiting for
        room: the rest is owed behind those, and is taken once they are queued.
        """
        limit = min(self._waiting_seqs.values(), default=math.inf)
        count = 0
        last = 0
        while self._losses and self._losses[0][1] < limit:
            lost, last = self._losses.popleft()
            count += lost
        if not count:
            return None
        return Event(self.workspace_id, last, events.EVENTS_GAP, unstructure(GapPayload(count)))

    def close(self) -> None:
        """End the subscription: the broker forgets it, its writer drains and stops."""
        if not self.closed:
            self.closed = True
            self._queue.close()
            self._on_close(self)

    def disconnect(self, missed: str) -> None:
        """Cut off a subscriber that did not take a must-deliver event in time, and say so."""
        if self.disconnected:
            return
        log.warning(
            "subscriber %s of workspace %s did not take %s; disconnecting it",
            self.id,
            self.workspace_id,
            missed,
        )
        self.disconnected = True
        self.close()
        self._on_overflow(self)

    # --- the broker's side

    def _try_put(self, event: Event) -> bool:
        """Queue `event` now if it can go in order; False if it would have to wait."""
        if self.closed:
            return True  # nobody left to tell
        if self._turn != self._tickets_issued:
            return False  # must-deliver events are waiting: nothing overtakes them
        if self._losses:
            # The gap goes where the lost events were, ahead of anything newer
            # (no must-deliver event waits: it takes them all).
            gap = self.take_gap()
            assert gap is not None
            try:
                self._queue.send_nowait(gap)
            except trio.WouldBlock:
                self._losses.appendleft([gap.payload["dropped"], gap.seq])
                return False
        queue = self._queue
        if queue.absorb(event):
            return True
        try:
            queue.send_nowait(event)
        except trio.WouldBlock:
            return False
        return True

    def _drop(self, event: Event, stats: DropStats) -> None:
        losses = self._losses
        # A must-deliver event published since the last loss starts a new run.
        if losses and losses[-1][1] > max(self._waiting_seqs.values(), default=0):
            losses[-1][0] += 1
            losses[-1][1] = event.seq
        else:
            losses.append([1, event.seq])
        self.dropped_total += 1
        stats.events_dropped += 1

    def _queued_must_deliver(self, deadline: float) -> None:
        if self.closed:
            return
        self._flush_deadlines.append(deadline)
        scope = self.write_scope
        if scope is not None and deadline < scope.deadline:
            scope.deadline = deadline

    def _take_ticket(self, seq: int) -> int:
        ticket = self._tickets_issued
        self._tickets_issued += 1
        self._waiting_seqs[ticket] = seq
        return ticket

    async def _put_in_turn(self, ticket: int, event: Event, deadline: float) -> None:
        """Wait for room, behind every must-deliver event published before this one."""
        try:
            while self._turn != ticket:
                await self._turn_changed.park()
            # Events lost before this one are owed first: the gap goes ahead
            # (those lost since it was published are owed behind it).
            gap = self.take_gap()
            if gap is not None:
                await self._queue.send(gap)
            # Owed from now on, before it is queued: the writer may take and write it
            # before this task runs again, and a deadline recorded after that would
            # outlive its event and cut off a subscriber that owes nothing. Meanwhile
            # it bounds the write that holds it up, as it would once queued.
            self._queued_must_deliver(deadline)
            await self._queue.send(event)
        finally:
            self._end_turn(ticket)

    def _end_turn(self, ticket: int) -> None:
        self._waiting_seqs.pop(ticket, None)
        if self._turn != ticket:
            self._abandoned.add(ticket)  # gave up before its turn: skip it when it comes
            return
        self._turn += 1
        while self._turn in self._abandoned:
            self._abandoned.discard(self._turn)
            self._turn += 1
        self._turn_changed.unpark_all()
        if self._turn == self._tickets_issued and not self.closed and not len(self._queue):
            # The writer took everything, this event too, while the losses
            # behind it were still held back for it: they are owed now, and
            # nothing may be published to carry them.
            gap = self.take_gap()
            if gap is not None:
                self._queue.send_nowait(gap)


class Broker:
    """The event publisher of one workspace: assigns `seq` and fans events out.

    Two hooks connect it to durability without putting I/O in the publish
    path: `on_logged` sees every event whose type is in `logged_types` (the
    workspace journals those for replay), and `on_seq_low` is called once the
    seqs reserved in the store run low (the workspace reserves more, and
    calls `reserved(through)`).
    """

    def __init__(
        self,
        workspace_id: str,
        stats: DropStats,
        must_deliver_timeout: float = DEFAULT_MUST_DELIVER_TIMEOUT,
        *,
        last_seq: int = 0,
        logged_types: frozenset[str] = frozenset(),
        on_logged: Callable[[Event], None] | None = None,
        on_seq_low: Callable[[], None] | None = None,
        shutdown: Shutdown | None = None,
    ) -> None:
        self.workspace_id = workspace_id
        # Once the daemon shuts down, must-deliver waits are held to its deadline.
        self._shutdown = shutdown if shutdown is not None else Shutdown()
        self.must_deliver_timeout = must_deliver_timeout
        self._stats = stats
        self._seq = last_seq
        self._subscribers: dict[str, Subscriber] = {}
        self._logged_types = logged_types
        self._on_logged = on_logged
        self._on_seq_low = on_seq_low
        self._seq_low_at = math.inf

    @property
    def seq(self) -> int:
        return self._seq

    def resume(self, last_seq: int) -> None:
        """Continue numbering after `last_seq` (before anything is published)."""
        self._seq = last_seq

    def set_on_seq_low(self, callback: Callable[[], None]) -> None:
        self._on_seq_low = callback

    def reserved(self, low_at: int) -> None:
        """Seqs are reserved well past `low_at`; call `on_seq_low` when it is reached."""
        self._seq_low_at = low_at

    def __len__(self) -> int:
        return len(self._subscribers)

    def subscribe(
        self,
        subscription_id: str,
        capacity: int,
        on_overflow: Callable[[Subscriber], None],
    ) -> Subscriber:
        sub = Subscriber(subscription_id, self.workspace_id, capacity, on_overflow, self._forget)
        self._subscribers[subscription_id] = sub
        return sub

    def _forget(self, sub: Subscriber) -> None:
        if self._subscribers.get(sub.id) is sub:
            del self._subscribers[sub.id]

    def unsubscribe(self, subscription_id: str) -> None:
        sub = self._subscribers.get(subscription_id)
        if sub is not None:
            sub.close()

    def _next_event(self, type: str, payload: dict[str, Any], must_deliver: bool = False) -> Event:
        self._seq += 1
        event = Event(self.workspace_id, self._seq, type, payload, must_deliver)
        if type in self._logged_types and self._on_logged is not None:
            self._on_logged(event)
        if self._seq >= self._seq_low_at and self._on_seq_low is not None:
            self._seq_low_at = math.inf
            self._on_seq_low()
        return event

    def publish(self, type: str, payload: dict[str, Any]) -> Event:
        """Lossy: never waits; a subscriber without room loses this event alone."""
        event = self._next_event(type, payload)
        for sub in self._subscribers.values():
            if not sub._try_put(event):
                sub._drop(event, self._stats)
        return event

    async def publish_must_deliver(self, type: str, payload: dict[str, Any]) -> Event:
        """Queue `event` for every subscriber, waiting for room where there is none.

        Each subscriber must take it, and its writer put it on the wire, within
        the must-deliver timeout, or that subscriber is disconnected. The wait is
        per subscriber and concurrent: one stuck subscriber delays nobody else.
        """
        event = self._next_event(type, payload, must_deliver=True)
        deadline = self._shutdown.delivery_deadline(self.must_deliver_timeout)
        waiting: list[tuple[Subscriber, int]] = []
        for sub in list(self._subscribers.values()):
            if sub._try_put(event):
                sub._queued_must_deliver(deadline)
            else:
                # The ticket is taken now, in publish order, not when a task starts.
                waiting.append((sub, sub._take_ticket(event.seq)))
        if waiting:
            async with trio.open_nursery() as nursery:
                for sub, ticket in waiting:
                    nursery.start_soon(self._deliver_or_disconnect, sub, ticket, event, deadline)
        return event

    async def _deliver_or_disconnect(self, sub: Subscriber, ticket: int, event: Event, deadline: float) -> None:
        with trio.move_on_at(deadline):
            try:
                await sub._put_in_turn(ticket, event, deadline)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                pass  # it went away while we waited: nothing left to deliver to
            return
        sub.disconnect(f"{event.type} seq={event.seq} within {self.must_deliver_timeout:.1f}s")

    def close(self) -> None:
        """End every subscription: their writers drain what is queued and stop."""
        for sub in list(self._subscribers.values()):
            sub.close()
