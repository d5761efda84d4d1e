"""One end of a MessagePack-RPC conversation, as state: bytes in, events out; calls and replies in, bytes out.

In the manner of h11's `Connection`: this object owns everything about the
conversation that is not I/O — the msgids of our calls and the table of those
still unanswered, which incoming message goes where, how many of the peer's
requests may be under way at once, and the size limits on what the peer sends.
The daemon's connection and both clients are thin adapters over it that only
move bytes, so each rule is written, and tested, once.

    conn.receive_data(data)              # bytes from the peer
    while (event := conn.next_event()) is not NEED_DATA:
        ...                              # Request, Call (answered), Notification, Reply, PAUSED
    data = conn.call("ping", [])[1]      # bytes to send; the Call is answered by a later event
    data = conn.respond(request, None, result)
"""

from __future__ import annotations

import itertools
from collections import deque

from . import _codec
from ._brief import brief
from ._codec import (
    _RENEW_AFTER,
    DEFAULT_MAX_MESSAGE_SIZE,
    MAX_MSGID,
    REQUEST,
    RESPONSE,
    Notification,
    ProtocolError,
    Refusal,
    Request,
    Response,
    RpcCodec,
    encode_notification,
    encode_request,
    encode_response,
    parse_message,
)
from ._errors import ErrorCode, RpcError

# typing costs milliseconds to import, and agentctl's start-up is measured in them;
# annotations are strings here, so only type checkers need these names.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any, Final

    #: `answer(msgid, method, params)`: the result, or TAKEN if the request was taken on.
    Answer = Callable[[int, str, Any], object]

__all__ = [
    "NEED_DATA",
    "PAUSED",
    "TAKEN",
    "Call",
    "InputBudget",
    "InputBudgetExceeded",
    "Reply",
    "RpcConnection",
]


# A response's array header and type, and its nil error: the pieces of a constant reply.
_RESPONSE_HEAD: Final = b"\x94\x01"
_NO_ERROR: Final = b"\xc0"


class _Sentinel:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


#: `next_event`: every complete message has been handed out; feed more bytes.
NEED_DATA: Final = _Sentinel("NEED_DATA")
#: `next_event`: the peer's next request waits for one under way to be answered.
PAUSED: Final = _Sentinel("PAUSED")
#: What `next_events`'s `answer` returns for a request it took on, to `respond` to later.
TAKEN: Final = _Sentinel("TAKEN")


class Reply:
    """Bytes the connection wrote by itself, to be sent like any reply: a request refused unread."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class Call:
    """A call we made: `answered` once its response came, `lost` if the connection ended first.

    `waker` is the adapter's: whatever it needs to wake the caller (a trio.Event).
    """

    __slots__ = ("answered", "error", "lost", "method", "msgid", "result", "waker")

    def __init__(self, msgid: int, method: str) -> None:
        self.msgid = msgid
        self.method = method
        self.answered = False
        self.error: object = None
        self.result: object = None
        self.lost: str | None = None
        self.waker: Any = None

    def outcome(self) -> Any:
        """The result; RpcError for an error reply. Only once `answered`."""
        if self.error is not None:
            raise RpcError.from_wire(self.error)
        return self.result


class InputBudgetExceeded(ProtocolError):
    """The connection's unfinished message would take the daemon past its input budget."""


class InputBudget:
    """What the unfinished messages of all connections together may hold, in bytes.

    One per daemon, shared by its connections: each charges the bytes it holds
    of a message not yet complete. A message is held whole before it is decoded,
    so without a shared cap a handful of connections each holding a message just
    under the size limit would hold that much memory each, for as long as they
    stay open.
    """

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    @classmethod
    def for_message_size(cls, max_message_size: int) -> InputBudget:
        # Four messages at the size limit, unfinished at once, across all connections.
        return cls(4 * max_message_size)


class RpcConnection:
    """The conversation's state, for either end; no I/O.

    `guarded` (the daemon's side) surveys what the peer sends before decoding it
    (see `RpcCodec`); `max_in_flight` bounds the peer's requests handed out and
    not yet answered; `budget` is shared by all connections of one daemon.

    `constant_replies` (a server's) maps methods whose result never changes to
    that result: a request for one with empty params (`[]`) is answered here,
    from bytes packed once, without `next_events`'s `answer` being asked. A
    pipelined `ping` costs a dict lookup and a packed msgid, not a dispatch.
    """

    def __init__(
        self,
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        guarded: bool = False,
        max_in_flight: int | None = None,
        budget: InputBudget | None = None,
        constant_replies: Mapping[str, object] | None = None,
    ) -> None:
        self._codec = RpcCodec(max_message_size, guarded=guarded)
        # What follows a constant reply's msgid: no error, then the result.
        self._constant_tails = {
            method: _NO_ERROR + _codec._packer.pack(result) for method, result in (constant_replies or {}).items()
        }
        self._budget = budget
        self._charged = 0
        self.max_in_flight = max_in_flight if max_in_flight is not None else MAX_MSGID + 1
        #: Requests from the peer handed out by `next_event` and not yet answered by `respond`.
        self.in_flight = 0
        # Messages decoded and not yet handed out (the rest of a read, past a pause).
        self._backlog: list[object] = []
        self._events: deque[Request | Call | Notification | Reply | _Sentinel] = deque()
        self._calls: dict[int, Call] = {}
        self._msgids = itertools.count(1)
        #: Results `next_events` could not encode, described, for the caller to log (and clear).
        self.unencodable: list[str] = []
        #: Why the conversation ended (set by `close`), or None while it goes on.
        self.closed: str | None = None

    # --- bytes in, events out

    def receive_data(self, data: bytes | bytearray) -> None:
        """Bytes from the peer; `next_event` hands out what they complete."""
        self._codec.receive_data(data)

    def next_event(self) -> Request | Call | Notification | Reply | _Sentinel:
        """The next thing the peer's bytes say (see `next_events`), one at a time."""
        events = self._events
        if not events:
            events.extend(self.next_events())
        return events.popleft()

    def next_events(self, answer: Answer | None = None) -> list[Request | Call | Notification | Reply | _Sentinel]:
        """What the peer's bytes say, in order, as far as they go now.

        - `Request`: the peer asks; answer it with `respond` (it counts against
          `max_in_flight` until then);
        - `Call`: one of our calls, now answered;
        - `Notification`: the peer tells (its method is a string);
        - `Reply`: bytes to send: requests refused without being read, and the
          replies `answer` gave;
        - `PAUSED`, always last: the peer's next request waits for one under
          way to be answered;
        - `NEED_DATA`, always last: nothing more until more bytes come.

        With `answer`, requests are not handed out: each is passed to
        `answer(msgid, method, params)` as it is read, which returns the result
        when it answered at once (RpcError for an error reply), or `TAKEN` when
        it took the request on (it then counts as in flight, and its `respond`
        comes later). A server answers most requests this way without an
        object per request, and all of one read's replies come out as one
        `Reply`. A result that cannot be encoded is answered with an internal
        error and described in `unencodable`, for the caller to log.

        A list that ends with neither PAUSED nor NEED_DATA: call again (it
        raises). Responses to calls we did not make (or gave up on) are dropped
        here. Raises ProtocolError when the peer broke the stream: close the
        connection.
        """
        backlog = self._backlog
        codec = self._codec
        values = backlog if backlog else codec.next_values()
        out: list[Request | Call | Notification | Reply | _Sentinel] = []
        replies: list[bytes] = []
        in_flight = self.in_flight
        limit = self.max_in_flight
        # Locals: this loop runs once per message.
        request = REQUEST
        max_msgid = MAX_MSGID
        taken = TAKEN
        pack = _codec._packer.pack
        constant_tails = self._constant_tails
        response_head = _RESPONSE_HEAD
        add_reply = replies.append
        for index, value in enumerate(values):
            # The hot path, a well-formed request, inline; `parse_message`
            # classifies (and refuses) everything else. `kind is request`: the
            # decoder's 0 is CPython's one cached small int, so this is the
            # cheapest test that also tells 0 from False and 0.0; a 0 that
            # failed it would only take the slow path, which classifies it.
            if type(value) is list and len(value) == 4:
                kind, msgid, method, params = value
                if kind is request and type(msgid) is int and 0 <= msgid <= max_msgid and type(method) is str:
                    if in_flight >= limit:
                        self._backlog = values[index:]
                        out.append(PAUSED)
                        break
                    # A client has none: the lookup finds nothing.
                    tail = constant_tails.get(method)
                    if tail is not None and type(params) is list and not params:
                        # Joined with the rest below: no bytes object of its own.
                        add_reply(response_head)
                        add_reply(pack(msgid))
                        add_reply(tail)
                        continue
                    if answer is None:
                        in_flight += 1
                        out.append(Request(msgid, method, params))
                        continue
                    try:
                        result = answer(msgid, method, params)
                    except RpcError as exc:
                        replies.append(encode_response(msgid, exc.to_wire(), None))
                        continue
                    if result is taken:
                        in_flight += 1
                        continue
                    try:
                        # encode_response, inline: once per request on a server's hot path.
                        data = pack([1, msgid, None, result])
                    except Exception as exc:
                        self.unencodable.append(f"the result of {brief(method)}: {brief(exc)}")
                        error = [ErrorCode.INTERNAL, f"internal error: cannot encode the result: {brief(exc)}"]
                        data = encode_response(msgid, error, None)
                    replies.append(data)
                    if len(data) > _RENEW_AFTER:
                        _codec._renew_packer()
                        pack = _codec._packer.pack
                    continue
            if type(value) is Refusal:
                replies.append(encode_response(value.msgid, [ErrorCode.INVALID_PARAMS, value.message], None))
                continue
            try:
                message = parse_message(value)
            except ProtocolError as exc:
                codec.break_stream(exc)
                if not out and not replies:
                    self.in_flight = in_flight
                    raise
                break
            if type(message) is Request:
                # Its msgid is fine (or parse_message would have refused it): its method is not a string.
                error = [ErrorCode.UNKNOWN_METHOD, f"method must be a string, got {brief(message.method)}"]
                replies.append(encode_response(message.msgid, error, None))
            elif type(message) is Response:
                call = self._calls.pop(message.msgid, None)
                if call is not None:
                    call.answered = True
                    call.error = message.error
                    call.result = message.result
                    out.append(call)
            elif type(message) is Notification and type(message.method) is str:
                out.append(message)
        else:
            self._backlog = []
            if not codec.broken:
                if self._budget is not None:
                    self._charge(codec.buffered)
                out.append(NEED_DATA)
        self.in_flight = in_flight
        if replies:
            # Before the closing PAUSED or NEED_DATA, if there is one.
            reply = Reply(replies[0] if len(replies) == 1 else b"".join(replies))
            if out and (out[-1] is NEED_DATA or out[-1] is PAUSED):
                out.insert(len(out) - 1, reply)
            else:
                out.append(reply)
        return out

    def _charge(self, held: int) -> None:
        budget = self._budget
        assert budget is not None
        if held == self._charged:
            return
        budget.used += held - self._charged
        self._charged = held
        if held > 0 and budget.used > budget.limit:
            raise InputBudgetExceeded(
                f"unfinished messages on all connections would hold {budget.used} bytes, over the "
                f"{budget.limit}-byte input budget (this connection holds {held})"
            )

    # --- calls and replies in, bytes out

    def call(self, method: str, params: list[Any], *, want_reply: bool = True) -> tuple[Call, bytes]:
        """A request to the peer: the Call its response will answer, and the bytes to send.

        Without `want_reply`, the response is dropped when it comes.
        """
        msgid = next(self._msgids) % (MAX_MSGID + 1)
        while msgid in self._calls:  # only after 2**32 calls, with one still unanswered
            msgid = next(self._msgids) % (MAX_MSGID + 1)
        data = encode_request(msgid, method, params)
        call = Call(msgid, method)
        if want_reply:
            self._calls[msgid] = call
        return call, data

    def abandon(self, call: Call) -> None:
        """Give up on `call`: its response, if it comes, is dropped."""
        if self._calls.get(call.msgid) is call:
            del self._calls[call.msgid]

    def respond(self, request: Request, error: object, result: object) -> bytes:
        """The bytes that answer `request`; from here it no longer counts as in flight.

        If the reply cannot be encoded this raises, and the request is still
        owed: answer it again, with an error.
        """
        # encode_response, inline: this is once per request on the daemon's hot path.
        data: bytes = _codec._packer.pack([RESPONSE, request.msgid, error, result])
        if len(data) > _RENEW_AFTER:
            _codec._renew_packer()
        self.in_flight -= 1
        return data

    def notify(self, method: str, params: list[Any]) -> bytes:
        return encode_notification(method, params)

    # --- the end

    def close(self, reason: str) -> list[Call]:
        """End the conversation; the calls still unanswered, each now `lost` with `reason`."""
        if self.closed is not None:
            return []
        self.closed = reason
        if self._budget is not None:
            self._budget.used -= self._charged
            self._charged = 0
        lost = list(self._calls.values())
        self._calls.clear()
        for call in lost:
            call.lost = reason
        return lost
