"""The daemon's whole life, top-down, in one place.

    serve()
    └── root nursery
        ├── signal watcher: SIGTERM/SIGINT → shutdown (a second one: exit now);
        │   SIGHUP → read the configuration file again
        ├── model warm-up: each configured provider's HTTP client, built once, off the first prompt's path
        ├── under systemd: STATUS= when the summary changes, WATCHDOG=1 at half of WATCHDOG_USEC
        │   (from this loop, so a wedged loop stops the pings)
        ├── idle exit (socket-activated, or --idle-exit): shutdown after that long with no
        │   workspace, no run and no new connection
        ├── workspaces nursery: one task per open workspace
        │   └── workspace nursery: one task per session lane; runs are cancel scopes in it
        │       (a permission request waits in its run's task, its timeout a cancel scope there);
        │       the event journal, the seq reserver, the run-end recorder; and
        │       └── MCP nursery: one task per MCP server, in its own cancel scope (stopped
        │           when the configuration drops it); each holds its process (group) or its
        │           HTTP client, and kills the group on the way out, shielded and bounded.
        │           Cancelled with the workspace's background tasks, after its last run ended
        └── connections nursery: the accept loop, then one task per client
            └── connection nursery: reader, one task per request, one writer per subscription

Shutdown (SIGTERM, SIGINT, `server.shutdown`, idle exit): tell systemd STOPPING=1, stop accepting, refuse new work,
cancel every run and wait for each one's RunComplete (a stuck subscriber is
waited for `shutdown_delivery_timeout`, not the full must-deliver timeout), stop
each workspace's MCP servers (stdin closed, then SIGTERM, then SIGKILL to the
group, about 3 s at most), let the subscription writers flush, then close
every connection. Each step is
bounded, so the daemon exits within seconds.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
from collections.abc import Callable

import trio

from agentd.models import ConfigFile, ModelRegistry
from agentd.pubsub import DropStats
from agentd.rpc import InputBudget
from agentd.runs import RunIndex
from agentd.store import Store, StoreError
from agentd.workspaces import Workspaces

from ._activation import adopt_activated_listener
from ._connection import ClientConnection
from ._listener import SocketClaim, StartupError, bind_listener
from ._methods import Methods
from ._notify import Notifier, watchdog_interval
from ._peers import PeerGate
from ._state import DaemonConfig, DaemonState

__all__ = ["serve"]

log = logging.getLogger("agentd")

# Closing the model clients and the store, after everything else: bounded,
# though both only wait on a socket close or the store's last statement.
_CLOSE_TIMEOUT = 5.0
# A socket-activated daemon with nothing to do exits after this long (`--idle-exit`);
# systemd starts it again on the next connection.
DEFAULT_IDLE_EXIT = 600.0


async def serve(config: DaemonConfig) -> None:
    # Mistakes in it do not stop the start: they are logged, and the built-in models still run.
    model_config = ConfigFile(default_model=config.default_model)
    notifier = Notifier.from_environment()
    listener = adopt_activated_listener()
    claim: SocketClaim | None = None
    if listener is None:
        listener, claim = await bind_listener(config.socket_path)
    try:
        try:
            store = await Store.open(os.path.join(config.data_dir, "agentd.db"), own_folder=config.owns_data_dir)
        except StoreError as exc:
            raise StartupError(str(exc)) from None
        if store.recovered:
            log.warning("finished %d run(s) a crash had left unfinished, as interrupted", len(store.recovered))
        models = ModelRegistry(model_config)
        try:
            await _serve(config, listener, store, models, notifier, activated=claim is None)
        finally:
            with trio.move_on_after(_CLOSE_TIMEOUT, shield=True) as closing:
                await models.aclose()
                await store.aclose()
            if closing.cancelled_caught:
                log.error("closing the model clients and the store took over %.0fs", _CLOSE_TIMEOUT)
    finally:
        # An adopted socket is systemd's: never unlinked, so the next connection starts us again.
        if claim is not None:
            claim.release()
        notifier.close()


async def _serve(
    config: DaemonConfig,
    listener: trio.SocketListener,
    store: Store,
    models: ModelRegistry,
    notifier: Notifier,
    *,
    activated: bool,
) -> None:
    shutdown_requested = trio.Event()
    shutdown_reason = ["signal"]

    def request_shutdown(reason: str) -> None:
        if not shutdown_requested.is_set():
            shutdown_reason[0] = reason
            shutdown_requested.set()

    state = DaemonState(
        config=config,
        store=store,
        models=models,
        runs=RunIndex(store),
        stats=DropStats(),
        request_shutdown=request_shutdown,
        socket_activated=activated,
        idle_exit=_idle_exit(config, activated),
    )
    methods = Methods(state)
    client_ids = itertools.count(1)
    input_budget = InputBudget.for_message_size(config.max_message_size)

    async def on_connection_closed(conn: ClientConnection) -> None:
        state.connections.pop(conn.id, None)
        for workspace_id in conn.claims:
            state.workspaces.release(workspace_id, conn.id)
        conn.claims.clear()
        conn.close_subscriptions()

    peers = PeerGate(allow_root=config.allow_root)

    async def handle_client(stream: trio.SocketStream) -> None:
        if not peers.admits(stream):
            await stream.aclose()  # before a byte is read from it or written to it
            return
        conn = ClientConnection(
            next(client_ids), stream, methods, max_message_size=config.max_message_size, input_budget=input_budget
        )
        state.connections[conn.id] = conn
        state.last_connection_at = trio.current_time()
        await conn.serve(on_connection_closed)

    async with trio.open_nursery() as root:
        # Started, not only scheduled: a SIGTERM right after "ready" must find the receiver in place.
        await root.start(_watch_signals, request_shutdown, models.reload_config, root.cancel_scope)
        root.start_soon(models.prepare)
        watchdog = watchdog_interval()
        if notifier.enabled and watchdog is not None:
            root.start_soon(notifier.keep_watchdog, watchdog)
        if state.idle_exit is not None:
            root.start_soon(_exit_when_idle, state)
        async with trio.open_nursery() as workspaces_nursery:
            state.workspaces = Workspaces(
                workspaces_nursery,
                store,
                state.models,
                state.stats,
                must_deliver_timeout=config.must_deliver_timeout,
                idle_grace=config.idle_grace,
                runs=state.runs,
                shutdown=state.shutdown,
            )
            async with trio.open_nursery() as connections:
                accept_scope = trio.CancelScope()

                async def accept_loop() -> None:
                    with accept_scope:
                        await trio.serve_listeners(handle_client, [listener], handler_nursery=connections)

                connections.start_soon(accept_loop)
                _announce_ready(config)
                notifier.send("READY=1")
                if notifier.enabled:
                    root.start_soon(notifier.keep_status, lambda: _summary(state))
                log.info(
                    "agentd %d listening on %s%s",
                    os.getpid(),
                    _listening_on(listener, config),
                    " (socket-activated)" if activated else "",
                )

                await shutdown_requested.wait()
                log.info("shutting down (%s)", shutdown_reason[0])
                state.shutting_down = True
                notifier.send("STOPPING=1")
                notifier.status(_summary(state))
                # The one deadline: every run's end, its delivery and the writers'
                # flush happen before it, and every shielded cleanup is held to it.
                deadline = state.shutdown.begin()
                accept_scope.cancel()
                await listener.aclose()
                with trio.move_on_at(deadline) as scope:
                    await state.workspaces.close_all("shutdown")
                    for conn in list(state.connections.values()):
                        await conn.wait_writers_drained()
                if scope.cancelled_caught:
                    log.error("shutdown did not finish within %.1fs; closing what is left", config.graceful_timeout)
                connections.cancel_scope.cancel()
            workspaces_nursery.cancel_scope.cancel()
        root.cancel_scope.cancel()
    log.info("agentd %d stopped", os.getpid())


def _idle_exit(config: DaemonConfig, activated: bool) -> float | None:
    """Seconds of idleness before exiting, or None for never (`--idle-exit 0`, or not activated by default)."""
    seconds = config.idle_exit if config.idle_exit is not None else (DEFAULT_IDLE_EXIT if activated else 0.0)
    return seconds if seconds > 0 else None


def _summary(state: DaemonState) -> str:
    """systemctl status's one line about us."""
    if state.shutting_down:
        return "stopping"
    workspaces, runs = len(state.workspaces), state.runs.unfinished()
    return (
        f"serving; {workspaces} workspace{'' if workspaces == 1 else 's'}, {runs} run{'' if runs == 1 else 's'},"
        f" {len(state.connections)} client{'' if len(state.connections) == 1 else 's'}"
    )


def _listening_on(listener: trio.SocketListener, config: DaemonConfig) -> str:
    try:
        name = listener.socket.getsockname()
    except OSError:
        name = None
    return name if isinstance(name, str) and name else str(config.socket_path)


async def _exit_when_idle(state: DaemonState) -> None:
    """Shut down once no workspace was open, no run unfinished and no client connected for `idle_exit` seconds.

    A client that stays connected without a workspace does not keep the daemon
    alive for ever (an idle `agentctl attach` elsewhere would); its connecting
    restarts the clock, so a command that has just connected is not cut off.
    """
    assert state.idle_exit is not None
    idle_exit = state.idle_exit
    idle_since = trio.current_time()
    while True:
        now = trio.current_time()
        if len(state.workspaces) or state.runs.unfinished():
            idle_since = now
        idle_since = max(idle_since, state.last_connection_at)
        left = idle_since + idle_exit - now
        if left <= 0:
            log.info("idle for %gs with no workspace and no run: exiting", idle_exit)
            state.request_shutdown("idle")
            return
        await trio.sleep(min(left, 1.0))


def _announce_ready(config: DaemonConfig) -> None:
    """Tell whoever started us that the socket accepts connections."""
    if config.ready_fd is None:
        return
    try:
        os.write(config.ready_fd, b"ready\n")
        os.close(config.ready_fd)
    except OSError as exc:
        log.warning("could not signal readiness on fd %d: %s", config.ready_fd, exc)


async def _watch_signals(
    request_shutdown: Callable[[str], None],
    reload_config: Callable[[], None],
    root_scope: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    # SIGHUP's default action would kill the daemon like a crash; "read your
    # configuration again" is what a daemon is expected to make of it.
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        task_status.started()
        seen = 0
        async for signum in signals:
            if signum == signal.SIGHUP:
                log.info("SIGHUP: reading the configuration again")
                reload_config()
                continue
            seen += 1
            if seen == 1:
                request_shutdown(signal.Signals(signum).name)
            else:
                log.warning("second %s: exiting without waiting", signal.Signals(signum).name)
                root_scope.cancel()
