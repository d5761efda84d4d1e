"""One client connection: the thin trio adapter over the sans-io `RpcConnection`.

Its nursery holds a reader (bytes → requests), one task per request (so replies
may go out of order), and one writer per subscription that drains that
subscription's channel. Every write goes through one lock, so messages never
interleave. Whatever a client sends ends, at worst, this connection alone.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from agentd.pubsub import Event, Subscriber
from agentd.rpc import (
    NEED_DATA,
    PAUSED,
    TAKEN,
    ErrorCode,
    InputBudget,
    ProtocolError,
    Reply,
    Request,
    RpcConnection,
    RpcError,
    brief,
)

from ._socket_io import SocketIO

if TYPE_CHECKING:
    from ._methods import Admitted, Method, Methods

__all__ = ["ClientConnection"]

log = logging.getLogger(__name__)

_RECEIVE_SIZE = 65536
# How many notifications one subscription writer packs into one write.
_WRITE_BATCH = 256
# While a half-closed client's requests are under way: how often to check it has not gone.
_PEER_CHECK_INTERVAL = 0.5
# How long a half-closed client's subscriptions get to flush before it is closed.
_HALF_CLOSE_FLUSH_TIMEOUT = 5.0
# Letting go of a closed connection's claims and socket.
_CLOSE_TIMEOUT = 2.0


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


class ClientConnection:
    def __init__(
        self,
        client_id: int,
        stream: trio.SocketStream,
        methods: Methods,
        *,
        max_message_size: int,
        max_in_flight: int = 128,
        input_budget: InputBudget | None = None,
    ) -> None:
        self.id = client_id
        self.client_name: str | None = None
        self.client_version: str | None = None
        self._stream = SocketIO(stream)
        self._methods = methods
        # A client that pipelines without reading replies is slowed at the
        # socket (the reader pauses at `max_in_flight`), not allowed to grow
        # our memory without bound.
        self._rpc = RpcConnection(
            max_message_size=max_message_size,
            guarded=True,
            max_in_flight=max_in_flight,
            budget=input_budget,
            constant_replies=methods.constant_replies,
        )
        self._send_lock = trio.Lock()
        self._slot_freed = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._writers_done = trio.Event()
        self._writers = 0
        self._writers_done.set()
        self._requests = 0
        self._requests_done = trio.Event()
        self._requests_done.set()
        self.claims: set[str] = set()
        self.subscriptions: dict[str, Subscriber] = {}

    async def serve(self, on_close: Callable[[ClientConnection], Awaitable[None]]) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if await self._read_requests(nursery) and await self._still_reading():
                    # End of input was a half-close (`nc -N`, a script piping
                    # requests): the client can still read, so what it asked is
                    # answered, and what its subscriptions hold is flushed. They
                    # end here: it has sent its last request.
                    self.close_subscriptions()
                    with trio.move_on_after(_HALF_CLOSE_FLUSH_TIMEOUT):
                        await self._writers_done.wait()
                nursery.cancel_scope.cancel()
        except* Exception as group:
            log.exception("client %d: connection failed", self.id, exc_info=group)
        finally:
            self._rpc.close("closed")
            # Shielded, so a cancelled connection still lets go of its claims;
            # bounded, though neither step waits on anything but a close.
            with trio.move_on_after(_CLOSE_TIMEOUT, shield=True):
                await on_close(self)
                await self._stream.aclose()

    async def _still_reading(self) -> bool:
        """After end of input: wait for the requests under way; False if the client goes meanwhile.

        A client that closed its socket entirely (killed, say) must not keep
        its connection, and the claims that keep its workspaces and their runs
        alive, until a `run.wait` it can no longer read is answered.
        """
        while not self._stream.peer_closed():
            with trio.move_on_after(_PEER_CHECK_INTERVAL):
                await self._requests_done.wait()
                return True
        if self._requests:
            log.info("client %d: gone with %d request(s) unanswered", self.id, self._requests)
        return False

    def disconnect(self, reason: str) -> None:
        log.warning("client %d: disconnecting: %s", self.id, reason)
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def _read_requests(self, nursery: trio.Nursery) -> bool:
        """Read and dispatch requests; True at end of input, False when the connection must close now.

        Methods that answer without waiting are answered here, and all their
        replies to one read go out in one write: a client that pipelines pings
        costs one task switch and one syscall per read, not per request.
        Everything else gets a task of its own, so a slow request never holds
        up the ones behind it.
        """
        rpc = self._rpc
        methods = self._methods
        lookup = methods.lookup
        order = methods.order
        after_reply: list[Callable[[], None]] = []

        def answer(msgid: int, name: str, params: object) -> object:
            try:
                method = lookup(name)
                if method.immediate:
                    # A plain function call, answered here: no task, no
                    # exception groups to split.
                    return method.call_now(self, params, after_reply)
                # Now, in read order: a request naming a session takes its turn here.
                admitted = method.admit(order, params)
            except RpcError:
                raise
            except Exception as exc:
                log.exception("client %d: %s failed", self.id, brief(name))
                raise RpcError(ErrorCode.INTERNAL, f"internal error: {brief(exc)}") from None
            self._requests += 1
            self._requests_done = trio.Event()
            nursery.start_soon(self._answer, method, Request(msgid, name, params), admitted)
            return TAKEN

        while True:
            try:
                events = rpc.next_events(answer)
            except ProtocolError as exc:
                log.warning("client %d: closing connection: %s", self.id, exc)
                return False
            for failure in rpc.unencodable:
                log.error("client %d: cannot encode %s", self.id, failure)
            rpc.unencodable.clear()
            # Notifications and responses from a client ask nothing of us.
            for event in events:
                if type(event) is Reply:
                    await self.send(event.data)
                    for action in after_reply:
                        action()
                    after_reply.clear()
            last = events[-1] if events else None
            if last is PAUSED:
                while rpc.in_flight >= rpc.max_in_flight:
                    await self._slot_freed.wait()
                    self._slot_freed = trio.Event()
            elif last is NEED_DATA:
                try:
                    data = await self._stream.receive_some(_RECEIVE_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return False
                if not data:
                    return True
                rpc.receive_data(data)

    async def _reply_to(
        self, method: Method, request: Request, admitted: Admitted, after_reply: list[Callable[[], None]]
    ) -> tuple[object, object]:
        """Run one request to its error and result; every failure becomes an error reply."""
        error: object = None
        result: object = None
        try:
            result = await method.call(self, admitted, after_reply)
        except* RpcError as group:
            leaf = _first_leaf(group)
            assert isinstance(leaf, RpcError)
            error = leaf.to_wire()
        except* Exception as group:
            log.exception("client %d: %s failed", self.id, brief(request.method), exc_info=group)
            error = [int(ErrorCode.INTERNAL), f"internal error: {brief(_first_leaf(group))}"]
        return error, result

    def _respond(self, request: Request, error: object, result: object) -> bytes:
        try:
            return self._rpc.respond(request, error, result)
        except Exception as exc:
            log.exception("client %d: cannot encode the reply to %s", self.id, brief(request.method))
            return self._rpc.respond(request, [int(ErrorCode.INTERNAL), f"internal error: {brief(exc)}"], None)

    async def _answer(self, method: Method, request: Request, admitted: Admitted) -> None:
        after_reply: list[Callable[[], None]] = []
        try:
            error, result = await self._reply_to(method, request, admitted, after_reply)
            # The reply is encoded, and its in-flight slot freed, only once the
            # lock is ours: requests waiting to write keep their slots, so a
            # client that does not read stops the reader instead of piling up
            # encoded replies.
            await self._acquire_send_lock()
            try:
                data = self._respond(request, error, result)
                self._slot_freed.set()
                await self._send_locked(data)
            finally:
                self._send_lock.release()
            for action in after_reply:
                action()
        finally:
            self._requests -= 1
            if self._requests == 0:
                self._requests_done.set()

    async def _acquire_send_lock(self) -> None:
        lock = self._send_lock
        # Uncontended (the usual case), taking the lock costs no trip
        # through the scheduler.
        try:
            lock.acquire_nowait()
        except trio.WouldBlock:
            await lock.acquire()

    async def _send_locked(self, data: bytes | memoryview) -> None:
        try:
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.disconnect("the client went away")

    async def send(self, data: bytes | memoryview) -> None:
        """Write one or more whole messages; a broken stream ends the connection."""
        await self._acquire_send_lock()
        try:
            await self._send_locked(data)
        finally:
            self._send_lock.release()

    # --- subscriptions

    def start_writer(self, sub: Subscriber, replay: list[Event]) -> None:
        """Start draining `sub`, after `replay`; called once its subscribe reply is on the wire."""
        assert self._nursery is not None
        self._writers += 1
        self._writers_done = trio.Event()
        self._nursery.start_soon(self._write_events, sub, replay)

    async def _write_events(self, sub: Subscriber, replay: list[Event]) -> None:
        receive = sub.receive_channel
        sid = sub.id
        try:
            for start in range(0, len(replay), _WRITE_BATCH):
                # What the client missed goes first: live events queue behind it.
                data = b"".join([e.encode_notification(sid) for e in replay[start : start + _WRITE_BATCH]])
                if not await self._write_events_batch(data, sub):
                    sub.disconnect("its replay in time (its connection stopped reading)")
                    return
            async for event in receive:
                batch = [event]
                drained = False
                while len(batch) < _WRITE_BATCH:
                    try:
                        batch.append(receive.receive_nowait())
                    except trio.WouldBlock:
                        drained = True
                        break
                    except trio.EndOfChannel:
                        break
                if drained:
                    # The subscriber has room again, so it hears what it lost.
                    gap = sub.take_gap()
                    if gap is not None:
                        batch.append(gap)
                data = b"".join([e.encode_notification(sid) for e in batch])
                if not await self._write_events_batch(data, sub):
                    sub.disconnect("a must-deliver event in time (its connection stopped reading)")
                    return
                sub.flushed(sum(e.must_deliver for e in batch))
                # One trip through the scheduler per write lets the publisher
                # queue more: the next write carries a bigger batch, and writes,
                # not events, are what a subscriber costs.
                await trio.lowlevel.checkpoint()
        finally:
            sub.close()
            self.subscriptions.pop(sid, None)
            self._writers -= 1
            if self._writers == 0:
                self._writers_done.set()

    async def _write_events_batch(self, data: bytes, sub: Subscriber) -> bool:
        """Write a batch of `sub`'s events; False if a must-deliver deadline passed first.

        The common case, a free lock and room in the socket, is one write and no
        cancel scope. Only when the write has to wait is it bounded: a
        must-deliver event in the channel or in this batch sets the deadline,
        and one published meanwhile tightens it (`sub.write_scope`). A client
        that stops reading is cut off, not waited on forever.
        """
        lock = self._send_lock
        sent = 0
        held = False
        if not lock.locked():
            lock.acquire_nowait()
            held = True
            try:
                sent = self._stream.send_nowait(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                lock.release()
                self.disconnect("the client went away")
                return True
            if sent == len(data):
                lock.release()
                return True
            # The socket is full. The lock stays held: the rest of these bytes
            # must follow the first part directly.
        with trio.CancelScope(deadline=sub.flush_deadline) as scope:
            sub.write_scope = scope
            try:
                if not held:
                    await lock.acquire()
                    held = True
                await self._stream.send_all(memoryview(data)[sent:])
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.disconnect("the client went away")
            finally:
                sub.write_scope = None
                if held:
                    lock.release()
        return not scope.cancelled_caught

    def close_subscriptions(self) -> None:
        for sub in list(self.subscriptions.values()):
            sub.close()

    async def wait_writers_drained(self) -> None:
        """Until every subscription writer has flushed its channel and stopped."""
        await self._writers_done.wait()

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "client_name": self.client_name, "subscriptions": len(self.subscriptions)}
