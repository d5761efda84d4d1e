"""Server-sent events, sans-io: the bytes of a `text/event-stream` body in, events out.

Follows the WHATWG rules for parsing and interpreting an event stream
(https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation).
The stream is split into lines as bytes and each line is decoded on its own:
CR and LF never occur inside a UTF-8 sequence, so a character split across two
`feed` calls simply waits in the buffer, and `str.splitlines` (which also breaks
on U+2028, form feed, ...) never sees the stream.
"""

from __future__ import annotations

import attrs

__all__ = ["MAX_EVENT_BYTES", "EventTooLarge", "SSEDecoder", "ServerSentEvent"]

# Far above any real event (a delta, a usage chunk), far below what would hurt
# the daemon: a server that never ends a line or an event must not grow our
# memory without bound.
MAX_EVENT_BYTES = 16 * 1024 * 1024

_BOM = b"\xef\xbb\xbf"
_LF = 0x0A
_CR = 0x0D


class EventTooLarge(ValueError):
    """One line or event of the stream is larger than the decoder takes."""


@attrs.frozen
class ServerSentEvent:
    event: str = "message"
    data: str = ""
    # The stream's last event ID when this event was dispatched: it persists
    # across events until an `id` field changes it, as EventSource's does.
    id: str | None = None
    # A `retry` (ms) the server sent since the previous dispatched event; a
    # retry-only block is not an event, so its value rides on the next one.
    retry: int | None = None


class SSEDecoder:
    """Decodes one response body; make a new decoder per connection."""

    __slots__ = ("_after_cr", "_at_start", "_buffer", "_data", "_data_size", "_event", "_last_id", "_limit", "_retry")

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._limit = max_event_bytes
        self._data_size = 0  # bytes of the data lines of the event being read
        self._buffer = bytearray()  # an unfinished line, or a possible BOM
        self._at_start = True  # nothing but a prefix of a BOM seen yet
        self._after_cr = False  # the last feed ended in CR: a leading LF belongs to it
        self._data: list[str] = []
        self._event = ""
        self._last_id: str | None = None
        self._retry: int | None = None

    def feed(self, data: bytes) -> list[ServerSentEvent]:
        """Take the next bytes of the body; return the events they complete."""
        if not data:
            return []
        if self._after_cr:
            self._after_cr = False
            if data[0] == _LF:
                data = data[1:]
        buffer = self._buffer
        buffer += data
        if self._at_start:
            if len(buffer) < 3 and _BOM.startswith(buffer):
                return []
            self._at_start = False
            if buffer.startswith(_BOM):
                del buffer[:3]
        # The buffer before `data` held no line ending, so only `data` can end a line.
        if b"\n" not in data and b"\r" not in data:
            if len(buffer) > self._limit:
                raise EventTooLarge(f"a line of more than {self._limit} bytes")
            return []

        last = buffer[-1]
        lines = buffer.splitlines()  # on bytes: only CRLF, LF and CR
        if last == _LF or last == _CR:
            buffer.clear()
            self._after_cr = last == _CR
        else:
            self._buffer = lines.pop()
            if len(self._buffer) > self._limit:
                raise EventTooLarge(f"a line of more than {self._limit} bytes")

        events: list[ServerSentEvent] = []
        for raw in lines:
            if not raw:
                if self._data:
                    events.append(
                        ServerSentEvent(self._event or "message", "\n".join(self._data), self._last_id, self._retry)
                    )
                    self._data = []
                    self._data_size = 0
                    self._retry = None
                self._event = ""
                continue
            line = raw.decode("utf-8", "replace")
            if line[0] == ":":
                continue
            name, _, value = line.partition(":")
            if value[:1] == " ":
                value = value[1:]
            if name == "data":
                self._data.append(value)
                self._data_size += len(raw)
                if self._data_size > self._limit:
                    raise EventTooLarge(f"an event of more than {self._limit} bytes of data")
            elif name == "event":
                self._event = value
            elif name == "id":
                if "\x00" not in value:
                    self._last_id = value
            elif name == "retry":
                if value.isascii() and value.isdigit():
                    self._retry = int(value)
        return events

    def close(self) -> list[ServerSentEvent]:
        """The body ended. Per the spec an event still missing its blank line is
        discarded, not dispatched, so this returns no events; it exists so an
        adapter ends every decoder the same way."""
        self._buffer.clear()
        self._after_cr = False
        self._data = []
        self._data_size = 0
        self._event = ""
        self._retry = None
        return []
