"""Arrival order for requests that touch one session.

A client may write `agent.send` and `agent.cancel` (or `session.delete`)
back to back without waiting for the first reply; each request gets a task of
its own, and the first one awaits the store. Without an order, the second can
take effect first: the cancel finds nothing to cancel, the delete removes the
session the send is about to run in. So each request takes a ticket for its
session when it is read — synchronously, in the order the bytes arrived — and
waits for its turn before it does anything to the session.
"""

from __future__ import annotations

import trio

__all__ = ["SessionOrder", "Turn"]


class _Lane:
    __slots__ = ("abandoned", "issued", "lot", "serving")

    def __init__(self) -> None:
        self.issued = 0
        self.serving = 0
        self.abandoned: set[int] = set()
        self.lot = trio.lowlevel.ParkingLot()


class SessionOrder:
    """One queue of turns per session key; a key with nobody waiting costs nothing."""

    def __init__(self) -> None:
        self._lanes: dict[tuple[str, str], _Lane] = {}

    def __len__(self) -> int:
        return len(self._lanes)

    def ticket(self, workspace_id: str, session_id: str) -> Turn:
        """A place in the session's queue, taken now; `async with` it to act in turn."""
        key = (workspace_id, session_id)
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane()
        number = lane.issued
        lane.issued += 1
        return Turn(self, key, lane, number)

    def _finish(self, key: tuple[str, str], lane: _Lane, number: int) -> None:
        if lane.serving != number:
            lane.abandoned.add(number)  # left before its turn: skipped when it comes
            return
        lane.serving += 1
        while lane.serving in lane.abandoned:
            lane.abandoned.discard(lane.serving)
            lane.serving += 1
        if lane.serving == lane.issued:
            # Nobody holds a ticket: forget the lane, so memory follows what is in flight.
            if self._lanes.get(key) is lane:
                del self._lanes[key]
        else:
            lane.lot.unpark_all()


class Turn:
    """One request's place in its session's queue."""

    __slots__ = ("_done", "_key", "_lane", "_number", "_order")

    def __init__(self, order: SessionOrder, key: tuple[str, str], lane: _Lane, number: int) -> None:
        self._order = order
        self._key = key
        self._lane = lane
        self._number = number
        self._done = False

    async def __aenter__(self) -> None:
        try:
            while self._lane.serving != self._number:
                await self._lane.lot.park()
        except BaseException:
            self.release()
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()

    def release(self) -> None:
        """Give the turn up (or, not yet reached, the place in the queue); idempotent."""
        if not self._done:
            self._done = True
            self._order._finish(self._key, self._lane, self._number)
