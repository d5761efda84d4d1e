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

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from agentctl.errors import ConnectionLost
from agentctl.runstream import event_params
from agentd.rpc import (
    CLIENT_MAX_MESSAGE_SIZE,
    MAX_MSGID,
    ErrorCode,
    Notification,
    ProtocolError,
    Response,
    RpcCodec,
    RpcError,
    encode_request,
)

__all__ = ["Client", "ConnectionLost", "ErrorCode", "RpcError", "event_params", "open_client"]

NOTIFICATION_BUFFER = 8192


class _Pending:
    __slots__ = ("done", "response")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.response: Response | None = None


class Client:
    def __init__(self, stream: trio.abc.Stream, *, max_message_size: int = CLIENT_MAX_MESSAGE_SIZE) -> None:
        self._stream = stream
        self._codec = RpcCodec(max_message_size)
        self._send_lock = trio.Lock()
        self._msgids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._closed = False
        self.close_reason: str | None = None
        send, receive = trio.open_memory_channel[tuple[str, Any]](NOTIFICATION_BUFFER)
        self._notify_send = send
        #: `(method, params)` of each notification, in arrival order; ends when the connection does.
        self.notifications: trio.MemoryReceiveChannel[tuple[str, Any]] = receive

    @property
    def connected(self) -> bool:
        return not self._closed

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Call `method` with named `params`; raises RpcError for an error reply."""
        if self._closed:
            raise ConnectionLost(self.close_reason or "connection closed")
        msgid = next(self._msgids) % (MAX_MSGID + 1)
        pending = self._pending[msgid] = _Pending()
        try:
            data = encode_request(msgid, method, [params] if params is not None else [])
            try:
                async with self._send_lock:
                    await self._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self._mark_closed(f"send failed: {exc}")
                raise ConnectionLost(self.close_reason) from None
            await pending.done.wait()
        finally:
            del self._pending[msgid]
        response = pending.response
        if response is None:
            raise ConnectionLost(self.close_reason or "connection closed")
        if response.error is not None:
            raise RpcError.from_wire(response.error)
        return response.result

    async def _read(self) -> None:
        codec = self._codec
        try:
            while True:
                try:
                    data = await self._stream.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    self._mark_closed(f"connection lost: {exc}")
                    return
                if not data:
                    self._mark_closed("the daemon closed the connection")
                    return
                try:
                    codec.receive_data(data)
                    while (message := codec.next_message()) is not None:
                        if type(message) is Response:
                            pending = self._pending.get(message.msgid)
                            if pending is not None:
                                pending.response = message
                                pending.done.set()
                        elif type(message) is Notification and type(message.method) is str:
                            try:
                                await self._notify_send.send((message.method, message.params))
                            except trio.ClosedResourceError:
                                # A call found the connection broken and closed the
                                # client meanwhile: nothing more is wanted from it.
                                return
                except ProtocolError as exc:
                    self._mark_closed(f"bad data from the daemon: {exc}")
                    return
        finally:
            self._mark_closed(self.close_reason or "connection closed")

    def _mark_closed(self, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        self.close_reason = reason
        self._notify_send.close()
        for pending in self._pending.values():
            pending.done.set()

    async def aclose(self) -> None:
        self._mark_closed("closed by the client")
        await self._stream.aclose()


@asynccontextmanager
async def open_client(
    socket_path: str | Path,
    *,
    max_message_size: int = CLIENT_MAX_MESSAGE_SIZE,
) -> AsyncIterator[Client]:
    """Connect to the daemon at `socket_path`; the connection closes with the block."""
    stream = await trio.open_unix_socket(str(socket_path))
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
