"""The client library: a msgpack-RPC connection to agentd, for trio programs.

    async with open_client(start_daemon=True) as client:
        ws = await client.open_workspace("/src/project")
        session = await client.create_session(ws.id)
        result = await client.run(ws.id, session.id, "hello", on_text=print)
        async with client.subscribe(ws.id) as events:
            async for event in events:
                ...

`run()` sends one prompt and follows it to its RunComplete by the rules
`agentctl run` follows (`agentctl.runstream`); `subscribe()` yields one
subscription's events; `call()` is any method of docs/protocol.md, its
result as the daemon sent it. Replies are matched to calls by msgid, so calls
may run concurrently. Each `subscribe()` (and each `run()`) gets its own
subscription's events; every other notification goes, in order, into
`notifications`. Both are bounded: a reader that stops reading slows the
connection down rather than growing memory.

`BlockingClient` (re-exported from `agentctl.blocking`) is the same for
programs without an event loop.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from agentctl._records import (
    PERMISSION_ACTIONS,
    AsyncPermissionCallback,
    Event,
    PermissionRequest,
    RunComplete,
    RunResult,
    Session,
    Workspace,
    allow_rules,
    check_action,
    event,
    record,
    run_result,
)
from agentctl.blocking import BlockingClient
from agentctl.errors import ConnectionLost
from agentctl.runstream import RunFollower, RunStream, SubscriptionPosition, event_params, new_run_id, send_params
from agentd import trust
from agentd.paths import resolve_socket_path
from agentd.rpc import (
    CLIENT_MAX_MESSAGE_SIZE,
    NEED_DATA,
    Call,
    ErrorCode,
    Notification,
    ProtocolError,
    RpcConnection,
    RpcError,
)

__all__ = [
    "PERMISSION_ACTIONS",
    "BlockingClient",
    "Client",
    "ConnectionLost",
    "ErrorCode",
    "Event",
    "PermissionRequest",
    "RpcError",
    "RunComplete",
    "RunResult",
    "Session",
    "Subscription",
    "Workspace",
    "event_params",
    "open_client",
]

NOTIFICATION_BUFFER = 8192
# Cleanup calls made on the way out (a cancelled run's agent.cancel, an
# unsubscribe) are shielded, so they get a bound of their own.
CLEANUP_TIMEOUT = 5.0


class Client:
    def __init__(self, stream: trio.abc.Stream, *, max_message_size: int = CLIENT_MAX_MESSAGE_SIZE) -> None:
        self._stream = stream
        self._rpc = RpcConnection(max_message_size=max_message_size)
        self._send_lock = trio.Lock()
        self.close_reason: str | None = None
        send, receive = trio.open_memory_channel[tuple[str, Any]](NOTIFICATION_BUFFER)
        self._notify_send = send
        #: `(method, params)` of each notification no `subscribe()` takes, in arrival order; ends with the connection.
        self.notifications: trio.MemoryReceiveChannel[tuple[str, Any]] = receive
        # subscription_id -> where `subscribe()` reads its events.
        self._routes: dict[str, trio.MemorySendChannel[dict[str, Any]]] = {}
        # msgid of an events.subscribe under way -> the channel its subscription's events go to.
        # The reader routes at the reply, before it reads on: the first event may be right behind it.
        self._routes_at_reply: dict[int, trio.MemorySendChannel[dict[str, Any]]] = {}
        # Subscriptions `subscribe()` is done with: their stragglers are nobody's.
        self._ended: set[str] = set()

    @property
    def connected(self) -> bool:
        return self._rpc.closed is None

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Call `method` with named `params`; raises RpcError for an error reply."""
        return await self._call(method, params)

    async def _call(
        self,
        method: str,
        params: dict[str, Any] | None,
        route: trio.MemorySendChannel[dict[str, Any]] | None = None,
    ) -> Any:
        if self._rpc.closed is not None:
            raise ConnectionLost(self._rpc.closed)
        call, data = self._rpc.call(method, [params] if params is not None else [])
        call.waker = done = trio.Event()
        if route is not None:
            self._routes_at_reply[call.msgid] = route
        try:
            try:
                async with self._send_lock:
                    await self._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self._mark_closed(f"send failed: {exc}")
            await done.wait()
        finally:
            self._rpc.abandon(call)
            self._routes_at_reply.pop(call.msgid, None)
        if call.lost is not None:
            raise ConnectionLost(call.lost)
        return call.outcome()

    # --- typed calls

    async def open_workspace(self, path: str | os.PathLike[str]) -> Workspace:
        """workspace.open: the workspace of directory `path` (a relative one is taken from the current directory)."""
        # abspath reads only the process's cwd: nothing that blocks.
        absolute = os.path.abspath(path)  # noqa: ASYNC240
        return record(Workspace, await self.call("workspace.open", {"path": absolute}))

    async def create_session(self, workspace_id: str, title: str | None = None) -> Session:
        """session.create: a new session; untitled, its first prompt names it."""
        params = {"workspace_id": workspace_id} | ({"title": title} if title is not None else {})
        return record(Session, await self.call("session.create", params))

    async def list_sessions(self, workspace_id: str) -> list[Session]:
        """session.list: the workspace's sessions, most recently updated first."""
        return [record(Session, s) for s in await self.call("session.list", {"workspace_id": workspace_id})]

    async def wait_run(self, run_id: str, timeout: float | None = None) -> RunComplete:
        """run.wait: the run's RunComplete, once it has one (RpcError code 6 after `timeout` seconds)."""
        params: dict[str, Any] = {"run_id": run_id} | ({"timeout": timeout} if timeout is not None else {})
        return record(RunComplete, await self.call("run.wait", params))

    async def cancel(self, workspace_id: str, session_id: str, run_id: str | None = None) -> dict[str, Any]:
        """agent.cancel: the run `run_id`, or without it the session's running run and its queue."""
        params = {"workspace_id": workspace_id, "session_id": session_id}
        if run_id is not None:
            params["run_id"] = run_id
        result: dict[str, Any] = await self.call("agent.cancel", params)
        return result

    # --- events

    @asynccontextmanager
    async def subscribe(self, workspace_id: str, *, since: int | None = None) -> AsyncIterator[Subscription]:
        """events.subscribe: the workspace's events, for as long as the block lasts.

        With `since` (the last `seq` seen of this workspace, `Subscription.last_seq`
        of an earlier one), the daemon first replays what was logged after it;
        a replay that cannot promise every event starts with an `events.gap`
        that has a `reason`. Leaving the block unsubscribes.

        Read it while the block lasts: its events wait for the reader, and
        once NOTIFICATION_BUFFER of them wait, the whole connection does
        (calls too), rather than memory growing.
        """
        params: dict[str, Any] = {"workspace_id": workspace_id}
        if since is not None:
            params["since"] = since
        send, receive = trio.open_memory_channel[dict[str, Any]](NOTIFICATION_BUFFER)
        subscription_id: str | None = None
        try:
            reply = await self._call("events.subscribe", params, route=send)
            subscription_id = str(reply["subscription_id"])
            yield Subscription(self, reply, receive)
        finally:
            receive.close()
            if subscription_id is not None:
                self._routes.pop(subscription_id, None)
                self._ended.add(subscription_id)
                if self.connected:
                    with trio.move_on_after(CLEANUP_TIMEOUT, shield=True):
                        try:
                            await self.call("events.unsubscribe", {"subscription_id": subscription_id})
                        except (RpcError, ConnectionLost):
                            pass  # the workspace closed, or the daemon went: nothing left to end

    # --- runs

    async def run(
        self,
        workspace_id: str,
        session_id: str,
        prompt: str,
        *,
        model: str | None = None,
        allow: Sequence[str] | None = None,
        run_id: str | None = None,
        on_text: Callable[[str], object] | None = None,
        on_permission: AsyncPermissionCallback | None = None,
    ) -> RunResult:
        """Send `prompt` to the session and follow the run to its RunComplete.

        The run's end is its own run.complete: another run's error in the
        workspace never ends or fails it. `on_text` gets the run's text as it
        streams (each assistant message's, a newline between messages), gaps
        filled from the final text, so what it gets adds up to the whole answer.

        Permission: `allow` holds rules for this run (`["edit", "bash:git status"]`,
        `["*"]` for every call), sent with it; a request they do not cover goes
        to `on_permission` (a function or coroutine function of the
        PermissionRequest, returning one of PERMISSION_ACTIONS), while the text
        keeps streaming. One answered elsewhere first is withdrawn from it.
        Without `on_permission` each request is denied.

        RpcError if the daemon refuses the prompt (then there is no run).
        Leaving early (the caller's scope cancelled, a callback raising)
        cancels the run in the daemon, without waiting for its RunComplete;
        ConnectionLost if the connection ends first, the run going on in the
        daemon (`run.wait` with `run_id` finds how it ended).
        """
        run_id = run_id or new_run_id()
        params = send_params(workspace_id, session_id, prompt, run_id, model, allow_rules(allow))
        async with self.subscribe(workspace_id) as subscription:
            follower = RunFollower(RunStream(session_id, run_id, end_line=False), subscription.id, subscription.seq)
            refused = False
            try:
                async with trio.open_nursery() as nursery:
                    asking: dict[str, trio.CancelScope] = {}
                    try:
                        await self.call("agent.send", params)
                    except RpcError:
                        refused = True
                        raise
                    while True:
                        envelope = await subscription._next_envelope()
                        ev, text, outcome = follower.take_event(envelope)
                        if text and on_text is not None:
                            on_text(text)
                        request = follower.permission_request(ev)
                        if request is not None:
                            scope = asking[request["request_id"]] = trio.CancelScope()
                            nursery.start_soon(self._answer, workspace_id, request, on_permission, scope)
                        resolved = follower.permission_resolved(ev)
                        if resolved is not None and resolved in asking:
                            asking.pop(resolved).cancel()
                        if outcome is not None:
                            assert follower.complete is not None
                            nursery.cancel_scope.cancel()
                            return run_result(workspace_id, follower.complete, outcome)
            except BaseException as exc:
                if not refused:
                    await self._abandon_run(workspace_id, session_id, run_id)
                if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
                    # A callback's error, the refusal or the cancel, as itself rather than as a group.
                    raise exc.exceptions[0] from None
                raise

    async def _answer(
        self,
        workspace_id: str,
        payload: dict[str, Any],
        on_permission: AsyncPermissionCallback | None,
        scope: trio.CancelScope,
    ) -> None:
        with scope:
            action = "deny"
            if on_permission is not None:
                answer = on_permission(record(PermissionRequest, payload))
                if inspect.isawaitable(answer):
                    answer = await answer
                action = check_action(answer)
            params = {"workspace_id": workspace_id, "request_id": payload["request_id"], "action": action}
            # `resolved: false` means it had ended meanwhile; its permission.resolved says how.
            await self.call("permission.grant", params)

    async def _abandon_run(self, workspace_id: str, session_id: str, run_id: str) -> None:
        """The caller left before the run ended: cancel it, unless the connection is gone.

        Harmless when the run had just ended or the send never went out:
        agent.cancel of a run_id that is neither running nor queued is a no-op.
        """
        if not self.connected:
            return
        with trio.move_on_after(CLEANUP_TIMEOUT, shield=True):
            try:
                await self.cancel(workspace_id, session_id, run_id)
            except (RpcError, ConnectionLost):
                pass

    # --- the connection

    async def _read(self) -> None:
        rpc = self._rpc
        try:
            while True:
                try:
                    event = rpc.next_event()
                except ProtocolError as exc:
                    self._mark_closed(f"bad data from the daemon: {exc}")
                    return
                if type(event) is Call:
                    route = self._routes_at_reply.pop(event.msgid, None)
                    if route is not None and event.error is None and isinstance(event.result, dict):
                        self._routes[str(event.result.get("subscription_id"))] = route
                    event.waker.set()
                elif type(event) is Notification:
                    if not await self._route(event):
                        return
                elif event is NEED_DATA:
                    try:
                        data = await self._stream.receive_some(65536)
                    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                        self._mark_closed(f"connection lost: {exc}")
                        return
                    if not data:
                        self._mark_closed("the daemon closed the connection")
                        return
                    rpc.receive_data(data)
                # The daemon sends no requests (protocol.md §1.2): there is nothing to answer.
        finally:
            self._mark_closed("connection closed")

    async def _route(self, notification: Notification) -> bool:
        """Hand a notification to its subscription's reader, else to `notifications`; False once nobody wants any."""
        envelope = event_params(notification.params) if notification.method == "event" else None
        subscription_id = envelope.get("subscription_id") if envelope is not None else None
        if envelope is not None and isinstance(subscription_id, str):
            route = self._routes.get(subscription_id)
            if route is not None:
                try:
                    await route.send(envelope)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    # Its block ended while the event was on its way.
                    self._routes.pop(subscription_id, None)
                    self._ended.add(subscription_id)
                return True
            if subscription_id in self._ended:
                return True
        try:
            await self._notify_send.send((notification.method, notification.params))
        except trio.ClosedResourceError:
            # A call found the connection broken and closed the
            # client meanwhile: nothing more is wanted from it.
            return False
        return True

    def _mark_closed(self, reason: str) -> None:
        for call in self._rpc.close(reason):
            call.waker.set()
        if self.close_reason is None:
            self.close_reason = self._rpc.closed
            self._notify_send.close()
            for route in self._routes.values():
                route.close()

    async def aclose(self) -> None:
        self._mark_closed("closed by the client")
        await self._stream.aclose()


class Subscription(SubscriptionPosition):
    """One `subscribe()`: its events, in order, as `Event`s.

    Iterating ends after a live `workspace.closed` (the subscription's last
    event); it raises ConnectionLost when the connection ends first.
    `events.gap` events are yielded like the others: something may be missing
    (`payload` says what, docs/protocol.md §6), and a client that shows state
    should read it again.
    """

    def __init__(
        self, client: Client, reply: dict[str, Any], receive: trio.MemoryReceiveChannel[dict[str, Any]]
    ) -> None:
        super().__init__(reply)
        self._client = client
        self._receive = receive

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        if self.over:
            raise StopAsyncIteration
        return event(await self._next_envelope())

    async def _next_envelope(self) -> dict[str, Any]:
        try:
            envelope = await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise ConnectionLost(self._client.close_reason or "connection closed") from None
        self.note(envelope)
        return envelope


@asynccontextmanager
async def open_client(
    socket_path: str | Path | None = None,
    *,
    start_daemon: bool = False,
    max_message_size: int = CLIENT_MAX_MESSAGE_SIZE,
) -> AsyncIterator[Client]:
    """Connect to the daemon at `socket_path`; the connection closes with the block.

    Without `socket_path`, the user's daemon, found as `agentctl` finds it
    (`$AGENTD_SOCKET`, else `$XDG_RUNTIME_DIR/agentd/agentd.sock`, else
    `/tmp/agentd-$UID/agentd.sock`). With `start_daemon`, one is started
    there when none answers, as `agentctl` does (DaemonUnavailable if it
    cannot be). UntrustedSocket, with nothing sent, when the socket or the
    process behind it is not ours (`agentd.trust`).
    """
    path = resolve_socket_path(os.fspath(socket_path) if socket_path is not None else None)
    try:
        trust.check_socket_path(path)
        stream = await trio.open_unix_socket(path)
    except OSError:
        if not start_daemon:
            raise
        from agentctl.autostart import ensure_daemon

        # It waits for the daemon's readiness pipe and may hold the start lock: not on the event loop.
        await trio.to_thread.run_sync(ensure_daemon, path)
        trust.check_socket_path(path)
        stream = await trio.open_unix_socket(path)
    try:
        trust.check_peer(stream.socket, path)
    except BaseException:
        await stream.aclose()
        raise
    client = Client(stream, max_message_size=max_message_size)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client._read)
            try:
                yield client
            finally:
                nursery.cancel_scope.cancel()
                with trio.CancelScope(shield=True):
                    await client.aclose()
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            # One error from the caller's block: hand it back as itself, not as a group.
            raise group.exceptions[0] from None
        raise
