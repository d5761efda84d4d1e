"""Event fan-out for workspaces (see `_broker`)."""

from ._broker import (
    DEFAULT_MUST_DELIVER_TIMEOUT,
    DEFAULT_SUBSCRIBER_CAPACITY,
    Broker,
    DropStats,
    Event,
    Subscriber,
)

__all__ = [
    "DEFAULT_MUST_DELIVER_TIMEOUT",
    "DEFAULT_SUBSCRIBER_CAPACITY",
    "Broker",
    "DropStats",
    "Event",
    "Subscriber",
]
