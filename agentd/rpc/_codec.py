"""The sans-io MessagePack-RPC codec: bytes in, messages out; messages in, bytes out.

Nothing here touches a socket or a clock, so every edge case of the wire is a
plain unit test, and both the daemon and the client wrap the same object.
"""

from __future__ import annotations

import msgpack

# typing costs milliseconds to import, and agentctl's start-up is measured in them;
# annotations are strings here, so only type checkers need these names.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Final

__all__ = [
    "CLIENT_MAX_MESSAGE_SIZE",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "MAX_MSGID",
    "Notification",
    "ProtocolError",
    "Request",
    "Response",
    "RpcCodec",
    "encode_notification",
    "encode_request",
    "encode_response",
]

REQUEST: Final = 0
RESPONSE: Final = 1
NOTIFICATION: Final = 2

DEFAULT_MAX_MESSAGE_SIZE: Final = 16 * 1024 * 1024
# What a client takes from its daemon. The daemon's own limit guards it against
# what clients send; its replies are not limited by it (a long conversation's
# `session.messages` is one reply), so a client only guards against a runaway.
CLIENT_MAX_MESSAGE_SIZE: Final = 1024 * 1024 * 1024
_NEED_DATA: Final = object()
# Room in the unpacker's buffer beyond one message, for the reads that carry it.
_FEED_SLACK: Final = 1024 * 1024
MAX_MSGID: Final = 2**32 - 1


class ProtocolError(Exception):
    """The peer broke the wire format; the only safe answer is to close the connection."""


class Request:
    """`[0, msgid, method, params]`.

    `method` and `params` are kept as received: a request whose msgid is readable
    must be answered even when the rest is wrong, so shape checks beyond the
    msgid belong to the dispatcher, which can reply with an error.
    """

    __slots__ = ("method", "msgid", "params")

    def __init__(self, msgid: int, method: object, params: object) -> None:
        self.msgid = msgid
        self.method = method
        self.params = params

    def __repr__(self) -> str:
        return f"Request({self.msgid!r}, {self.method!r}, {self.params!r})"


class Response:
    """`[1, msgid, error, result]`."""

    __slots__ = ("error", "msgid", "result")

    def __init__(self, msgid: int, error: object, result: object) -> None:
        self.msgid = msgid
        self.error = error
        self.result = result

    def __repr__(self) -> str:
        return f"Response({self.msgid!r}, {self.error!r}, {self.result!r})"


class Notification:
    """`[2, method, params]`."""

    __slots__ = ("method", "params")

    def __init__(self, method: object, params: object) -> None:
        self.method = method
        self.params = params

    def __repr__(self) -> str:
        return f"Notification({self.method!r}, {self.params!r})"


Message = Request | Response | Notification


class RpcCodec:
    """Turns an unframed stream of msgpack objects into MessagePack-RPC messages.

    The stream has no length prefix (Neovim's channels speak exactly this), so the
    size limit is enforced on the unpacker's buffer: a message can only be
    decoded once all of it is buffered, and the buffer refuses to grow past the
    limit.
    """

    def __init__(self, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        self.max_message_size = max_message_size
        self._unpacker = msgpack.Unpacker(
            raw=False,
            use_list=True,
            # Int or bytes keys are valid msgpack; they fail param validation with a
            # clear reply instead of killing the connection here.
            strict_map_key=False,
            # The real limit is enforced below, per message; this only keeps one
            # oversized feed from growing the buffer first.
            max_buffer_size=max_message_size + _FEED_SLACK,
            max_str_len=max_message_size,
            max_bin_len=max_message_size,
            max_array_len=max_message_size,
            max_map_len=max_message_size,
            max_ext_len=max_message_size,
        )
        # Bytes fed in all, and the stream offset where the current message began.
        # The unpacker consumes a partial message element by element, so its own
        # buffer size says nothing about how large the message being read is.
        self._fed = 0
        self._message_start = 0
        self._broken: ProtocolError | None = None

    def _too_large(self) -> ProtocolError:
        self._broken = ProtocolError(f"message larger than the {self.max_message_size}-byte limit")
        return self._broken

    def receive_data(self, data: bytes | bytearray) -> None:
        """Buffer bytes from the peer; `next_message` decodes them."""
        if self._broken is not None:
            raise self._broken
        try:
            self._unpacker.feed(data)
        except msgpack.BufferFull:
            raise self._too_large() from None
        self._fed += len(data)

    def next_message(self) -> Message | None:
        """The next complete message, or None when more bytes are needed."""
        if self._broken is not None:
            raise self._broken
        unpacker = self._unpacker
        try:
            # next() with a default: running out of data is the common end of
            # every read, and costs no exception this way.
            obj = next(unpacker, _NEED_DATA)
        except msgpack.StackError:
            self._broken = ProtocolError("malformed msgpack: arrays or maps nested too deeply")
            raise self._broken from None
        except Exception as exc:  # FormatError, UnicodeDecodeError, ValueError...
            self._broken = ProtocolError(f"malformed msgpack: {exc or type(exc).__name__}")
            raise self._broken from None
        if obj is _NEED_DATA:
            if self._fed - self._message_start > self.max_message_size:
                raise self._too_large()
            return None
        end = unpacker.tell()
        if end - self._message_start > self.max_message_size:
            raise self._too_large()
        self._message_start = end
        # The hot path, a well-formed request, without a call; parse_message
        # classifies (and refuses) everything else.
        if type(obj) is list and len(obj) == 4 and obj[0] == REQUEST and type(obj[0]) is int:
            msgid = obj[1]
            if type(msgid) is int and 0 <= msgid <= MAX_MSGID:
                return Request(msgid, obj[2], obj[3])
        try:
            return parse_message(obj)
        except ProtocolError as exc:
            self._broken = exc
            raise

    def messages(self) -> list[Message]:
        """Every complete message buffered so far."""
        out: list[Message] = []
        while (msg := self.next_message()) is not None:
            out.append(msg)
        return out


def _is_msgid(value: object) -> bool:
    return type(value) is int and 0 <= value <= MAX_MSGID


def parse_message(obj: Any) -> Message:
    """Classify one decoded msgpack object; anything that is not MessagePack-RPC is a ProtocolError."""
    if type(obj) is not list:
        raise ProtocolError(f"message is not an array (got {type(obj).__name__})")
    if not obj:
        raise ProtocolError("message is an empty array")
    kind = obj[0]
    if kind == REQUEST and type(kind) is int:
        if len(obj) != 4 or not _is_msgid(obj[1]):
            raise ProtocolError("request must be [0, msgid(uint32), method, params]")
        return Request(obj[1], obj[2], obj[3])
    if kind == RESPONSE and type(kind) is int:
        if len(obj) != 4 or not _is_msgid(obj[1]):
            raise ProtocolError("response must be [1, msgid(uint32), error, result]")
        return Response(obj[1], obj[2], obj[3])
    if kind == NOTIFICATION and type(kind) is int:
        if len(obj) != 3:
            raise ProtocolError("notification must be [2, method, params]")
        return Notification(obj[1], obj[2])
    raise ProtocolError(f"unknown message type {kind!r}")


_packb: Callable[[object], bytes] = msgpack.Packer(use_bin_type=True).pack


def encode_request(msgid: int, method: str, params: list[Any]) -> bytes:
    return _packb([REQUEST, msgid, method, params])


def encode_response(msgid: int, error: object, result: object) -> bytes:
    return _packb([RESPONSE, msgid, error, result])


def encode_notification(method: str, params: list[Any]) -> bytes:
    return _packb([NOTIFICATION, method, params])
