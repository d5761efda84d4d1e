"""A blocking msgpack-RPC client for short-lived commands: no event loop to import.

`agentctl` is run from shells and CI, where its start-up time is part of every
call; importing trio alone costs several times a bare Python start. This client
is the codec under a plain socket, reading with `select`:

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
import itertools
import os
import select
import time
from collections import deque

from agentctl.errors import ConnectionLost
from agentd.rpc import (
    CLIENT_MAX_MESSAGE_SIZE,
    MAX_MSGID,
    Notification,
    ProtocolError,
    Response,
    RpcCodec,
    RpcError,
    encode_request,
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
        self._codec = RpcCodec(max_message_size)
        self._msgids = itertools.count(1)
        self._responses: dict[int, Response] = {}
        self._ignored: set[int] = set()
        self._notifications: deque[tuple[str, Any]] = deque()
        self.close_reason: str | None = None

    @classmethod
    def connect(cls, socket_path: str | os.PathLike[str]) -> BlockingClient:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.connect(os.fspath(socket_path))
        except BaseException:
            sock.close()
            raise
        return cls(sock)

    @property
    def connected(self) -> bool:
        return self.close_reason is None

    def close(self) -> None:
        if self.close_reason is None:
            self.close_reason = "closed by the client"
        self._sock.close()

    def __enter__(self) -> BlockingClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- requests

    def request(self, method: str, params: dict[str, Any] | None = None, *, want_reply: bool = True) -> int:
        """Send a request without waiting; its reply is collected by `wait`."""
        if self.close_reason is not None:
            raise ConnectionLost(self.close_reason)
        msgid = next(self._msgids) % (MAX_MSGID + 1)
        if not want_reply:
            self._ignored.add(msgid)
        try:
            self._sock.sendall(encode_request(msgid, method, [params] if params is not None else []))
        except OSError as exc:
            self._lost(f"send failed: {exc}")
            raise ConnectionLost(self.close_reason) from None
        return msgid

    def wait(self, msgid: int, timeout: float | None = None) -> Any:
        """The result of request `msgid`; RpcError for an error reply, TimeoutError after `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while msgid not in self._responses:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"no reply within {timeout}s")
            self._pump(left)
        response = self._responses.pop(msgid)
        if response.error is not None:
            raise RpcError.from_wire(response.error)
        return response.result

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
        if self.close_reason is not None:
            raise ConnectionLost(self.close_reason)
        readable, _, _ = select.select([self._sock], [], [], timeout)
        if not readable:
            return False
        try:
            data = self._sock.recv(_RECEIVE_SIZE)
        except OSError as exc:
            self._lost(f"connection lost: {exc}")
            raise ConnectionLost(self.close_reason) from None
        if not data:
            self._lost("the daemon closed the connection")
            raise ConnectionLost(self.close_reason)
        try:
            self._codec.receive_data(data)
            while (message := self._codec.next_message()) is not None:
                if type(message) is Response:
                    if message.msgid in self._ignored:
                        self._ignored.discard(message.msgid)
                    else:
                        self._responses[message.msgid] = message
                elif type(message) is Notification and type(message.method) is str:
                    self._notifications.append((message.method, message.params))
        except ProtocolError as exc:
            self._lost(f"bad data from the daemon: {exc}")
            raise ConnectionLost(self.close_reason) from None
        return True

    def _lost(self, reason: str) -> None:
        if self.close_reason is None:
            self.close_reason = reason
