"""JSON-RPC 2.0 over newline-delimited JSON, as ACP's stdio transport frames it. No I/O.

Like h11: `receive_data(bytes)` feeds what was read, `next_event()` hands back
one `Request`, `Notification`, `Response` or `Invalid` at a time (or None
when it needs more bytes), and `result`, `error`, `notify` and `request`
make the bytes to write. The connection keeps what it needs to state: the
ids of the requests it sent, so a response is matched to its request.

A message is one line of UTF-8 JSON without embedded newlines. A line longer
than `max_line` is dropped as it arrives (an `Invalid` for it, with id null),
so a peer that never sends a newline costs at most `max_line` bytes.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any

import attrs

__all__ = [
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "MAX_LINE",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "Connection",
    "Invalid",
    "Notification",
    "Request",
    "Response",
    "RpcFailure",
]

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

#: The longest line taken: an editor's embedded files travel inside prompts, so it is generous.
MAX_LINE = 64 * 1024 * 1024

Id = int | str | None


@attrs.frozen
class Request:
    id: int | str
    method: str
    params: Any


@attrs.frozen
class Notification:
    method: str
    params: Any


@attrs.frozen
class Response:
    """The answer to a request we sent: `result`, or `error` (the error object) when it failed."""

    id: int
    result: Any = None
    error: dict[str, Any] | None = None


@attrs.frozen
class Invalid:
    """A line that is no message we take: answer it with this error, unless `answer` is False (a stray response)."""

    code: int
    message: str
    id: Id = None
    answer: bool = True


class RpcFailure(Exception):
    """A method's failure, to answer as a JSON-RPC error: raised by handlers, turned into `error` by the adapter."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


def _valid_id(value: Any) -> bool:
    # bool is an int to Python, not to JSON; a float id is allowed by the spec but
    # discouraged, and no editor sends one: refusing it keeps matching exact.
    return value is None or isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _dumps(message: dict[str, Any]) -> bytes:
    # ensure_ascii keeps the line free of raw U+2028 and friends, which some readers split on.
    return json.dumps(message, separators=(",", ":"), ensure_ascii=True).encode() + b"\n"


class Connection:
    def __init__(self, *, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._buffer = bytearray()
        # Bytes of an overlong line are thrown away until its newline comes.
        self._skipping = False
        self._lines: deque[bytes | None] = deque()
        self._next_id = 0
        #: Ids of the requests we sent that have no response yet.
        self.outstanding: set[int] = set()

    # --- incoming

    def receive_data(self, data: bytes | bytearray) -> None:
        if self._skipping:
            newline = data.find(b"\n")
            if newline < 0:
                return
            self._skipping = False
            data = data[newline + 1 :]
        self._buffer += data
        if b"\n" in data:
            *lines, rest = bytes(self._buffer).split(b"\n")
            self._buffer = bytearray(rest)
            # None stands for an overlong line, in its place among the others.
            self._lines.extend(line if len(line) <= self.max_line else None for line in lines)
        if len(self._buffer) > self.max_line:
            self._buffer.clear()
            self._skipping = True
            self._lines.append(None)

    def next_event(self) -> Request | Notification | Response | Invalid | None:
        """The next message, or None until more data comes."""
        while self._lines:
            line = self._lines.popleft()
            if line is None:
                return Invalid(INVALID_REQUEST, f"message longer than {self.max_line} bytes: dropped")
            if line.strip():
                return self._parse(line)
        return None

    def _parse(self, line: bytes) -> Request | Notification | Response | Invalid:
        try:
            message = json.loads(line)
        except (ValueError, RecursionError) as exc:
            return Invalid(PARSE_ERROR, f"parse error: {exc}")
        if not isinstance(message, dict):
            return Invalid(INVALID_REQUEST, f"a message must be a JSON object, not {type(message).__name__}")
        has_id = "id" in message
        msg_id = message.get("id")
        if has_id and not _valid_id(msg_id):
            return Invalid(INVALID_REQUEST, "id must be a string, an integer or null")
        if message.get("jsonrpc") != "2.0":
            return Invalid(INVALID_REQUEST, 'jsonrpc must be "2.0"', msg_id)
        if "method" in message:
            method = message["method"]
            if not isinstance(method, str):
                return Invalid(INVALID_REQUEST, "method must be a string", msg_id)
            params = message.get("params")
            if params is not None and not isinstance(params, (dict, list)):
                return Invalid(INVALID_REQUEST, "params must be an object or an array", msg_id)
            if not has_id:
                return Notification(method, params)
            if msg_id is None:
                return Invalid(INVALID_REQUEST, "a request's id must not be null", None)
            return Request(msg_id, method, params)
        if has_id and ("result" in message or "error" in message):
            if not isinstance(msg_id, int) or msg_id not in self.outstanding:
                # Nothing to reply to a stray response: replying to responses loops.
                return Invalid(INVALID_REQUEST, f"response to no request of ours: id {msg_id!r}", None, answer=False)
            self.outstanding.discard(msg_id)
            error = message.get("error")
            if error is not None:
                return Response(msg_id, error=error if isinstance(error, dict) else {"code": INTERNAL_ERROR})
            return Response(msg_id, result=message.get("result"))
        return Invalid(INVALID_REQUEST, "neither a request, a notification nor a response", msg_id)

    # --- outgoing

    def result(self, msg_id: int | str, result: Any) -> bytes:
        return _dumps({"jsonrpc": "2.0", "id": msg_id, "result": result})

    def error(self, msg_id: Id, code: int, message: str, data: Any = None) -> bytes:
        error: dict[str, Any] = {"code": code, "message": message}
        if data is not None:
            error["data"] = data
        return _dumps({"jsonrpc": "2.0", "id": msg_id, "error": error})

    def notify(self, method: str, params: Any) -> bytes:
        return _dumps({"jsonrpc": "2.0", "method": method, "params": params})

    def request(self, method: str, params: Any) -> tuple[int, bytes]:
        """A request of ours: its id (its Response carries it) and its bytes."""
        msg_id = self._next_id
        self._next_id += 1
        self.outstanding.add(msg_id)
        return msg_id, _dumps({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})

    def abandon(self, msg_id: int) -> None:
        """We stopped waiting for this request's response: a late one is a stray."""
        self.outstanding.discard(msg_id)
