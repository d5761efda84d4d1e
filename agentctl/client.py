"""The client library: a msgpack-RPC connection to agentd, for trio programs.

    async with open_client(socket_path) as client:
        ws = await client.call("workspace.open", {"path": "/src/project"})
        async for method, params in client.notifications:
            ...

Replies are matched to calls by msgid, so calls may run concurrently.
Notifications go, in order, into one bounded channel; a caller that stops
reading it slows the connection down rather than growing memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from agentctl.errors import ConnectionLost
from agentctl.runstream import event_params
from agentd import trust
from agentd.rpc import (
    CLIENT_MAX_MESSAGE_SIZE,
    NEED_DATA,
    Call,
    ErrorCode,
    Notification,
    ProtocolError,
    RpcConnection,
    RpcError,
)

__all__ = ["Client", "ConnectionLost", "ErrorCode", "RpcError", "event_params", "open_client"]

NOTIFICATION_BUFFER = 8192


class Client:
    def __init__(self, stream: trio.abc.Stream, *, max_message_size: int = CLIENT_MAX_MESSAGE_SIZE) -> None:
        self._stream = stream
        self._rpc = RpcConnection(max_message_size=max_message_size)
        self._send_lock = trio.Lock()
        self.close_reason: str | None = None
        send, receive = trio.open_memory_channel[tuple[str, Any]](NOTIFICATION_BUFFER)
        self._notify_send = send
        #: `(method, params)` of each notification, in arrival order; ends when the connection does.
        self.notifications: trio.MemoryReceiveChannel[tuple[str, Any]] = receive

    @property
    def connected(self) -> bool:
        return self._rpc.closed is None

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Call `method` with named `params`; raises RpcError for an error reply."""
        if self._rpc.closed is not None:
            raise ConnectionLost(self._rpc.closed)
        call, data = self._rpc.call(method, [params] if params is not None else [])
        call.waker = done = trio.Event()
        try:
            try:
                async with self._send_lock:
                    await self._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self._mark_closed(f"send failed: {exc}")
            await done.wait()
        finally:
            self._rpc.abandon(call)
        if call.lost is not None:
            raise ConnectionLost(call.lost)
        return call.outcome()

    async def _read(self) -> None:
        rpc = self._rpc
        try:
            while True:
                try:
                    event = rpc.next_event()
                except ProtocolError as exc:
                    self._mark_closed(f"bad data from the daemon: {exc}")
                    return
                if type(event) is Call:
                    event.waker.set()
                elif type(event) is Notification:
                    try:
                        await self._notify_send.send((event.method, event.params))
                    except trio.ClosedResourceError:
                        # A call found the connection broken and closed the
                        # client meanwhile: nothing more is wanted from it.
                        return
                elif event is NEED_DATA:
                    try:
                        data = await self._stream.receive_some(65536)
                    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                        self._mark_closed(f"connection lost: {exc}")
                        return
                    if not data:
                        self._mark_closed("the daemon closed the connection")
                        return
                    rpc.receive_data(data)
                # The daemon sends no requests (protocol.md §1.2): there is nothing to answer.
        finally:
            self._mark_closed("connection closed")

    def _mark_closed(self, reason: str) -> None:
        for call in self._rpc.close(reason):
            call.waker.set()
        if self.close_reason is None:
            self.close_reason = self._rpc.closed
            self._notify_send.close()

    async def aclose(self) -> None:
        self._mark_closed("closed by the client")
        await self._stream.aclose()


@asynccontextmanager
async def open_client(
    socket_path: str | Path,
    *,
    max_message_size: int = CLIENT_MAX_MESSAGE_SIZE,
) -> AsyncIterator[Client]:
    """Connect to the daemon at `socket_path`; the connection closes with the block.

    UntrustedSocket, with nothing sent, when the socket or the process behind it is not ours (`agentd.trust`).
    """
    path = str(socket_path)
    trust.check_socket_path(path)
    stream = await trio.open_unix_socket(path)
    try:
        trust.check_peer(stream.socket, path)
    except BaseException:
        await stream.aclose()
        raise
    client = Client(stream, max_message_size=max_message_size)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client._read)
            try:
                yield client
            finally:
                nursery.cancel_scope.cancel()
                with trio.CancelScope(shield=True):
                    await client.aclose()
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            # One error from the caller's block: hand it back as itself, not as a group.
            raise group.exceptions[0] from None
        raise
