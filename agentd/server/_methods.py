"""The method table: every RPC method, its params type, its handler and its reply type.

A handler decodes nothing and decides little: its params arrive structured,
it calls the workspace, the run index or the daemon's state, and returns one
typed reply (`agentd.protocol._results`). This is also the server's edge for
errors: the domain errors the layers below raise (`agentd.errors`) become wire
error codes here, in `_rpc_error`, and nowhere else.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import attrs
import trio

import agentd
from agentd.errors import AgentdError, Conflict, InvalidRequest, NotFound, ShuttingDown, TimedOut, Unavailable
from agentd.mcp import session_server
from agentd.models import PROJECT_CONFIG, read_project_config
from agentd.protocol import (
    AgentCancelParams,
    AgentSendParams,
    CancelResult,
    Empty,
    EventsSubscribeParams,
    EventsUnsubscribeParams,
    InitializeParams,
    InitializeResult,
    McpServerList,
    McpTrusted,
    Message,
    ModelsList,
    NoParams,
    PermissionGranted,
    PermissionGrantParams,
    PermissionRequest,
    QueueCleared,
    QueuedPrompt,
    RunChangeList,
    RunChangesParams,
    RunComplete,
    RunGetParams,
    RunInfo,
    RunReverted,
    RunRevertParams,
    RunWaitParams,
    SendResult,
    ServerShutdownParams,
    ServerStatus,
    Session,
    SessionCreateParams,
    SessionMcpServersParams,
    SessionRef,
    Subscribed,
    Workspace,
    WorkspaceInfo,
    WorkspaceOpenParams,
    WorkspaceRef,
    WorkspaceSessions,
    converter,
    structure_params,
)
from agentd.rpc import ErrorCode, RpcError, clip_middle
from agentd.workspaces import SessionOrder, Turn

if TYPE_CHECKING:
    from agentd.workspaces import WorkspaceHost

    from ._connection import ClientConnection
    from ._state import DaemonState

__all__ = ["Admitted", "Method", "Methods"]

AfterReply = list[Callable[[], None]]

_CODES: dict[type[AgentdError], int] = {
    InvalidRequest: ErrorCode.INVALID_PARAMS,
    NotFound: ErrorCode.NOT_FOUND,
    Conflict: ErrorCode.CONFLICT,
    ShuttingDown: ErrorCode.SHUTTING_DOWN,
    TimedOut: ErrorCode.TIMEOUT,
    Unavailable: ErrorCode.UNAVAILABLE,
}


def _mcp_counts(hosts: Iterable[WorkspaceHost]) -> dict[str, int]:
    counted: dict[str, int] = {}
    for host in hosts:
        if host.started:
            for state, count in host.mcp.counts().items():
                counted[state] = counted.get(state, 0) + count
    return counted


def _live_tasks() -> int:
    """Every trio task alive in this run, the root and trio's own system tasks included.

    Walked, not counted as tasks start and end: nothing can forget to count one.
    """
    root = trio.lowlevel.current_root_task()
    tasks = [root] if root is not None else []
    count = 0
    while tasks:
        task = tasks.pop()
        count += 1
        for nursery in task.child_nurseries:
            tasks.extend(nursery.child_tasks)
    return count


# An error message's length on the wire. Messages quote what the client sent (an id, a path) and a
# client decides how long that is: a 16 MiB workspace_id must not come back as a 16 MiB error.
ERROR_TEXT_LIMIT = 4000


def _rpc_error(exc: AgentdError) -> RpcError:
    """The one mapping from what went wrong to its wire code."""
    # A quoted value is in the middle of a message, why at its end: the middle goes.
    message = clip_middle(str(exc), ERROR_TEXT_LIMIT)
    for kind in type(exc).__mro__:
        code = _CODES.get(kind)
        if code is not None:
            return RpcError(code, message)
    return RpcError(ErrorCode.INTERNAL, message)


class Admitted:
    """A request read and checked, holding its place in its session's order until it runs."""

    __slots__ = ("params", "turn")

    def __init__(self, params: Any, turn: Turn | None) -> None:
        self.params = params
        self.turn = turn


class Method:
    """One method: its params type, its handler, its reply type, and whether it answers at once."""

    __slots__ = (
        "constant",
        "constant_reply",
        "kept",
        "params_type",
        "handler",
        "immediate",
        "result_type",
        "_order",
        "_unstructure",
    )

    def __init__(
        self,
        params_type: type,
        handler: Callable[..., Any],
        result_type: Any,
        immediate: bool,
        constant: bool = False,
        kept: bool = False,
    ) -> None:
        self.params_type = params_type
        #: Whether, once read, it takes effect even if its connection closes before the reply (`call`).
        self.kept = kept
        self.handler = handler
        self.result_type = result_type
        self.immediate = immediate
        # Looked up once: `converter.unstructure` would find it again for every reply.
        self._unstructure = converter.get_unstructure_hook(result_type)
        #: Whether the reply never changes; `constant_reply` is then its value on the wire.
        self.constant = constant
        self.constant_reply: Any = self._encode(handler(None, None, [])) if constant else None
        # Requests naming a session are applied in the order they were read.
        fields = attrs.fields_dict(params_type)
        self._order = not immediate and "session_id" in fields
        if self._order and "workspace_id" not in fields:
            raise TypeError(f"{params_type.__name__} names a session but not its workspace")

    def _encode(self, result: object) -> Any:
        return self._unstructure(result)

    def call_now(self, conn: ClientConnection, params: object, after_reply: AfterReply) -> Any:
        """Run an immediate method to its reply's value; RpcError for an error reply."""
        try:
            return self._encode(self.handler(conn, structure_params(params, self.params_type), after_reply))
        except AgentdError as exc:
            raise _rpc_error(exc) from None

    def admit(self, order: SessionOrder, params: object) -> Admitted:
        """Check a waiting method's params as it is read; RpcError for an error reply.

        Called synchronously, in the order requests arrive on the socket: that
        is where a request that touches a session takes its turn.
        """
        try:
            structured: Any = structure_params(params, self.params_type)
        except AgentdError as exc:
            raise _rpc_error(exc) from None
        turn = order.ticket(structured.workspace_id, structured.session_id) if self._order else None
        return Admitted(structured, turn)

    async def call(self, conn: ClientConnection, admitted: Admitted, after_reply: AfterReply) -> Any:
        """Run an admitted waiting method, in its turn, to its reply's value; RpcError for an error reply.

        A kept method (agent.cancel, agent.queue_clear) is shielded from its
        connection closing: a client that writes a cancel and hangs up at once
        has still cancelled (it may wait for its session's turn behind an
        agent.send). Bounded, so that it cannot hold up the connection's end,
        or a shutdown, for long; it changes nothing until its last step, which
        does not wait, so running out of time means it did nothing.
        """
        if not self.kept:
            return await self._call(admitted, conn, after_reply)
        with trio.CancelScope(shield=True, deadline=trio.current_time() + KEPT_TIMEOUT):
            return await self._call(admitted, conn, after_reply)
        raise RpcError(ErrorCode.UNAVAILABLE, f"it could not take effect within {KEPT_TIMEOUT:g} s, and did nothing")

    async def _call(self, admitted: Admitted, conn: ClientConnection, after_reply: AfterReply) -> Any:
        try:
            if admitted.turn is None:
                return self._encode(await self.handler(conn, admitted.params, after_reply))
            async with admitted.turn:
                return self._encode(await self.handler(conn, admitted.params, after_reply))
        except AgentdError as exc:
            raise _rpc_error(exc) from None


# How long a kept method may take once its connection has closed (see `Method.call`).
KEPT_TIMEOUT = 5.0

# What still works while the daemon shuts down: saying hello and watching it go.
_ALLOWED_WHILE_SHUTTING_DOWN = frozenset({"initialize", "ping", "server.status", "run.wait"})


class Methods:
    def __init__(self, state: DaemonState) -> None:
        self._state = state
        #: Where requests that touch a session take their turn (see `Method.admit`).
        self.order = SessionOrder()

        def now(params: type, handler: Callable[..., Any], result: Any) -> Method:
            """A handler that is a plain function: it never waits, so it is answered inline."""
            return Method(params, handler, result, immediate=True)

        def later(params: type, handler: Callable[..., Awaitable[Any]], result: Any) -> Method:
            """A coroutine handler: it may wait, so it gets a task of its own."""
            return Method(params, handler, result, immediate=False)

        def kept(params: type, handler: Callable[..., Awaitable[Any]], result: Any) -> Method:
            """A coroutine handler that takes effect once read, even if its connection closes (`Method.call`)."""
            return Method(params, handler, result, immediate=False, kept=True)

        def constant(params: type, reply: object, result: Any) -> Method:
            """A reply that never changes: the connection answers `[]` with it, packed once (`constant_replies`)."""
            return Method(params, lambda conn, p, after_reply: reply, result, immediate=True, constant=True)

        self._table: dict[str, Method] = {
            "initialize": now(InitializeParams, self.initialize, InitializeResult),
            "ping": constant(NoParams, _EMPTY, Empty),
            "server.status": now(NoParams, self.server_status, ServerStatus),
            "server.shutdown": now(ServerShutdownParams, self.server_shutdown, Empty),
            "models.list": now(NoParams, self.models_list, ModelsList),
            "workspace.open": later(WorkspaceOpenParams, self.workspace_open, Workspace),
            "workspace.close": now(WorkspaceRef, self.workspace_close, Empty),
            "workspace.list": now(NoParams, self.workspace_list, list[WorkspaceInfo]),
            "session.create": later(SessionCreateParams, self.session_create, Session),
            "session.list": later(WorkspaceRef, self.session_list, list[Session]),
            "session.list_all": later(NoParams, self.session_list_all, list[WorkspaceSessions]),
            "session.get": later(SessionRef, self.session_get, Session),
            "session.delete": later(SessionRef, self.session_delete, Session),
            "session.messages": later(SessionRef, self.session_messages, list[Message]),
            "agent.send": later(AgentSendParams, self.agent_send, SendResult),
            "agent.cancel": kept(AgentCancelParams, self.agent_cancel, CancelResult),
            "agent.queue": later(SessionRef, self.agent_queue, list[QueuedPrompt]),
            "agent.queue_clear": kept(SessionRef, self.agent_queue_clear, QueueCleared),
            "run.wait": later(RunWaitParams, self.run_wait, RunComplete),
            "run.get": later(RunGetParams, self.run_get, RunInfo),
            "events.subscribe": later(EventsSubscribeParams, self.events_subscribe, Subscribed),
            "events.unsubscribe": now(EventsUnsubscribeParams, self.events_unsubscribe, Empty),
            "permission.grant": now(PermissionGrantParams, self.permission_grant, PermissionGranted),
            "permission.list": now(WorkspaceRef, self.permission_list, list[PermissionRequest]),
            "run.changes": later(RunChangesParams, self.run_changes, RunChangeList),
            "run.revert": later(RunRevertParams, self.run_revert, RunReverted),
            "mcp.list": now(WorkspaceRef, self.mcp_list, McpServerList),
            "session.mcp_servers": later(SessionMcpServersParams, self.session_mcp_servers, Empty),
            "mcp.trust": later(WorkspaceRef, self.mcp_trust, McpTrusted),
        }
        #: The replies a connection sends by itself (see `RpcConnection`), bypassing `lookup`.
        self.constant_replies = {name: m.constant_reply for name, m in self._table.items() if m.constant}
        refused = set(self.constant_replies) - _ALLOWED_WHILE_SHUTTING_DOWN
        if refused:
            raise TypeError(f"constant replies bypass the shutdown check: {sorted(refused)} must be allowed then")

    def names(self) -> list[str]:
        return sorted(self._table)

    def method(self, name: str) -> Method:
        """The table's entry for `name` (KeyError if none): for docs and tests."""
        return self._table[name]

    def lookup(self, method: object) -> Method:
        """The method a request names; RpcError if there is none or it may not run now."""
        entry = self._table.get(method) if type(method) is str else None
        if entry is None:
            if type(method) is not str:
                raise RpcError(ErrorCode.UNKNOWN_METHOD, f"method must be a string, got {type(method).__name__}")
            shown = method if len(method) <= 100 else method[:97] + "..."
            raise RpcError(ErrorCode.UNKNOWN_METHOD, f"unknown method {shown!r}")
        if self._state.shutting_down and method not in _ALLOWED_WHILE_SHUTTING_DOWN:
            raise _rpc_error(ShuttingDown("agentd is shutting down"))
        return entry

    def _workspace(self, workspace_id: str) -> WorkspaceHost:
        return self._state.workspaces.get(workspace_id)

    # --- server

    def initialize(self, conn: ClientConnection, p: InitializeParams, _: AfterReply) -> InitializeResult:
        conn.client_name = p.client_name
        conn.client_version = p.client_version
        models = self._state.models.config
        return InitializeResult(
            server="agentd",
            version=agentd.__version__,
            protocol=agentd.PROTOCOL_VERSION,
            pid=os.getpid(),
            default_model=models.default_model,
            default_model_is_fallback=models.default_is_fallback,
            default_model_note=self._state.models.default_note(),
            config_mistakes=self._state.models.mistakes,
            max_message_size=self._state.config.max_message_size,
        )

    def models_list(self, conn: ClientConnection, p: NoParams, _: AfterReply) -> ModelsList:
        config = self._state.models.config
        return ModelsList(
            default=config.default_model,
            default_is_fallback=config.default_is_fallback,
            source=config.source,
            models=config.describe(),
            default_model_note=self._state.models.default_note(),
            config_mistakes=self._state.models.mistakes,
        )

    def server_status(self, conn: ClientConnection, p: NoParams, _: AfterReply) -> ServerStatus:
        s = self._state
        return ServerStatus(
            version=agentd.__version__,
            pid=os.getpid(),
            uptime_s=round(time.monotonic() - s.started_at, 3),
            workspaces=len(s.workspaces),
            clients=len(s.connections),
            subscriptions=sum(len(h.broker) for h in s.workspaces.hosts()),
            active_runs=s.runs.unfinished(),
            events_dropped=s.stats.events_dropped,
            tasks=_live_tasks(),
            socket_activated=s.socket_activated,
            idle_exit_s=s.idle_exit,
            mcp_servers=_mcp_counts(s.workspaces.hosts()),
        )

    def server_shutdown(self, conn: ClientConnection, p: ServerShutdownParams, after: AfterReply) -> Empty:
        s = self._state
        if p.if_idle:
            others = len(s.connections) - 1
            active = s.runs.unfinished()
            if active or others > 0:
                raise Conflict(f"not idle: {active} active run(s), {others} other client(s)")
        # Reply first: the shutdown closes this connection too.
        after.append(lambda: s.request_shutdown("server.shutdown"))
        return _EMPTY

    # --- workspaces

    async def workspace_open(self, conn: ClientConnection, p: WorkspaceOpenParams, _: AfterReply) -> Workspace:
        host = await self._state.workspaces.open(p.path, conn.id)
        conn.claims.add(host.id)
        return Workspace(id=host.id, path=host.path)

    def workspace_close(self, conn: ClientConnection, p: WorkspaceRef, _: AfterReply) -> Empty:
        if p.workspace_id not in conn.claims:
            raise NotFound(f"workspace_id: this connection has not opened workspace {p.workspace_id!r}")
        conn.claims.discard(p.workspace_id)
        self._state.workspaces.release(p.workspace_id, conn.id)
        return _EMPTY

    def workspace_list(self, conn: ClientConnection, p: NoParams, _: AfterReply) -> list[WorkspaceInfo]:
        return [
            WorkspaceInfo(id=h.id, path=h.path, clients=h.claim_count, active_runs=h.dispatcher.active_runs())
            for h in self._state.workspaces.hosts()
            if h.started and not h.closing
        ]

    # --- sessions

    async def session_create(self, conn: ClientConnection, p: SessionCreateParams, _: AfterReply) -> Session:
        return await self._workspace(p.workspace_id).sessions.create(p.title)

    async def session_list(self, conn: ClientConnection, p: WorkspaceRef, _: AfterReply) -> list[Session]:
        return await self._workspace(p.workspace_id).sessions.list_all()

    async def session_list_all(self, conn: ClientConnection, p: NoParams, _: AfterReply) -> list[WorkspaceSessions]:
        return await self._state.workspaces.all_sessions()

    async def session_get(self, conn: ClientConnection, p: SessionRef, _: AfterReply) -> Session:
        return await self._workspace(p.workspace_id).sessions.get(p.session_id)

    async def session_delete(self, conn: ClientConnection, p: SessionRef, _: AfterReply) -> Session:
        host = self._workspace(p.workspace_id)
        deleted = await host.sessions.delete(p.session_id)
        # Its own MCP servers go with it.
        host.mcp.set_session(deleted.id, [])
        return deleted

    async def session_messages(self, conn: ClientConnection, p: SessionRef, _: AfterReply) -> list[Message]:
        return await self._workspace(p.workspace_id).sessions.messages(p.session_id)

    # --- runs

    async def agent_send(self, conn: ClientConnection, p: AgentSendParams, _: AfterReply) -> SendResult:
        return await self._workspace(p.workspace_id).sessions.send(p.session_id, p.prompt, p.run_id, p.model, p.allow)

    async def agent_cancel(self, conn: ClientConnection, p: AgentCancelParams, _: AfterReply) -> CancelResult:
        return await self._workspace(p.workspace_id).sessions.cancel(p.session_id, p.run_id)

    async def agent_queue(self, conn: ClientConnection, p: SessionRef, _: AfterReply) -> list[QueuedPrompt]:
        return await self._workspace(p.workspace_id).sessions.queue(p.session_id)

    async def agent_queue_clear(self, conn: ClientConnection, p: SessionRef, _: AfterReply) -> QueueCleared:
        return await self._workspace(p.workspace_id).sessions.clear_queue(p.session_id)

    async def run_wait(self, conn: ClientConnection, p: RunWaitParams, _: AfterReply) -> RunComplete:
        return await self._state.runs.wait(p.run_id, p.timeout)

    async def run_get(self, conn: ClientConnection, p: RunGetParams, _: AfterReply) -> RunInfo:
        return await self._state.runs.info(p.run_id)

    # --- events

    async def events_subscribe(self, conn: ClientConnection, p: EventsSubscribeParams, after: AfterReply) -> Subscribed:
        if p.since is not None and p.since < 0:
            raise InvalidRequest("since: must be >= 0")
        host = self._workspace(p.workspace_id)
        sid = f"sub_{uuid.uuid4().hex[:16]}"

        def overflow(_sub: object) -> None:
            conn.disconnect(f"subscription {sid} did not take a must-deliver event in time")

        sub, replay, through = await host.subscribe(sid, self._state.config.subscriber_capacity, overflow, p.since)
        conn.subscriptions[sid] = sub
        # Events queue from now on; the replay, then they, go out once the reply
        # has, so a client never sees an event for a subscription it has not heard of.
        after.append(lambda: conn.start_writer(sub, replay))
        return Subscribed(subscription_id=sid, seq=through, replayed=len(replay))

    def events_unsubscribe(self, conn: ClientConnection, p: EventsUnsubscribeParams, _: AfterReply) -> Empty:
        sub = conn.subscriptions.pop(p.subscription_id, None)
        if sub is None:
            raise NotFound(f"subscription_id: no such subscription {p.subscription_id!r}")
        sub.close()
        return _EMPTY

    # --- permissions

    def permission_grant(self, conn: ClientConnection, p: PermissionGrantParams, _: AfterReply) -> PermissionGranted:
        by = conn.client_name or f"conn-{conn.id}"
        return PermissionGranted(resolved=self._workspace(p.workspace_id).permissions.grant(p.request_id, p.action, by))

    def permission_list(self, conn: ClientConnection, p: WorkspaceRef, _: AfterReply) -> list[PermissionRequest]:
        return self._workspace(p.workspace_id).permissions.pending()

    # --- MCP servers

    def mcp_list(self, conn: ClientConnection, p: WorkspaceRef, _: AfterReply) -> McpServerList:
        host = self._workspace(p.workspace_id)
        project, trusted = host.project_config
        return McpServerList(
            servers=host.mcp.views(),
            project_config=project.path if project is not None else None,
            project_trusted=trusted,
            project_mistakes=list(project.mistakes) if project is not None else [],
        )

    async def session_mcp_servers(self, conn: ClientConnection, p: SessionMcpServersParams, _: AfterReply) -> Empty:
        host = self._workspace(p.workspace_id)
        await host.sessions.get(p.session_id)  # NotFound for a session this workspace does not have
        servers = []
        names: set[str] = set()
        for index, spec in enumerate(p.servers):
            try:
                server = session_server(
                    spec.name,
                    p.session_id,
                    command=spec.command,
                    env=spec.env,
                    url=spec.url,
                    headers=spec.headers,
                )
            except ValueError as exc:
                raise InvalidRequest(f"servers[{index}]: {exc}") from None
            if server.name in names:
                raise InvalidRequest(f"servers[{index}]: the name {server.name!r} is given twice")
            names.add(server.name)
            servers.append(server)
        host.mcp.set_session(p.session_id, servers)
        return _EMPTY

    # --- file changes

    async def _changed_run(self, p: RunChangesParams | RunRevertParams) -> str:
        if p.run_id is None and p.workspace_id is not None:
            self._workspace(p.workspace_id)  # a session's last run: of an open workspace, as for other methods
        return await self._state.changes.pick_run(p.run_id, p.workspace_id, p.session_id)

    async def run_changes(self, conn: ClientConnection, p: RunChangesParams, _: AfterReply) -> RunChangeList:
        return await self._state.changes.list(await self._changed_run(p))

    async def run_revert(self, conn: ClientConnection, p: RunRevertParams, _: AfterReply) -> RunReverted:
        return await self._state.changes.revert(await self._changed_run(p), p.force)

    # --- MCP servers

    async def mcp_trust(self, conn: ClientConnection, p: WorkspaceRef, _: AfterReply) -> McpTrusted:
        host = self._workspace(p.workspace_id)
        project = await read_project_config(host.path)
        if project is None:
            raise NotFound(f"workspace {host.path} has no {PROJECT_CONFIG}: there is nothing to trust")
        if project.mistakes:
            # Trust is given to content that was checked: a file with mistakes starts no server.
            mistakes = "".join(f"\n{mistake}" for mistake in project.mistakes)
            raise InvalidRequest(
                f"{project.path} has mistakes, so it is not trusted (fix them, then trust it again):{mistakes}"
            )
        # Exactly the bytes checked above: a change after this is untrusted again.
        await self._state.store.trust_mcp(project.path, project.digest)
        await host.refresh_mcp(force=True)
        return McpTrusted(path=project.path, servers=[server.name for server in project.servers])


_EMPTY = Empty()
