"""One published event, and its msgpack-RPC notification, encoded once for every subscriber."""

from __future__ import annotations

import functools
from typing import Any, Final

from agentd._packing import packb as _packb

__all__ = ["Event"]

# `[2, "event", [{subscription_id: ..., <tail>}]]`: everything but the subscription id
# is the same for every subscriber, so it is encoded once per event.
_NOTIFY_HEAD: Final = b"\x93\x02" + _packb("event") + b"\x91\x85" + _packb("subscription_id")
_WORKSPACE_KEY: Final = _packb("workspace_id")
_SEQ_KEY: Final = _packb("seq")
_TYPE_KEY: Final = _packb("type")
_PAYLOAD_KEY: Final = _packb("payload")


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

    def envelope(self, subscription_id: str) -> dict[str, Any]:
        return {
            "subscription_id": subscription_id,
            "workspace_id": self.workspace_id,
            "seq": self.seq,
            "type": self.type,
            "payload": self.payload,
        }

    def __repr__(self) -> str:
        return f"Event({self.workspace_id!r}, {self.seq}, {self.type!r})"
