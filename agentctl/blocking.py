"""A blocking msgpack-RPC client for short-lived commands: no event loop to import.

`agentctl` is run from shells and CI, where its start-up time is part of every
call; importing trio alone costs several times a bare Python start. This client
is the sans-io `RpcConnection` under a plain socket, reading with `select`:

    client = BlockingClient.connect(path)
    ws = client.call("workspace.open", {"path": "/src/project"})
    item = client.next_notification(timeout=0.1)  # (method, params) or None

Replies are matched by msgid, and notifications that arrive while a call waits
are kept, in order, for `next_notification`. For trio programs, use
`agentctl.client`.
"""

from __future__ import annotations

# The C module under `socket`: the `socket` module adds nothing this client
# uses, and imports enum and selectors, a fifth of agentctl's start-up.
import _socket
import os
import select
import time
from collections import deque

from agentctl.errors import ConnectionLost
from agentd import trust
from agentd.rpc import (
    CLIENT_MAX_MESSAGE_SIZE,
    NEED_DATA,
    Call,
    Notification,
    ProtocolError,
    RpcConnection,
    RpcError,
)

# typing costs milliseconds to import, and agentctl's start-up is measured in them;
# annotations are strings here, so only type checkers need these names.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["BlockingClient", "ConnectionLost", "RpcError"]

_RECEIVE_SIZE = 65536


class BlockingClient:
    def __init__(self, sock: _socket.socket, *, max_message_size: int = CLIENT_MAX_MESSAGE_SIZE) -> None:
        self._sock = sock
        self._rpc = RpcConnection(max_message_size=max_message_size)
        # The calls `wait` will ask about, by the msgid `request` handed out.
        self._calls: dict[int, Call] = {}
        self._notifications: deque[tuple[str, Any]] = deque()

    @classmethod
    def connect(cls, socket_path: str | os.PathLike[str]) -> BlockingClient:
        """Connect once the socket and its peer are ours (`agentd.trust`): UntrustedSocket, and nothing sent, if not."""
        path = os.fspath(socket_path)
        trust.check_socket_path(path)
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.connect(path)
            trust.check_peer(sock, path)
        except BaseException:
            sock.close()
            raise
        return cls(sock)

    @property
    def close_reason(self) -> str | None:
        return self._rpc.closed

    @property
    def connected(self) -> bool:
        return self._rpc.closed is None

    def close(self) -> None:
        self._rpc.close("closed by the client")
        self._sock.close()

    def __enter__(self) -> BlockingClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- requests

    def request(self, method: str, params: dict[str, Any] | None = None, *, want_reply: bool = True) -> int:
        """Send a request without waiting; its reply is collected by `wait`."""
        if self._rpc.closed is not None:
            raise ConnectionLost(self._rpc.closed)
        call, data = self._rpc.call(method, [params] if params is not None else [], want_reply=want_reply)
        if want_reply:
            self._calls[call.msgid] = call
        try:
            self._sock.sendall(data)
        except OSError as exc:
            self._rpc.close(f"send failed: {exc}")
            raise ConnectionLost(self._rpc.closed) from None
        return call.msgid

    def wait(self, msgid: int, timeout: float | None = None) -> Any:
        """The result of request `msgid`; RpcError for an error reply, TimeoutError after `timeout`."""
        call = self._calls[msgid]
        deadline = None if timeout is None else time.monotonic() + timeout
        while not call.answered:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"no reply within {timeout}s")
            self._pump(left)
        del self._calls[msgid]
        return call.outcome()

    def call(self, method: str, params: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        return self.wait(self.request(method, params), timeout)

    # --- notifications

    def next_notification(self, timeout: float | None = None) -> tuple[str, Any] | None:
        """The next notification, or None if none arrives within `timeout`.

        Raises ConnectionLost once the connection has ended and every
        notification received before that has been handed out.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._notifications:
            if deadline is None:
                self._pump(None)
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._pump(left)
        return self._notifications.popleft()

    # --- the socket

    def _pump(self, timeout: float | None) -> bool:
        """Read what is there (waiting up to `timeout`); False if nothing came."""
        rpc = self._rpc
        if rpc.closed is not None:
            raise ConnectionLost(rpc.closed)
        readable, _, _ = select.select([self._sock], [], [], timeout)
        if not readable:
            return False
        try:
            data = self._sock.recv(_RECEIVE_SIZE)
        except OSError as exc:
            rpc.close(f"connection lost: {exc}")
            raise ConnectionLost(rpc.closed) from None
        if not data:
            rpc.close("the daemon closed the connection")
            raise ConnectionLost(rpc.closed)
        rpc.receive_data(data)
        try:
            while (event := rpc.next_event()) is not NEED_DATA:
                if type(event) is Notification:
                    self._notifications.append((event.method, event.params))
                # An answered Call is marked so by the connection; `wait` sees it.
        except ProtocolError as exc:
            rpc.close(f"bad data from the daemon: {exc}")
            raise ConnectionLost(rpc.closed) from None
        return True
