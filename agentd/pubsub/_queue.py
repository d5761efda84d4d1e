"""A subscriber's bounded event queue, whose last `message.delta` can absorb the next one.

A trio memory channel would do, but its buffer is out of reach: a burst of
deltas that fills it could only be dropped. Here, once the queue is nearly
full, a delta that continues the one at the tail exactly (same message, offset
where the tail's text ends) is appended to it, so a subscriber that is behind
by a burst, not by a lag, loses nothing. The last part of the queue is kept
for the events that end a burst (`message.updated`, `session.updated`): they
cannot be merged, and the subscriber that kept up should not lose them either.
The merged delta is built for this subscriber only, when it is taken; every
other event stays the one shared object.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Final

import trio

from agentd.protocol import events

from ._event import Event

__all__ = ["MAX_COALESCED_TEXT", "EventQueue"]

# A delta grown to this many code points takes no more: the next one is
# dropped. What a stalled subscriber holds stays bounded.
MAX_COALESCED_TEXT: Final = 1 << 18
# Deltas are merged once fewer than capacity // this slots are free.
_RESERVE_DIVISOR: Final = 16


class EventQueue:
    """Bounded FIFO of events; one producer side (the broker), one consumer (the writer).

    The consumer side has a memory receive channel's shape (`receive`,
    `receive_nowait`, `async for`, `EndOfChannel` once closed and drained), so a
    writer reads it as it would a channel.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"a subscriber queue needs room for at least one event, not {capacity}")
        self._capacity = capacity
        self._absorb_from = capacity - capacity // _RESERVE_DIVISOR
        self._items: deque[Event] = deque()
        self._closed = False
        self._readable = trio.lowlevel.ParkingLot()
        self._writable = trio.lowlevel.ParkingLot()
        # The tail while it absorbs deltas: its texts, and the offset where they end.
        self._merged: list[str] | None = None
        self._merged_end = 0
        self._merged_len = 0
        self._merged_seq = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    # --- the producer's side

    def send_nowait(self, event: Event) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the subscription is closed")
        if len(self._items) >= self._capacity:
            raise trio.WouldBlock
        self._seal()
        self._items.append(event)
        if self._readable:
            self._readable.unpark()

    async def send(self, event: Event) -> None:
        """Queue `event`, waiting for room."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            try:
                self.send_nowait(event)
            except trio.WouldBlock:
                await self._writable.park()
            else:
                break
        await trio.lowlevel.cancel_shielded_checkpoint()

    def absorb(self, event: Event) -> bool:
        """Append `event` to the delta at the tail if the queue is nearly full and it continues it exactly."""
        if len(self._items) < self._absorb_from or event.type != events.MESSAGE_DELTA:
            return False
        tail = self._items[-1]
        if tail.type != events.MESSAGE_DELTA:
            return False
        payload = event.payload
        text = payload["text"]
        tail_payload = tail.payload
        if self._merged is None:
            end = tail_payload["offset"] + len(tail_payload["text"])
            size = len(tail_payload["text"])
        else:
            end = self._merged_end
            size = self._merged_len
        if (
            payload["offset"] != end
            or payload["message_id"] != tail_payload["message_id"]
            or size + len(text) > MAX_COALESCED_TEXT
        ):
            return False
        if self._merged is None:
            self._merged = [tail_payload["text"]]
        self._merged.append(text)
        self._merged_end = end + len(text)
        self._merged_len = size + len(text)
        self._merged_seq = event.seq
        return True

    def close(self) -> None:
        """No more events; the consumer drains what is queued, then sees EndOfChannel."""
        self._closed = True
        self._readable.unpark_all()
        self._writable.unpark_all()

    def _seal(self) -> None:
        """The tail takes no more deltas: it becomes one event of its own."""
        if self._merged is None:
            return
        tail = self._items[-1]
        payload: dict[str, Any] = dict(tail.payload)
        payload["text"] = "".join(self._merged)
        self._items[-1] = Event(tail.workspace_id, self._merged_seq, tail.type, payload)
        self._merged = None

    # --- the consumer's side

    def receive_nowait(self) -> Event:
        if not self._items:
            if self._closed:
                raise trio.EndOfChannel
            raise trio.WouldBlock
        if len(self._items) == 1:
            self._seal()
        event = self._items.popleft()
        if self._writable:
            self._writable.unpark()
        return event

    async def receive(self) -> Event:
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            try:
                event = self.receive_nowait()
            except trio.WouldBlock:
                await self._readable.park()
            else:
                break
        await trio.lowlevel.cancel_shielded_checkpoint()
        return event

    def __aiter__(self) -> EventQueue:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None
