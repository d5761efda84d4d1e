"""A live workspace: its nursery of runs, its broker, its claims, its idle close.

The workspace, not the request or the connection that started a run, owns the
run: runs are tasks in the workspace's nursery, and that nursery only exits
once every run in it has published its RunComplete.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable

import trio

from agentd.agent import Coordinator
from agentd.mcp._servers import WorkspaceMcp
from agentd.models import PROJECT_CONFIG, ModelRegistry, ProjectConfig, read_project_config
from agentd.permissions import Permissions
from agentd.protocol import ReplayGapPayload, WorkspaceClosed, events, unstructure
from agentd.pubsub import Broker, DropStats, Event, Subscriber
from agentd.runs import Dispatcher, RunIndex, RunTerminal, describe_error
from agentd.shutdown import Shutdown
from agentd.store import GAP_LOST, GAP_TOO_OLD, Store

from ._journal import LOGGED_EVENTS, EventJournal
from ._sessions import SessionRequests

__all__ = ["WorkspaceHost"]

log = logging.getLogger(__name__)

# Event seqs are reserved in the store this many at a time, ahead of use.
SEQ_BLOCK = 100_000


class WorkspaceHost:
    def __init__(
        self,
        workspace_id: str,
        path: str,
        *,
        store: Store,
        models: ModelRegistry,
        stats: DropStats,
        must_deliver_timeout: float,
        idle_grace: float,
        runs: RunIndex,
        shutdown: Shutdown,
    ) -> None:
        self.id = workspace_id
        self.path = path
        self.journal = EventJournal(workspace_id, store)
        self._seq_low = trio.Event()
        self.broker = Broker(
            workspace_id,
            stats,
            must_deliver_timeout,
            logged_types=LOGGED_EVENTS,
            on_logged=self.journal.record,
            on_seq_low=self._seq_low.set,
            shutdown=shutdown,
        )
        self._shutdown = shutdown
        self._store = store
        self._models = models
        self._idle_grace = idle_grace
        self._runs = runs
        self._claims: set[int] = set()
        self._idle_scope: trio.CancelScope | None = None
        self._close_requested = trio.Event()
        self._close_reason = ""
        # Set when the workspace closes because something in it failed.
        self._failure: str | None = None
        self._dispatcher: Dispatcher | None = None
        self._sessions: SessionRequests | None = None
        self._permissions: Permissions | None = None
        self._nursery: trio.Nursery | None = None
        self._mcp: WorkspaceMcp | None = None
        # The project's .agentd/config.toml as last read, and whether that content is trusted.
        self._project: ProjectConfig | None = None
        self._project_stamp: tuple[int, int, int] | None = None
        self._project_trusted = False
        self.closing = False
        # Set just before workspace.closed goes out: a client that has seen it
        # must find the workspace gone, not "closing".
        self.ended = False
        self.closed = trio.Event()

    @property
    def started(self) -> bool:
        """Serving: past opening its event log. Until then it is in the table but takes no requests."""
        return self._dispatcher is not None

    @property
    def dispatcher(self) -> Dispatcher:
        assert self._dispatcher is not None, "workspace not serving"
        return self._dispatcher

    @property
    def permissions(self) -> Permissions:
        """The workspace's permission requests, and what its runs may do without asking."""
        assert self._permissions is not None, "workspace not serving"
        return self._permissions

    @property
    def mcp(self) -> WorkspaceMcp:
        """The workspace's MCP servers."""
        assert self._mcp is not None, "workspace not serving"
        return self._mcp

    @property
    def project_config(self) -> tuple[ProjectConfig | None, bool]:
        """The project's .agentd/config.toml as last read (None: it has none), and whether it is trusted."""
        return self._project, self._project_trusted

    async def refresh_mcp(self, *, force: bool = False) -> None:
        """Start and stop servers for what the configuration and the project's file say now.

        The project's file is read again only when its stat changed (or
        `force`: it was just trusted); its servers start only when its present
        content is trusted. The sessions' own servers stay as they are.
        """
        mcp = self.mcp
        stamp = _stat(os.path.join(self.path, PROJECT_CONFIG))
        if force or stamp != self._project_stamp:
            self._project_stamp = stamp
            self._project = None if stamp is None else await read_project_config(self.path)
            project = self._project
            self._project_trusted = (
                project is not None
                and not project.mistakes
                and project.is_trusted(await self._store.mcp_trusted_digest(project.path))
            )
        project = self._project
        from_project = project.servers if project is not None else ()
        servers = [*self._models.config.mcp, *(from_project if self._project_trusted else ())]
        mcp.configure([*servers, *mcp.configured("session")], () if self._project_trusted else from_project)

    @property
    def sessions(self) -> SessionRequests:
        """What clients ask of this workspace's sessions."""
        assert self._sessions is not None, "workspace not serving"
        return self._sessions

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The workspace's life: from open until its last run has completed.

        The failure boundary of one workspace: whatever fails inside it closes
        it — its runs get their RunCompletes, its subscribers `workspace.closed`
        with the reason — and never the daemon. Only a failure to open at all
        reaches the caller, as the opener's error.
        """
        serving = False
        try:
            # Seqs go on from above everything this workspace may ever have handed out.
            first = await self._store.open_event_log(self.id, SEQ_BLOCK)
            self.broker.resume(first - 1)
            self.broker.reserved(low_at=first - 1 + SEQ_BLOCK // 2)
            try:
                async with trio.open_nursery() as nursery:
                    guarded = self._guarded
                    nursery.start_soon(guarded, "reserving event numbers", self._reserve_seqs)
                    nursery.start_soon(guarded, "writing the event log", self.journal.run)
                    terminal = RunTerminal(self.broker, self._store, self._runs.forget, self._shutdown)
                    nursery.start_soon(guarded, "recording run ends", terminal.keep_recording)
                    # Its servers are tasks in here, so they stop only after the last run ended.
                    self._mcp = WorkspaceMcp(self.id, self.path, self.broker)
                    await nursery.start(self._mcp.serve)
                    await self.refresh_mcp()
                    # Its requests wait in the runs' own tasks: nothing of it runs in this nursery.
                    self._permissions = Permissions(
                        self.broker, self._shutdown, lambda: self._models.config.permissions
                    )
                    coordinator = Coordinator(
                        self.path,
                        self._store,
                        self._models,
                        self.broker,
                        terminal,
                        self._permissions,
                        self._mcp,
                        self.refresh_mcp,
                    )
                    self._nursery = nursery
                    self._dispatcher = Dispatcher(
                        nursery, coordinator, terminal, self.broker, self.publish_session_state
                    )
                    self._sessions = SessionRequests(
                        self.id,
                        self._store,
                        self.broker,
                        self._dispatcher,
                        self._runs,
                        self._models,
                        self.publish_session_state,
                    )
                    serving = True
                    task_status.started()
                    await self._close_requested.wait()
                    log.info("closing workspace %s (%s)", self.id, self._close_reason)
                    self._dispatcher.close(error=self._failure)
                    # The runs are being cancelled; their questions end as "cancelled" with them.
                    self._permissions.close()
                    if self._idle_scope is not None:
                        self._idle_scope.cancel()
                    await self._dispatcher.wait_idle()
                    with terminal.shielded():
                        # One last try for RunCompletes the store refused, before the workspace goes.
                        await terminal.record_unrecorded()
                    # Every run has its RunComplete: the background tasks can go.
                    nursery.cancel_scope.cancel()
            except Exception as exc:
                if not serving:
                    raise
                # A bug, not a failure _guarded foresaw: the runs were cancelled
                # by the nursery on the way out (each published its RunComplete,
                # shielded); the workspace ends here, and says why.
                log.exception("workspace %s failed; closing it", self.id)
                self._failure = self._failure or describe_error(exc)
                self._close_reason = "failed"
            self.ended = True
            with self._shutdown.shielded(self.broker.must_deliver_timeout + 1):
                await self.broker.publish_must_deliver(
                    events.WORKSPACE_CLOSED,
                    unstructure(WorkspaceClosed(self.id, self._close_reason, self._failure)),
                )
                await self.journal.flush(final=True)
        finally:
            self.closing = True
            self.broker.close()
            self.closed.set()

    async def _guarded(self, what: str, task: Callable[[], Awaitable[None]]) -> None:
        """Run one of the workspace's own background tasks; its failure closes the workspace."""
        try:
            await task()
        except Exception as exc:
            log.exception("workspace %s: %s failed; closing it", self.id, what)
            self.fail(f"{what} failed: {describe_error(exc)}")

    def fail(self, error: str) -> None:
        """Close the workspace because something in it broke: its runs end errored with `error`."""
        if self._failure is None and not self._close_requested.is_set():
            self._failure = f"the workspace failed: {error}"
            self.request_close("failed")

    async def _reserve_seqs(self) -> None:
        while True:
            await self._seq_low.wait()
            self._seq_low = trio.Event()
            self.broker.set_on_seq_low(self._seq_low.set)
            first = await self._store.reserve_seqs(self.id, SEQ_BLOCK)
            self.broker.reserved(low_at=first - 1 + SEQ_BLOCK // 2)

    async def subscribe(
        self, subscription_id: str, capacity: int, on_overflow: Callable[[Subscriber], None], since: int | None
    ) -> tuple[Subscriber, list[Event], int]:
        """Subscribe, and with `since`, what to replay first: (subscriber, replay, through).

        The subscriber takes live events from `through + 1` on, and the replay
        stops at `through`: no gap and no duplicate at the seam. A replay that
        may lack events (pruned, or never written) starts with `events.gap
        {reason}`: the client must reload rather than trust it. The pending
        permission requests the replay lacks come after it, with their own seqs.
        """
        sub = self.broker.subscribe(subscription_id, capacity, on_overflow)
        through = self.broker.seq
        # Requests still waiting for an answer are state: a client that comes
        # now gets them after its replay, those after `through` it gets live.
        waiting = self.permissions.pending_events(through)
        if since is None:
            return sub, waiting, through
        if since > through:
            # Seqs this workspace never published: the client's state is not ours.
            return sub, [self._replay_gap(since, GAP_TOO_OLD)], through
        # Both read before the store: a flush that lands meanwhile is in what the store returns.
        unwritten = self.journal.unwritten(since, through)
        lost_unwritten = since < self.journal.lost_through
        try:
            logged = await self._store.events_after(self.id, since, through)
        except BaseException:
            sub.close()
            raise
        replay = {e.seq: Event(self.id, e.seq, e.type, e.payload) for e in logged.events}
        for event in unwritten:
            replay.setdefault(event.seq, event)
        events_in_order = [replay[seq] for seq in sorted(replay)]
        gap = logged.gap or (GAP_LOST if lost_unwritten else None)
        if gap is not None:
            events_in_order.insert(0, self._replay_gap(since, gap))
        events_in_order += [event for event in waiting if event.seq not in replay]
        return sub, events_in_order, through

    def _replay_gap(self, since: int, reason: str) -> Event:
        return Event(self.id, since, events.EVENTS_GAP, unstructure(ReplayGapPayload(reason)))

    def request_close(self, reason: str) -> None:
        if not self._close_requested.is_set():
            # Closing from this moment: nobody may claim it or start work in it
            # in the tick before serve() wakes up to close it.
            self.closing = True
            self._close_reason = reason
            self._close_requested.set()

    # --- claims: who keeps the workspace open

    def claim(self, client_id: int) -> None:
        self._claims.add(client_id)
        if self._idle_scope is not None:
            self._idle_scope.cancel()
            self._idle_scope = None

    def release(self, client_id: int) -> None:
        if client_id not in self._claims:
            return
        self._claims.discard(client_id)
        if not self._claims and not self.closing and self._nursery is not None:
            self._idle_scope = trio.CancelScope()
            self._nursery.start_soon(self._close_when_idle, self._idle_scope)

    @property
    def claim_count(self) -> int:
        return len(self._claims)

    async def _close_when_idle(self, scope: trio.CancelScope) -> None:
        # A run holds its workspace open until it ends: the client that started
        # it may be gone (a closed terminal, `agentctl run --detach`), and the
        # grace starts again after the last run, for `agentctl attach` to find it.
        with scope:
            await trio.sleep(self._idle_grace)
            while self.dispatcher.active_runs():
                await self.dispatcher.wait_idle()
                await trio.sleep(self._idle_grace)
            if not self._claims:
                self.request_close("idle")

    # --- sessions, as clients see them

    async def publish_session_state(self, session_id: str) -> None:
        record = await self._store.get_session(self.id, session_id)
        if record is not None:
            self.broker.publish(events.SESSION_UPDATED, unstructure(self.sessions.view(record)))


def _stat(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)
