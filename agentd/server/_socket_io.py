"""A connected socket read and written with as few trips through trio's run loop as the data allows.

trio's SocketStream yields to the scheduler after every successful send and
receive, on top of parking while it waits: three trips through the run loop for
a request that is read, answered and written. For a daemon whose hot path is
one small request and one small reply, those trips are most of the cost. Here a
receive takes exactly one trip, a real checkpoint that can be cancelled: parking
when nothing has come, else a checkpoint after the read; and a send only parks
when the socket is full.
"""

from __future__ import annotations

import errno
import os
import select

import trio

__all__ = ["SocketIO"]

_BROKEN = {errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ESHUTDOWN}


class SocketIO:
    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._fd = stream.socket.fileno()

    async def receive_some(self, max_bytes: int) -> bytes:
        """Up to `max_bytes`; b"" at end of input."""
        # Exactly one trip through the run loop, and always a cancel point: the
        # wait when nothing has come yet, else a checkpoint after the read. A
        # peer that always has bytes ready never makes the read wait, and that
        # checkpoint is then the only place where the connection's reader
        # hears that the daemon is shutting down. (A checkpoint before every
        # read cost a second trip whenever the read then had to wait, as it
        # mostly does: a pipelining client is still reading our last replies.)
        try:
            data = os.read(self._fd, max_bytes)
        except BlockingIOError:
            pass
        except OSError as exc:
            raise self._error(exc) from exc
        else:
            await trio.lowlevel.checkpoint()
            return data
        while True:
            await trio.lowlevel.wait_readable(self._fd)
            try:
                return os.read(self._fd, max_bytes)
            except BlockingIOError:
                pass
            except OSError as exc:
                raise self._error(exc) from exc

    def peer_closed(self) -> bool:
        """Whether the peer closed its end entirely, not just its writing side.

        After end of input, a half-closed peer (`shutdown(SHUT_WR)`) still
        reads what we send; one that closed has gone, and nothing we send can
        reach it. Only the socket's hang-up flag tells the two apart.
        """
        poller = select.poll()
        poller.register(self._fd, select.POLLHUP)
        return any(events & select.POLLHUP for _fd, events in poller.poll(0))

    def send_nowait(self, data: bytes | memoryview) -> int:
        """Write what fits now, without waiting; how many bytes that was."""
        try:
            return os.write(self._fd, data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise self._error(exc) from exc

    async def send_all(self, data: bytes | memoryview) -> None:
        """Write all of `data`, parking only while the socket has no room."""
        view = memoryview(data)
        while view:
            try:
                sent = os.write(self._fd, view)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self._fd)
                continue
            except OSError as exc:
                raise self._error(exc) from exc
            view = view[sent:]

    def _error(self, exc: OSError) -> Exception:
        if exc.errno == errno.EBADF:
            return trio.ClosedResourceError("the socket was closed")
        if exc.errno in _BROKEN:
            return trio.BrokenResourceError(f"the client went away: {exc}")
        return trio.BrokenResourceError(f"socket error: {exc}")

    async def aclose(self) -> None:
        await self._stream.aclose()
