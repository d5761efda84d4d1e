"""The method table: every RPC method, its params type, and what it does."""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs
import trio

import agentd
from agentd.models import UnknownModelError
from agentd.protocol import (
    AgentCancelParams,
    AgentSendParams,
    EventsSubscribeParams,
    EventsUnsubscribeParams,
    InitializeParams,
    NoParams,
    RunComplete,
    RunGetParams,
    RunWaitParams,
    ServerShutdownParams,
    Session,
    SessionCreateParams,
    SessionRef,
    WorkspaceOpenParams,
    WorkspaceRef,
    events,
    structure_params,
    unstructure,
)
from agentd.pubsub import Event
from agentd.rpc import ErrorCode, RpcError
from agentd.runs import Closing, Run
from agentd.store import RunRecord
from agentd.workspaces import SessionOrder, Turn

if TYPE_CHECKING:
    from ._connection import ClientConnection
    from ._state import DaemonState

__all__ = ["Admitted", "Method", "Methods"]

AfterReply = list[Callable[[], None]]


class Admitted:
    """A request read and checked, holding its place in its session's order until it runs."""

    __slots__ = ("params", "turn")

    def __init__(self, params: Any, turn: Turn | None) -> None:
        self.params = params
        self.turn = turn


class Method:
    """One method: its params type, its handler, and whether the handler returns at once."""

    __slots__ = ("params_type", "handler", "immediate", "_order")

    def __init__(self, params_type: type, handler: Callable[..., Any], immediate: bool) -> None:
        self.params_type = params_type
        self.handler = handler
        self.immediate = immediate
        # Requests naming a session are applied in the order they were read.
        self._order = immediate is False and "session_id" in attrs.fields_dict(params_type)
        if self._order and not ("workspace_id" in attrs.fields_dict(params_type)):
            raise TypeError(f"{params_type.__name__} names a session but not its workspace")

    def call_now(self, conn: ClientConnection, params: object, after_reply: AfterReply) -> Any:
        """Run an immediate method; RpcError for an error reply."""
        return self.handler(conn, structure_params(params, self.params_type), after_reply)

    def admit(self, order: SessionOrder, params: object) -> Admitted:
        """Check a waiting method's params as it is read; RpcError for an error reply.

        Called synchronously, in the order requests arrive on the socket: that
        is where a request that touches a session takes its turn.
        """
        structured: Any = structure_params(params, self.params_type)
        turn = order.ticket(structured.workspace_id, structured.session_id) if self._order else None
        return Admitted(structured, turn)

    async def call(self, conn: ClientConnection, admitted: Admitted, after_reply: AfterReply) -> Any:
        """Run an admitted waiting method, in its turn; RpcError for an error reply."""
        turn = admitted.turn
        if turn is None:
            return await self.handler(conn, admitted.params, after_reply)
        async with turn:
            return await self.handler(conn, admitted.params, after_reply)


def _now(params_type: type, handler: Callable[..., Any]) -> Method:
    """A handler that is a plain function: it never waits, so it is answered inline."""
    return Method(params_type, handler, True)


def _later(params_type: type, handler: Callable[..., Awaitable[Any]]) -> Method:
    """A coroutine handler: it may wait, so it gets a task of its own."""
    return Method(params_type, handler, False)


# What still works while the daemon shuts down: saying hello and watching it go.
_ALLOWED_WHILE_SHUTTING_DOWN = frozenset({"initialize", "ping", "server.status", "run.wait"})

_MAX_RUN_ID = 128


DEFAULT_TITLE = "New session"
_UNTITLED = ("", DEFAULT_TITLE)
_TITLE_LENGTH = 60


def session_title(prompt: str) -> str:
    """A title from a prompt: its first line, whitespace collapsed, shortened."""
    first = next((line for line in prompt.splitlines() if line.strip()), prompt)
    title = " ".join(first.split())
    return title if len(title) <= _TITLE_LENGTH else title[: _TITLE_LENGTH - 1].rstrip() + "…"


def _resend(p: AgentSendParams, session_id: str, prompt: str, state: str) -> dict[str, Any]:
    """A send with a run_id the daemon already knows: the same request again, or a mistake."""
    if prompt != p.prompt or session_id != p.session_id:
        raise RpcError(
            ErrorCode.CONFLICT,
            f"run_id: {p.run_id!r} is already used by another prompt",
        )
    return {"run_id": p.run_id, "queued": state == "queued", "state": state, "ahead": 0}


def _not_found(what: str, value: str) -> RpcError:
    return RpcError(ErrorCode.NOT_FOUND, f"{what}: no such {what.removesuffix('_id')} {value!r}")


class Methods:
    def __init__(self, state: DaemonState) -> None:
        self._state = state
        #: Where requests that touch a session take their turn (see `Method.admit`).
        self.order = SessionOrder()
        now, later = _now, _later
        self._table: dict[str, Method] = {
            "initialize": now(InitializeParams, self.initialize),
            "ping": now(NoParams, self.ping),
            "server.status": now(NoParams, self.server_status),
            "server.shutdown": now(ServerShutdownParams, self.server_shutdown),
            "models.list": now(NoParams, self.models_list),
            "workspace.open": later(WorkspaceOpenParams, self.workspace_open),
            "workspace.close": now(WorkspaceRef, self.workspace_close),
            "workspace.list": now(NoParams, self.workspace_list),
            "session.create": later(SessionCreateParams, self.session_create),
            "session.list": later(WorkspaceRef, self.session_list),
            "session.list_all": later(NoParams, self.session_list_all),
            "session.get": later(SessionRef, self.session_get),
            "session.delete": later(SessionRef, self.session_delete),
            "session.messages": later(SessionRef, self.session_messages),
            "agent.send": later(AgentSendParams, self.agent_send),
            "agent.cancel": later(AgentCancelParams, self.agent_cancel),
            "agent.queue": later(SessionRef, self.agent_queue),
            "agent.queue_clear": later(SessionRef, self.agent_queue_clear),
            "run.wait": later(RunWaitParams, self.run_wait),
            "run.get": later(RunGetParams, self.run_get),
            "events.subscribe": later(EventsSubscribeParams, self.events_subscribe),
            "events.unsubscribe": now(EventsUnsubscribeParams, self.events_unsubscribe),
        }

    def names(self) -> list[str]:
        return sorted(self._table)

    def lookup(self, method: object) -> Method:
        """The method a request names; RpcError if there is none or it may not run now."""
        entry = self._table.get(method) if type(method) is str else None
        if entry is None:
            if type(method) is not str:
                raise RpcError(ErrorCode.UNKNOWN_METHOD, f"method must be a string, got {method!r}")
            raise RpcError(ErrorCode.UNKNOWN_METHOD, f"unknown method {method!r}")
        if self._state.shutting_down and method not in _ALLOWED_WHILE_SHUTTING_DOWN:
            raise RpcError(ErrorCode.SHUTTING_DOWN, "agentd is shutting down")
        return entry

    # --- server

    def initialize(self, conn: ClientConnection, p: InitializeParams, _: Any) -> Any:
        conn.client_name = p.client_name
        conn.client_version = p.client_version
        models = self._state.models.config
        return {
            "server": "agentd",
            "version": agentd.__version__,
            "protocol": agentd.PROTOCOL_VERSION,
            "pid": os.getpid(),
            "default_model": models.default_model,
            # True when nothing is configured and runs answer with the offline echo model.
            "default_model_is_fallback": models.default_is_fallback,
            # A bigger message closes the connection: a client can refuse it up front instead.
            "max_message_size": self._state.config.max_message_size,
        }

    def models_list(self, conn: ClientConnection, p: NoParams, _: Any) -> Any:
        config = self._state.models.config
        return {
            "default": config.default_model,
            "default_is_fallback": config.default_is_fallback,
            "source": config.source,
            "models": config.describe(),
        }

    def ping(self, conn: ClientConnection, p: NoParams, _: Any) -> Any:
        return {}

    def server_status(self, conn: ClientConnection, p: NoParams, _: Any) -> Any:
        s = self._state
        return {
            "version": agentd.__version__,
            "pid": os.getpid(),
            "uptime_s": round(time.monotonic() - s.started_at, 3),
            "workspaces": len(s.workspaces),
            "clients": len(s.connections),
            "subscriptions": sum(len(h.broker) for h in s.workspaces.hosts()),
            "active_runs": s.runs.unfinished(),
            "events_dropped": s.stats.events_dropped,
        }

    def server_shutdown(self, conn: ClientConnection, p: ServerShutdownParams, after: Any) -> Any:
        s = self._state
        if p.if_idle:
            others = len(s.connections) - 1
            active = s.runs.unfinished()
            if active or others > 0:
                raise RpcError(
                    ErrorCode.CONFLICT,
                    f"not idle: {active} active run(s), {others} other client(s)",
                )
        # Reply first: the shutdown closes this connection too.
        after.append(lambda: s.request_shutdown("server.shutdown"))
        return {}

    # --- workspaces

    async def workspace_open(self, conn: ClientConnection, p: WorkspaceOpenParams, _: Any) -> Any:
        host = await self._state.workspaces.open(p.path, conn.id)
        conn.claims.add(host.id)
        return {"id": host.id, "path": host.path}

    def workspace_close(self, conn: ClientConnection, p: WorkspaceRef, _: Any) -> Any:
        if p.workspace_id not in conn.claims:
            raise RpcError(
                ErrorCode.NOT_FOUND,
                f"workspace_id: this connection has not opened workspace {p.workspace_id!r}",
            )
        conn.claims.discard(p.workspace_id)
        self._state.workspaces.release(p.workspace_id, conn.id)
        return {}

    def workspace_list(self, conn: ClientConnection, p: NoParams, _: Any) -> Any:
        return [
            {"id": h.id, "path": h.path, "clients": h.claim_count, "active_runs": h.dispatcher.active_runs()}
            for h in self._state.workspaces.hosts()
            if h.started and not h.closing
        ]

    # --- sessions

    async def _session(self, p: SessionRef) -> Any:
        host = self._state.workspaces.get(p.workspace_id)
        record = await self._state.store.get_session(host.id, p.session_id)
        if record is None:
            raise _not_found("session_id", p.session_id)
        return host, record

    async def session_create(self, conn: ClientConnection, p: SessionCreateParams, _: Any) -> Any:
        host = self._state.workspaces.get(p.workspace_id)
        record = await self._state.store.create_session(host.id, p.title or DEFAULT_TITLE)
        session = unstructure(host.session_view(record))
        host.broker.publish(events.SESSION_CREATED, session)
        return session

    async def session_list(self, conn: ClientConnection, p: WorkspaceRef, _: Any) -> Any:
        host = self._state.workspaces.get(p.workspace_id)
        records = await self._state.store.list_sessions(host.id)
        records.sort(key=lambda r: r.updated_at, reverse=True)
        return [unstructure(host.session_view(r)) for r in records]

    async def session_list_all(self, conn: ClientConnection, p: NoParams, _: Any) -> Any:
        # Every workspace the database knows, open or not: a session id from another
        # directory is found here. Only an open workspace can have a busy session.
        live = {h.id: h for h in self._state.workspaces.hosts() if h.started and not h.ended}
        groups: dict[str, dict[str, Any]] = {}
        for workspace, record in await self._state.store.all_sessions():
            group = groups.setdefault(workspace.id, {"workspace": unstructure(workspace), "sessions": []})
            host = live.get(workspace.id)
            busy = host is not None and host.dispatcher.is_busy(record.id)
            group["sessions"].append(unstructure(Session(**{**attrs.asdict(record), "busy": busy})))
        return list(groups.values())

    async def session_get(self, conn: ClientConnection, p: SessionRef, _: Any) -> Any:
        host, record = await self._session(p)
        return unstructure(host.session_view(record))

    async def session_delete(self, conn: ClientConnection, p: SessionRef, _: Any) -> Any:
        host, record = await self._session(p)
        if host.dispatcher.is_busy(record.id):
            raise RpcError(
                ErrorCode.CONFLICT,
                f"session {record.id} has a run in progress; cancel it first (agent.cancel)",
            )
        deleted = await self._state.store.delete_session(host.id, record.id)
        if deleted is None:
            raise _not_found("session_id", p.session_id)
        session = unstructure(host.session_view(deleted))
        host.broker.publish(events.SESSION_DELETED, session)
        return session

    async def session_messages(self, conn: ClientConnection, p: SessionRef, _: Any) -> Any:
        _host, record = await self._session(p)
        return [unstructure(m) for m in await self._state.store.list_messages(record.id)]

    # --- runs

    async def agent_send(self, conn: ClientConnection, p: AgentSendParams, _: Any) -> Any:
        if not p.prompt.strip():
            raise RpcError(ErrorCode.INVALID_PARAMS, "prompt: must not be empty")
        run_id = p.run_id if p.run_id is not None else uuid.uuid4().hex
        if not run_id or len(run_id) > _MAX_RUN_ID:
            raise RpcError(ErrorCode.INVALID_PARAMS, f"run_id: must be 1 to {_MAX_RUN_ID} characters")
        host, record = await self._session(SessionRef(p.workspace_id, p.session_id))
        state = self._state
        stored = await state.store.get_run(run_id)
        # The live index is checked after the await, with no checkpoint before
        # the accept: two sends racing with one run_id cannot both start a run.
        live = state.runs.get(run_id)
        if live is not None:
            return _resend(p, live.session_id, live.prompt, live.state.value)
        if stored is not None:
            return _resend(p, stored.session_id, stored.prompt, stored.state)
        if p.model is not None:
            # Refused before anything is stored: a name the registry cannot resolve
            # would only make a run that fails, in a session left with nothing else.
            try:
                state.models.resolve_name(p.model)
            except UnknownModelError as exc:
                raise RpcError(ErrorCode.INVALID_PARAMS, f"model: {exc}") from None
        run = Run(run_id, host.id, record.id, p.prompt, p.model)
        # From here the run is the workspace's: a client that hangs up now must
        # not leave it half accepted.
        with trio.CancelScope(shield=True):
            # Stored before it is accepted: a send the store cannot take is an
            # error reply, never a run the client was told failed.
            # Its place in the session's queue, should it have to wait.
            position = len(host.dispatcher.queued(record.id)) if host.dispatcher.is_busy(record.id) else None
            try:
                await state.store.create_run(
                    RunRecord(run.id, host.id, record.id, p.prompt, p.model or "", run.created_at), position
                )
            except sqlite3.IntegrityError:
                # The same run_id, sent twice at once: the other send stored it first.
                stored = await state.store.get_run(run_id)
                assert stored is not None
                return _resend(p, stored.session_id, stored.prompt, stored.state)
            try:
                queued = host.dispatcher.accept(run)
            except Closing:
                await state.store.finish_run(
                    RunComplete(record.id, run_id, None, "", "the workspace closed before the run started", False)
                )
                raise RpcError(ErrorCode.CONFLICT, f"workspace {host.id} is closing") from None
            # Runs ahead of this one, counted as it joins: the session's running one
            # and those queued before it.
            ahead = len(host.dispatcher.queued(record.id)) if queued else 0
            state.runs.add(run)
            if record.title in _UNTITLED and await state.store.title_untitled_session(
                record.id, session_title(p.prompt), _UNTITLED
            ):
                # An untitled session is named by its first prompt, so lists are readable.
                await host.publish_session_state(record.id)
        return {"run_id": run_id, "queued": queued, "state": "queued" if queued else "running", "ahead": ahead}

    async def agent_cancel(self, conn: ClientConnection, p: AgentCancelParams, _: Any) -> Any:
        host, record = await self._session(SessionRef(p.workspace_id, p.session_id))
        if p.run_id is not None:
            active, cleared = host.dispatcher.cancel_run(record.id, p.run_id)
        else:
            active, cleared = host.dispatcher.cancel(record.id)
        return {
            "cancelled": active is not None,
            "run_id": active.id if active is not None else None,
            "cleared": len(cleared),
        }

    async def agent_queue(self, conn: ClientConnection, p: SessionRef, _: Any) -> Any:
        host, record = await self._session(p)
        return [unstructure(run.queued_prompt()) for run in host.dispatcher.queued(record.id)]

    async def agent_queue_clear(self, conn: ClientConnection, p: SessionRef, _: Any) -> Any:
        host, record = await self._session(p)
        return {"cleared": len(host.dispatcher.clear_queue(record.id))}

    async def run_wait(self, conn: ClientConnection, p: RunWaitParams, _: Any) -> Any:
        state = self._state
        if p.timeout is not None and p.timeout < 0:
            raise RpcError(ErrorCode.INVALID_PARAMS, "timeout: must be >= 0")
        run = state.runs.get(p.run_id)
        if run is not None:
            with trio.move_on_after(p.timeout if p.timeout is not None else float("inf")):
                await run.finished.wait()
            if run.complete is None:
                raise RpcError(ErrorCode.TIMEOUT, f"run {p.run_id} has not completed after {p.timeout}s")
            return unstructure(run.complete)
        record = await state.store.get_run(p.run_id)
        if record is None or record.complete is None:
            raise _not_found("run_id", p.run_id)
        return unstructure(record.complete)

    # --- events

    async def run_get(self, conn: ClientConnection, p: RunGetParams, _: Any) -> Any:
        run = self._state.runs.get(p.run_id)
        if run is not None:
            return {
                "run_id": run.id,
                "workspace_id": run.workspace_id,
                "session_id": run.session_id,
                "model": run.model or "",
                "prompt": run.prompt,
                "state": run.state.value,
                "created_at": run.created_at,
                "complete": unstructure(run.complete) if run.complete is not None else None,
            }
        record = await self._state.store.get_run(p.run_id)
        if record is None:
            raise _not_found("run_id", p.run_id)
        return {
            "run_id": record.id,
            "workspace_id": record.workspace_id,
            "session_id": record.session_id,
            "model": record.model,
            "prompt": record.prompt,
            "state": record.state,
            "created_at": record.created_at,
            "complete": unstructure(record.complete) if record.complete is not None else None,
        }

    # --- events

    async def events_subscribe(
        self, conn: ClientConnection, p: EventsSubscribeParams, after: list[Callable[[], None]]
    ) -> Any:
        if p.since is not None and p.since < 0:
            raise RpcError(ErrorCode.INVALID_PARAMS, "since: must be >= 0")
        host = self._state.workspaces.get(p.workspace_id)
        sid = f"sub_{uuid.uuid4().hex[:16]}"

        def overflow(_sub: object) -> None:
            conn.disconnect(f"subscription {sid} did not take a must-deliver event in time")

        sub, replay, gap, through = await host.subscribe(sid, self._state.config.subscriber_capacity, overflow, p.since)
        conn.subscriptions[sid] = sub
        if gap is not None:
            # The client must reload (session.messages) rather than trust the replay.
            replay.insert(0, Event(host.id, p.since or 0, events.EVENTS_GAP, {"reason": gap}))
        # Events queue from now on; the replay, then they, go out once the reply
        # has, so a client never sees an event for a subscription it has not heard of.
        after.append(lambda: conn.start_writer(sub, replay))
        # `seq`: live events are those above it; `replayed`: how many events come
        # first, from before it (so a client knows when it has caught up).
        return {"subscription_id": sid, "seq": through, "replayed": len(replay)}

    def events_unsubscribe(self, conn: ClientConnection, p: EventsUnsubscribeParams, _: Any) -> Any:
        sub = conn.subscriptions.pop(p.subscription_id, None)
        if sub is None:
            raise _not_found("subscription_id", p.subscription_id)
        sub.close()
        return {}
