"""What the daemon knows while it serves: configuration, live objects, counters."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from agentd.changes import ChangeRequests
from agentd.models import ModelRegistry
from agentd.pubsub import DEFAULT_MUST_DELIVER_TIMEOUT, DEFAULT_SUBSCRIBER_CAPACITY, DropStats
from agentd.rpc import DEFAULT_MAX_MESSAGE_SIZE
from agentd.runs import RunIndex
from agentd.shutdown import DEFAULT_GRACEFUL_TIMEOUT, DEFAULT_SHUTDOWN_DELIVERY_TIMEOUT, Shutdown
from agentd.store import Store

if TYPE_CHECKING:
    from agentd.workspaces import Workspaces

    from ._connection import ClientConnection

__all__ = ["DaemonConfig", "DaemonState"]


@attrs.frozen
class DaemonConfig:
    socket_path: Path
    data_dir: str
    must_deliver_timeout: float = DEFAULT_MUST_DELIVER_TIMEOUT
    idle_grace: float = 30.0
    subscriber_capacity: int = DEFAULT_SUBSCRIBER_CAPACITY
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    # At shutdown a stuck subscriber may hold up exit this long per event, not
    # the full must-deliver timeout: SIGTERM must end the daemon in seconds.
    shutdown_delivery_timeout: float = DEFAULT_SHUTDOWN_DELIVERY_TIMEOUT
    # From the shutdown signal to closing every connection, at most.
    graceful_timeout: float = DEFAULT_GRACEFUL_TIMEOUT
    ready_fd: int | None = None
    default_model: str | None = None  # `agentd --model`: over AGENTD_MODEL and the configuration's default
    # `agentd --idle-exit`: None is the default (600 s when socket-activated, else never), 0 never.
    idle_exit: float | None = None
    # Whether data_dir is agentd's own (the default), whose mode it fixes, or one the user named.
    owns_data_dir: bool = True
    allow_root: bool = False  # `agentd --allow-root`: serve root's connections too, not only our own user's


@attrs.define
class DaemonState:
    config: DaemonConfig
    store: Store
    models: ModelRegistry
    runs: RunIndex
    stats: DropStats
    request_shutdown: Callable[[str], None]
    workspaces: Workspaces = attrs.field(init=False)
    connections: dict[int, ClientConnection] = attrs.field(factory=dict)
    shutdown: Shutdown = attrs.field(
        default=attrs.Factory(
            lambda self: Shutdown(self.config.graceful_timeout, self.config.shutdown_delivery_timeout), takes_self=True
        )
    )
    started_at: float = attrs.field(factory=time.monotonic)
    shutting_down: bool = False
    # Handed its socket by systemd (which owns the socket file and starts us again).
    socket_activated: bool = False
    # Seconds of idleness before exiting, None for never (see `_serve._exit_when_idle`).
    idle_exit: float | None = None
    # trio time of the last accepted connection: restarts the idle clock.
    last_connection_at: float = 0.0
    # run.changes and run.revert.
    changes: ChangeRequests = attrs.field(
        default=attrs.Factory(lambda self: ChangeRequests(self.store, self.runs), takes_self=True)
    )
