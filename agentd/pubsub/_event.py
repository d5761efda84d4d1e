"""One published event, and its msgpack-RPC notification, encoded once for every subscriber."""

from __future__ import annotations

import functools
from typing import Any, Final

import attrs

from agentd._packing import packb as _packb
from agentd.protocol import EventEnvelope

__all__ = ["Event"]

# The envelope's keys are EventEnvelope's fields, in its order: the encoding
# below writes their values in that order, so the type and the bytes cannot drift.
_FIELDS: Final = tuple(f.name for f in attrs.fields(EventEnvelope))
if _FIELDS != ("subscription_id", "workspace_id", "seq", "type", "payload"):
    raise ImportError(f"Event.encode_notification writes the envelope's values in another order than {_FIELDS}")
_SUBSCRIPTION_KEY, _WORKSPACE_KEY, _SEQ_KEY, _TYPE_KEY, _PAYLOAD_KEY = (_packb(name) for name in _FIELDS)
# `[2, "event", [{subscription_id: ..., <tail>}]]`: everything but the subscription id
# is the same for every subscriber, so it is encoded once per event.
_NOTIFY_HEAD: Final = b"\x93\x02" + _packb("event") + b"\x91" + bytes([0x80 | len(_FIELDS)]) + _SUBSCRIPTION_KEY


@functools.lru_cache(maxsize=1024)
def _packed_str(text: str) -> bytes:
    """Ids and type names recur in every event: each is packed once."""
    return _packb(text)


class Event:
    """One published event, shared by every subscriber it is fanned out to."""

    __slots__ = ("_tail", "must_deliver", "payload", "seq", "type", "workspace_id")

    def __init__(
        self,
        workspace_id: str,
        seq: int,
        type: str,
        payload: dict[str, Any],
        must_deliver: bool = False,
    ) -> None:
        self.workspace_id = workspace_id
        self.seq = seq
        self.type = type
        self.payload = payload
        self.must_deliver = must_deliver
        self._tail: bytes | None = None

    def encode_notification(self, subscription_id: str) -> bytes:
        """The whole `[2, "event", [envelope]]` notification for one subscriber."""
        tail = self._tail
        if tail is None:
            tail = self._tail = b"".join(
                [
                    _packed_str(self.workspace_id),
                    _SEQ_KEY,
                    _packb(self.seq),
                    _TYPE_KEY,
                    _packed_str(self.type),
                    _PAYLOAD_KEY,
                    _packb(self.payload),
                ]
            )
        return _NOTIFY_HEAD + _packed_str(subscription_id) + _WORKSPACE_KEY + tail

    def envelope(self, subscription_id: str) -> EventEnvelope:
        return EventEnvelope(subscription_id, self.workspace_id, self.seq, self.type, self.payload)

    def __repr__(self) -> str:
        return f"Event({self.workspace_id!r}, {self.seq}, {self.type!r})"
