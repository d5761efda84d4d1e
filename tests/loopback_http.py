"""A scripted HTTP/1.1 server on 127.0.0.1, for testing an HTTP client against real sockets.

The test queues one reply per request it expects (`server.script(...)`); each
request takes the next. A reply is a whole response (`Reply`), a chunked body
written chunk by chunk with optional pauses that then finishes, is cut or
stalls (`Streamed`), or no response at all (`NoReply`). Every request is
recorded — method, path, headers, body — so a test can assert what was sent.

Streamed bodies use chunked transfer-encoding, one HTTP chunk per scripted
chunk, so a cut is a real protocol break (no terminating chunk), not just an
early end. A stalled connection is held until the client closes it, and the
server counts the connections it saw closed.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any, Literal

import attrs
import trio

__all__ = ["LoopbackServer", "NoReply", "Pause", "RecordedRequest", "Reply", "Streamed", "start_loopback_server"]

_MAX_HEAD = 64 * 1024


@attrs.frozen
class Reply:
    """A whole response, with a Content-Length body."""

    status: int = 200
    headers: Mapping[str, str] = attrs.field(factory=dict)
    body: bytes = b""


@attrs.frozen
class Pause:
    """Inside a Streamed body: wait this long before the next chunk."""

    seconds: float


@attrs.frozen
class Streamed:
    """A chunked response: each bytes item is sent as one chunk, a Pause waits; then the body

    finishes (terminating chunk, connection kept alive), is cut (the connection
    closes with the body unfinished), or stalls (nothing more is sent until the
    client closes the connection).
    """

    chunks: Sequence[bytes | Pause]
    status: int = 200
    headers: Mapping[str, str] = attrs.field(factory=lambda: {"content-type": "text/event-stream"})
    end: Literal["finish", "cut", "stall"] = "finish"


@attrs.frozen
class NoReply:
    """Read the request, send nothing, and hold the connection until the client closes it."""


ScriptedReply = Reply | Streamed | NoReply


@attrs.frozen
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class LoopbackServer:
    def __init__(self) -> None:
        self.port = 0
        self.requests: list[RecordedRequest] = []
        self.connections_closed = 0
        self._replies: deque[ScriptedReply] = deque()
        self._open = 0
        self._all_closed = trio.Event()
        self._all_closed.set()
        self._request_arrived = trio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, *replies: ScriptedReply) -> None:
        """Queue replies for the next requests, in order."""
        self._replies.extend(replies)

    async def wait_for_requests(self, count: int) -> None:
        """Return once the server has received `count` requests in all."""
        while len(self.requests) < count:
            await self._request_arrived.wait()

    async def all_closed(self) -> None:
        """Return once every connection the server accepted is closed (by either side)."""
        await self._all_closed.wait()

    async def handle(self, stream: trio.SocketStream) -> None:
        self._open += 1
        if self._open == 1:
            self._all_closed = trio.Event()
        try:
            await self._serve(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away mid-request or mid-response: tests do that on purpose
        finally:
            await stream.aclose()
            self.connections_closed += 1
            self._open -= 1
            if self._open == 0:
                self._all_closed.set()

    async def _serve(self, stream: trio.SocketStream) -> None:
        buffer = bytearray()
        while True:
            request = await _read_request(stream, buffer)
            if request is None:
                return  # the client closed a kept-alive connection
            self.requests.append(request)
            self._request_arrived.set()
            self._request_arrived = trio.Event()
            if not self._replies:
                raise AssertionError(f"loopback server: no reply scripted for {request.method} {request.path}")
            reply = self._replies.popleft()
            if isinstance(reply, NoReply):
                await _until_closed(stream)
                return
            if isinstance(reply, Reply):
                await stream.send_all(_head(reply.status, {**reply.headers, "content-length": str(len(reply.body))}))
                await stream.send_all(reply.body)
                continue
            await stream.send_all(_head(reply.status, {**reply.headers, "transfer-encoding": "chunked"}))
            for chunk in reply.chunks:
                if isinstance(chunk, Pause):
                    await trio.sleep(chunk.seconds)
                    continue
                assert chunk, "an empty chunk would end the body"
                await stream.send_all(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            if reply.end == "cut":
                return
            if reply.end == "stall":
                await _until_closed(stream)
                return
            await stream.send_all(b"0\r\n\r\n")


async def start_loopback_server(nursery: trio.Nursery) -> LoopbackServer:
    """A server listening on an ephemeral port of 127.0.0.1, its connections run in `nursery`."""
    server = LoopbackServer()
    listeners = await nursery.start(partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1"))
    server.port = listeners[0].socket.getsockname()[1]
    return server


_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    413: "Payload Too Large",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    529: "Overloaded",
}


def _head(status: int, headers: Mapping[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _read_request(stream: trio.SocketStream, buffer: bytearray) -> RecordedRequest | None:
    """The next request on the connection; None if the client closed it before sending one."""
    while b"\r\n\r\n" not in buffer:
        if len(buffer) > _MAX_HEAD:
            raise AssertionError("loopback server: request head too large")
        data = await stream.receive_some()
        if not data:
            if buffer:
                raise AssertionError("loopback server: connection closed mid-request")
            return None
        buffer += data
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    method, path, _version = request_line.split(" ", 2)
    headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "transfer-encoding" in headers:
        raise AssertionError("loopback server: chunked request bodies are not supported")
    length = int(headers.get("content-length", "0"))
    body = bytearray(rest)
    while len(body) < length:
        data = await stream.receive_some()
        if not data:
            raise AssertionError("loopback server: connection closed mid-body")
        body += data
    buffer[:] = body[length:]
    return RecordedRequest(method, path, headers, bytes(body[:length]))


async def _until_closed(stream: trio.SocketStream) -> None:
    """Hold the connection, discarding anything sent, until the client closes it."""
    while await stream.receive_some():
        pass
