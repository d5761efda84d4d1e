"""The sans-io MessagePack-RPC codec: bytes in, messages out; messages in, bytes out.

Nothing here touches a socket or a clock, so every edge case of the wire is a
plain unit test, and both the daemon and the client wrap the same object.
"""

from __future__ import annotations

from collections import deque
from itertools import islice as _islice
from operator import sub as _minus

import msgpack

from ._brief import brief

# typing costs milliseconds to import, and agentctl's start-up is measured in them;
# annotations are strings here, so only type checkers need these names.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final

__all__ = [
    "CLIENT_MAX_MESSAGE_SIZE",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "MAX_DEPTH",
    "MAX_MSGID",
    "MAX_VALUES",
    "Notification",
    "ProtocolError",
    "Refusal",
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
MAX_MSGID: Final = 2**32 - 1
# What one message from an untrusting side's peer may decode to. Each value is a
# byte at least, so the byte limit alone lets 16 MiB become 16 million objects
# (over a gigabyte); a quarter million values is at most about 20 MB decoded.
MAX_VALUES: Final = 262_144
# Deeper than any real request, shallow enough that nothing which walks a value
# (repr, a converter, json) can run out of stack on it.
MAX_DEPTH: Final = 100
# A message larger than this leaves fresh unpackers behind it (see `_new_unpackers`).
_RENEW_AFTER: Final = 1024 * 1024
# The streaming decoder (see `RpcCodec._decode_streaming`) takes at most this
# much unread input, and arrays and maps of at most this many entries.
_STREAMED_INPUT: Final = 256 * 1024
_STREAMED_CONTAINER: Final = 1024


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

    def __init__(self, msgid: int, error: Any, result: Any) -> None:
        self.msgid = msgid
        # Decoded msgpack, any shape the peer sent: whoever reads them checks them.
        self.error: Any = error
        self.result: Any = result

    def __repr__(self) -> str:
        return f"Response({self.msgid!r}, {self.error!r}, {self.result!r})"


class Notification:
    """`[2, method, params]`."""

    __slots__ = ("method", "params")

    def __init__(self, method: object, params: Any) -> None:
        # Any: a connection hands out only notifications whose method is a string.
        self.method: Any = method
        # Decoded msgpack, any shape the peer sent: whoever reads it checks it.
        self.params: Any = params

    def __repr__(self) -> str:
        return f"Notification({self.method!r}, {self.params!r})"


Message = Request | Response | Notification


class Refusal:
    """A request that was framed but not decoded: too deep or too many values.

    Its msgid was read from the raw bytes, so it can still be answered.
    """

    __slots__ = ("message", "msgid")

    def __init__(self, msgid: int, message: str) -> None:
        self.msgid = msgid
        self.message = message

    def __repr__(self) -> str:
        return f"Refusal({self.msgid!r}, {self.message!r})"


class RpcCodec:
    """Turns an unframed stream of msgpack objects into MessagePack-RPC messages.

    The stream has no length prefix (Neovim's channels speak exactly this), so
    each message is first framed by a skipping unpacker, which walks the bytes
    without building anything, and only a message known to be complete is
    decoded. Decoding as bytes arrive would build a partly received message's
    objects as they come: 16 MiB of `0x90` (empty arrays) is 16 million lists,
    over a gigabyte, held for as long as the peer keeps the message unfinished.
    Framed first, an unfinished message costs its bytes and nothing more.

    `guarded` is for input from a peer we do not trust (the daemon's clients):
    a message of more than `max_depth` bytes is surveyed before it is decoded,
    and one nested deeper than `max_depth` or holding more than `max_values`
    values is not decoded at all but refused (a `Refusal`, answerable by its
    msgid). A map key that is an array or a map decodes to a stand-in, so the
    request it is in gets the error reply its params deserve rather than
    breaking the stream.
    """

    def __init__(
        self,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        *,
        guarded: bool = False,
        max_values: int = MAX_VALUES,
        max_depth: int = MAX_DEPTH,
    ) -> None:
        self.max_message_size = max_message_size
        self._guarded = guarded
        self.max_values = max_values
        self.max_depth = max_depth
        # Messages this short cannot be too deep or too many: each value is a byte at least.
        self._survey_above = min(max_depth, max_values) if guarded else max_message_size
        # Messages no longer than this need no check of their own before they are decoded.
        self._decode_directly = min(self._survey_above, max_message_size, _RENEW_AFTER)
        # Bytes fed in all, and the stream offset where the current message began.
        self._fed = 0
        self._message_start = 0
        # Streaming (see `_decode_streaming`): the bytes fed since the last
        # message boundary, from stream offset `_chunks_start`, kept so that a
        # message the streaming decoder leaves unfinished can be framed instead.
        self._framing = False
        self._chunks: list[bytes] = []
        self._chunks_start = 0
        self._new_unpackers(b"")
        self._broken: ProtocolError | None = None
        # Decoded messages `next_message` has yet to hand out.
        self._ready: deque[Message | Refusal] = deque()

    def _new_unpackers(self, pending: bytes) -> None:
        # Fresh unpackers, holding `pending`: an unpacker's buffer keeps the
        # largest size it ever grew to, so after a large message its memory
        # goes back only with the unpacker itself.
        limit = self.max_message_size
        # A header's count is allocated before its elements arrive: the
        # streaming decoder of a guarded codec takes only short arrays and maps
        # (a longer one is framed and decoded whole instead, see `next_values`).
        containers = _STREAMED_CONTAINER if self._guarded and not self._framing else limit
        # Our own accounting below enforces the size limit; the unpackers' own
        # limits only bound what one header may claim.
        self._skipper = msgpack.Unpacker(max_buffer_size=0)
        self._decoder = msgpack.Unpacker(max_buffer_size=0, **self._decoding(containers))
        # Offsets count from the new unpackers' first byte, as their tell() does.
        self._fed = len(pending)
        self._message_start = 0
        self._chunks_start = 0
        if pending:
            if self._framing:
                self._skipper.feed(pending)
            else:
                self._chunks = [pending]
            self._decoder.feed(pending)

    def _start_framing(self) -> None:
        """Frame from the current message on: it is unfinished, or the streaming decoder would not take it."""
        chunks = self._chunks
        joined = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._chunks = []
        self._framing = True
        self._new_unpackers(joined[self._message_start - self._chunks_start :])

    def _stop_framing(self) -> None:
        """At a message boundary with nothing buffered: stream again, with fresh unpackers."""
        self._framing = False
        self._chunks = []
        self._new_unpackers(b"")

    @property
    def broken(self) -> bool:
        """Whether the stream is broken: the next call raises (after what came before the break)."""
        return self._broken is not None

    @property
    def buffered(self) -> int:
        """Bytes received of a message not yet complete (after `next_message` returned None)."""
        return self._fed - self._message_start

    def _too_large(self) -> ProtocolError:
        self._broken = ProtocolError(f"message larger than the {self.max_message_size}-byte limit")
        return self._broken

    def _malformed(self, exc: Exception) -> ProtocolError:
        if isinstance(exc, msgpack.StackError):
            self._broken = ProtocolError("malformed msgpack: arrays or maps nested too deeply")
        else:  # FormatError, UnicodeDecodeError, ValueError...
            self._broken = ProtocolError(f"malformed msgpack: {brief(exc) if str(exc) else type(exc).__name__}")
        return self._broken

    def _release(self) -> None:
        """Once broken, and what came before the break decoded: let go of what the stream buffered.

        Nothing more is decoded from it, and a message over the size limit
        left as much again in each unpacker.
        """
        self._chunks = []
        self._new_unpackers(b"")

    def _error(self) -> ProtocolError:
        """The break, to raise: a copy each time.

        The one kept in `_broken`, once raised, would hold in its traceback the
        frames that raised it, and in their locals the unpackers and messages
        of the read: the codec, which holds it, in a cycle with 32 MiB for a
        message over the limit, freed only by the cycle collector's next full
        collection.
        """
        broken = self._broken
        assert broken is not None
        return type(broken)(*broken.args)

    def receive_data(self, data: bytes | bytearray) -> None:
        """Buffer bytes from the peer; `next_message` decodes them."""
        if self._broken is not None:
            raise self._error()
        if type(data) is not bytes:
            data = bytes(data)
        if self._framing:
            self._skipper.feed(data)
        else:
            self._chunks.append(data)
        self._decoder.feed(data)
        self._fed += len(data)
        if not self._framing and self._fed - self._message_start > _STREAMED_INPUT:
            # More than a read's worth unread: decoding it as it streams could
            # build a great deal for a message that never ends.
            self._start_framing()

    def next_message(self) -> Message | Refusal | None:
        """The next complete message, or None when more bytes are needed."""
        ready = self._ready
        if not ready:
            ready.extend(self.next_messages())
            if not ready:
                return None
        return ready.popleft()

    def messages(self) -> list[Message | Refusal]:
        """Every complete message buffered so far."""
        out = list(self._ready)
        self._ready.clear()
        while batch := self.next_messages():
            out += batch
        return out

    def next_messages(self) -> list[Message | Refusal]:
        """Every complete message buffered, in order; empty when more bytes are needed.

        Raises ProtocolError when the stream is broken; if it broke after some
        complete messages, those come first and the next call raises.
        """
        if self._ready:
            ready = list(self._ready)
            self._ready.clear()
            return ready
        out: list[Message | Refusal] = []
        for obj in self.next_values():
            if type(obj) is Refusal:
                out.append(obj)
                continue
            # The hot path, a well-formed request, without a call; parse_message
            # classifies (and refuses) everything else.
            if type(obj) is list and len(obj) == 4 and obj[0] == REQUEST and type(obj[0]) is int:
                msgid = obj[1]
                if type(msgid) is int and 0 <= msgid <= MAX_MSGID:
                    out.append(Request(msgid, obj[2], obj[3]))
                    continue
            try:
                out.append(parse_message(obj))
            except ProtocolError as exc:
                self.break_stream(exc)
                if not out:
                    raise
                break
        return out

    def break_stream(self, exc: ProtocolError) -> None:
        """Mark the stream broken by what a message said (its shape, found by whoever read it)."""
        if self._broken is None:
            self._broken = type(exc)(*exc.args)  # not `exc`, which its raiser's frames hold (see `_error`)
            self._release()

    def next_values(self) -> list[object]:
        """Every complete message buffered, decoded but not yet classified, in order.

        A message too deep or too large in values (guarded) is a `Refusal`
        instead. Raises ProtocolError when the stream is broken; if it broke
        after some complete messages, those come first and the next call raises.
        """
        if self._broken is not None:
            raise self._error()
        if not self._framing:
            streamed = self._decode_streaming()
            if not self._framing:
                return streamed
            # The streaming decoder stopped at a message it should not build
            # itself: frame from there on.
            try:
                streamed += self.next_values()
            except ProtocolError:
                if not streamed:
                    raise
            return streamed
        skipper = self._skipper
        skip = skipper.skip
        tell = skipper.tell
        # Frame first (the skipper builds nothing), then decode what is whole.
        ends: list[int] = []
        add_end = ends.append
        failure: ProtocolError | None = None
        try:
            while True:
                skip()
                add_end(tell())
        except msgpack.OutOfData:
            pass  # the common end of every read
        except Exception as exc:
            failure = self._malformed(exc)
        out: list[object] = []
        start = self._message_start
        renew = False
        if ends:
            decoder = self._decoder
            starts = [start]
            starts += ends
            if max(map(_minus, ends, starts)) <= self._decode_directly:
                # The usual read: every message small. Decoded in one call;
                # a failure keeps the messages decoded before it.
                try:
                    out.extend(_islice(decoder, len(ends)))
                except Exception as exc:
                    failure = self._malformed(exc)
                start = ends[-1]
            else:
                max_size = self.max_message_size
                survey_above = self._survey_above
                for end in ends:
                    size = end - start
                    if size > max_size:
                        failure = self._too_large()
                        break
                    renew = renew or size > _RENEW_AFTER
                    try:
                        if size <= survey_above:
                            out.append(next(decoder))
                        else:
                            out.append(self._surveyed(decoder.read_bytes(size)))
                    except ProtocolError as exc:
                        failure = exc
                        break
                    except Exception as exc:
                        failure = self._malformed(exc)
                        break
                    start = end
            self._message_start = start
        if failure is None and self._fed - start > self.max_message_size:
            failure = self._too_large()
        if failure is not None:
            self._broken = failure
            self._release()
            if not out:
                raise self._error()
        elif self._fed == start:
            self._stop_framing()
        elif renew:
            self._new_unpackers(self._decoder.read_bytes(self._fed - start))
        return out

    def _decode_streaming(self) -> list[object]:
        """Decode complete messages as they come, no framing first: the usual read, all small messages.

        Safe because it never outlives one read: at most `_STREAMED_INPUT`
        bytes are unread, and a message still unfinished at the end of the
        read is framed from its start (the partial objects the decoder built
        go with it). A message that is longer than `_decode_directly`, or that
        the decoder refuses (a long array, bad bytes), is framed too, and the
        framing path decides what it is.
        """
        decoder = self._decoder
        tell = decoder.tell
        start = self._message_start
        small = self._decode_directly
        out: list[object] = []
        add = out.append
        try:
            for obj in decoder:
                end = tell()
                if end - start > small:
                    break  # framed below, from `start`
                add(obj)
                start = end
        except Exception:
            pass  # framed below, from `start`: the framing path names what is wrong
        self._message_start = start
        if self._fed != start:
            self._start_framing()
        else:
            self._chunks = []
            self._chunks_start = start
        return out

    def _surveyed(self, raw: bytes) -> object:
        """A message long enough to be too deep or too many values: decoded, or refused."""
        why = _survey(raw, self.max_values, self.max_depth) if self._guarded else None
        if why is None:
            return self._decode_raw(raw)
        msgid = _request_msgid(raw)
        if msgid is None:
            raise ProtocolError(why)
        return Refusal(msgid, why)

    def _decode_raw(self, raw: bytes) -> object:
        return msgpack.unpackb(raw, **self._decoding(self.max_message_size))

    def _decoding(self, containers: int) -> dict[str, Any]:
        """How messages are decoded, streaming or whole; arrays and maps of up to `containers` entries."""
        limit = self.max_message_size
        return {
            "raw": False,
            "use_list": True,
            # Int or bytes keys are valid msgpack; they fail param validation with a
            # clear reply instead of killing the connection here.
            "strict_map_key": False,
            "object_pairs_hook": _map_with_any_keys if self._guarded else None,
            "max_str_len": limit,
            "max_bin_len": limit,
            "max_array_len": containers,
            "max_map_len": containers,
            "max_ext_len": limit,
        }


class _ArrayKey(list):  # type: ignore[type-arg]
    """An array used as a map key: hashable (by identity), so the map around it decodes."""

    __slots__ = ()
    __hash__ = object.__hash__  # type: ignore[assignment]


class _MapKey(dict):  # type: ignore[type-arg]
    """A map used as a map key: hashable (by identity), so the map around it decodes."""

    __slots__ = ()
    __hash__ = object.__hash__  # type: ignore[assignment]


# Error messages name a value's type by its class name, as msgpack's arrays and maps decode.
_ArrayKey.__name__ = "list"
_MapKey.__name__ = "dict"


def _map_with_any_keys(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    try:
        return dict(pairs)
    except TypeError:  # unhashable: an array or a map as a key
        out: dict[Any, Any] = {}
        for key, value in pairs:
            if type(key) is list:
                key = _ArrayKey(key)
            elif type(key) is dict:
                key = _MapKey(key)
            out[key] = value
        return out


def _request_msgid(raw: bytes) -> int | None:
    """The msgid of a raw `[0, msgid, method, params]`, or None if it is not one."""
    if len(raw) < 3 or raw[0] != 0x94 or raw[1] != REQUEST:
        return None
    tag = raw[2]
    if tag <= 0x7F:
        return tag
    width = {0xCC: 1, 0xCD: 2, 0xCE: 4}.get(tag)
    if width is None or len(raw) < 3 + width:
        return None
    return int.from_bytes(raw[3 : 3 + width], "big")


# Payload lengths after a type byte: (bytes of the length field, fixed payload size).
_SKIP: Final = {
    0xC4: (1, 0), 0xC5: (2, 0), 0xC6: (4, 0),  # bin
    0xC7: (1, 1), 0xC8: (2, 1), 0xC9: (4, 1),  # ext: length, then a type byte
    0xCA: (0, 4), 0xCB: (0, 8),  # float
    0xCC: (0, 1), 0xCD: (0, 2), 0xCE: (0, 4), 0xCF: (0, 8),  # uint
    0xD0: (0, 1), 0xD1: (0, 2), 0xD2: (0, 4), 0xD3: (0, 8),  # int
    0xD4: (0, 2), 0xD5: (0, 3), 0xD6: (0, 5), 0xD7: (0, 9), 0xD8: (0, 17),  # fixext
    0xD9: (1, 0), 0xDA: (2, 0), 0xDB: (4, 0),  # str
}  # fmt: skip
# Container headers: (bytes of the count field, values per counted entry).
_CONTAINERS: Final = {0xDC: (2, 1), 0xDD: (4, 1), 0xDE: (2, 2), 0xDF: (4, 2)}


def _survey(raw: bytes, max_values: int, max_depth: int) -> str | None:
    """Why a complete, well-framed message must not be decoded, or None.

    Walks the bytes (strings and binaries are skipped by their length), so it
    costs per value, and stops at the first value over the limit.
    """
    pos = 0
    values = 0
    open_counts: list[int] = []  # what is left to read of each enclosing container
    left = 1
    while True:
        if not left:
            if not open_counts:
                return None
            left = open_counts.pop()
            continue
        left -= 1
        values += 1
        if values > max_values:
            return f"message holds more than {max_values} values"
        tag = raw[pos]
        pos += 1
        if tag <= 0x7F or tag >= 0xE0 or tag in (0xC0, 0xC2, 0xC3):
            continue
        if 0xA0 <= tag <= 0xBF:
            pos += tag & 0x1F
            continue
        if 0x80 <= tag <= 0x9F:
            count = (tag & 0x0F) * (2 if tag < 0x90 else 1)
        elif tag in _CONTAINERS:
            width, per = _CONTAINERS[tag]
            count = int.from_bytes(raw[pos : pos + width], "big") * per
            pos += width
        else:
            width, fixed = _SKIP[tag]
            pos += width + fixed + (int.from_bytes(raw[pos : pos + width], "big") if width else 0)
            continue
        if len(open_counts) + 1 > max_depth:
            return f"message nested deeper than {max_depth} levels of arrays and maps"
        if count:
            open_counts.append(left)
            left = count


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
    raise ProtocolError(f"unknown message type {brief(kind)}")


_packer = msgpack.Packer(use_bin_type=True)


def _renew_packer() -> None:
    # A Packer's buffer keeps the largest size it ever grew to: after one
    # large reply, a fresh one gives that memory back.
    global _packer
    _packer = msgpack.Packer(use_bin_type=True)


def encode_request(msgid: int, method: str, params: list[Any]) -> bytes:
    data: bytes = _packer.pack([REQUEST, msgid, method, params])
    if len(data) > _RENEW_AFTER:
        _renew_packer()
    return data


def encode_response(msgid: int, error: object, result: object) -> bytes:
    data: bytes = _packer.pack([RESPONSE, msgid, error, result])
    if len(data) > _RENEW_AFTER:
        _renew_packer()
    return data


def encode_notification(method: str, params: list[Any]) -> bytes:
    data: bytes = _packer.pack([NOTIFICATION, method, params])
    if len(data) > _RENEW_AFTER:
        _renew_packer()
    return data
