"""Event fan-out for workspaces (see `_broker`)."""

from ._broker import (
    DEFAULT_MUST_DELIVER_TIMEOUT,
    DEFAULT_SUBSCRIBER_CAPACITY,
    Broker,
    DropStats,
    Event,
    Subscriber,
)
from ._queue import MAX_COALESCED_TEXT, EventQueue

__all__ = [
    "DEFAULT_MUST_DELIVER_TIMEOUT",
    "DEFAULT_SUBSCRIBER_CAPACITY",
    "MAX_COALESCED_TEXT",
    "Broker",
    "DropStats",
    "Event",
    "EventQueue",
    "Subscriber",
]
