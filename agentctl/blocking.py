"""A blocking msgpack-RPC client for short-lived commands: no event loop to import.

`agentctl` is run from shells and CI, where its start-up time is part of every
call; importing trio alone costs several times a bare Python start. This client
is the sans-io `RpcConnection` under a plain socket, reading with `select`:

    with BlockingClient.connect(start_daemon=True) as client:
        ws = client.open_workspace("/src/project")
        session = client.create_session(ws.id)
        result = client.run(ws.id, session.id, "hello", on_text=print)
        with client.subscribe(ws.id) as events:
            for event in events:
                ...
        ws = client.call("workspace.open", {"path": "/src/project"})
        item = client.next_notification(timeout=0.1)  # (method, params) or None

`run()` and `subscribe()` are those of the trio client (`agentctl.client`),
on the same rules (`agentctl.runstream`) and with the same result types.
Replies are matched by msgid; events of a `subscribe()` are kept, in order,
for it, and every other notification that arrives while a call waits is kept,
in order, for `next_notification`.
"""

from __future__ import annotations

# The C module under `socket`: the `socket` module adds nothing this client
# uses, and imports enum and selectors, a fifth of agentctl's start-up.
import _socket
import os
import select
import time
from collections import deque

from agentctl.errors import ConnectionLost
from agentctl.runstream import RunFollower, RunStream, SubscriptionPosition, event_params, new_run_id, send_params
from agentd import trust
from agentd.paths import resolve_socket_path
from agentd.rpc import (
    CLIENT_MAX_MESSAGE_SIZE,
    NEED_DATA,
    Call,
    Notification,
    ProtocolError,
    RpcConnection,
    RpcError,
)

# typing costs milliseconds to import, and agentctl's start-up is measured in them;
# annotations are strings here, so only type checkers need these names.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    from agentctl._records import Event, PermissionCallback, RunComplete, RunResult, Session, Workspace

__all__ = ["BlockingClient", "BlockingSubscription", "ConnectionLost", "RpcError"]

_RECEIVE_SIZE = 65536
# The unsubscribe and agent.cancel made on the way out of a block get a bound of their own.
_CLEANUP_TIMEOUT = 5.0


class BlockingClient:
    def __init__(self, sock: _socket.socket, *, max_message_size: int = CLIENT_MAX_MESSAGE_SIZE) -> None:
        self._sock = sock
        self._rpc = RpcConnection(max_message_size=max_message_size)
        # The calls `wait` will ask about, by the msgid `request` handed out.
        self._calls: dict[int, Call] = {}
        self._notifications: deque[tuple[str, Any]] = deque()
        # subscription_id -> the events kept for its `subscribe()`.
        self._routes: dict[str, deque[dict[str, Any]]] = {}
        # msgid of an events.subscribe under way -> its queue, routed at the reply: the
        # subscription's first events may come in the same read.
        self._routes_at_reply: dict[int, deque[dict[str, Any]]] = {}
        # Subscriptions `subscribe()` is done with: their stragglers are nobody's.
        self._ended: set[str] = set()

    @classmethod
    def connect(
        cls, socket_path: str | os.PathLike[str] | None = None, *, start_daemon: bool = False
    ) -> BlockingClient:
        """Connect once the socket and its peer are ours (`agentd.trust`): UntrustedSocket, and nothing sent, if not.

        Without `socket_path`, the user's daemon, found as `agentctl` finds it.
        With `start_daemon`, one is started there when none answers
        (DaemonUnavailable if it cannot be); the common case is one connect.
        """
        path = resolve_socket_path(os.fspath(socket_path) if socket_path is not None else None)
        try:
            return cls._connect(path)
        except OSError:
            if not start_daemon:
                raise
        from agentctl.autostart import ensure_daemon

        ensure_daemon(path)
        return cls._connect(path)

    @classmethod
    def _connect(cls, path: str) -> BlockingClient:
        trust.check_socket_path(path)
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.connect(path)
            trust.check_peer(sock, path)
        except BaseException:
            sock.close()
            raise
        return cls(sock)

    @property
    def close_reason(self) -> str | None:
        return self._rpc.closed

    @property
    def connected(self) -> bool:
        return self._rpc.closed is None

    def close(self) -> None:
        self._rpc.close("closed by the client")
        self._sock.close()

    def __enter__(self) -> BlockingClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- requests

    def request(self, method: str, params: dict[str, Any] | None = None, *, want_reply: bool = True) -> int:
        """Send a request without waiting; its reply is collected by `wait`."""
        if self._rpc.closed is not None:
            raise ConnectionLost(self._rpc.closed)
        call, data = self._rpc.call(method, [params] if params is not None else [], want_reply=want_reply)
        if want_reply:
            self._calls[call.msgid] = call
        try:
            self._sock.sendall(data)
        except OSError as exc:
            self._rpc.close(f"send failed: {exc}")
            raise ConnectionLost(self._rpc.closed) from None
        return call.msgid

    def wait(self, msgid: int, timeout: float | None = None) -> Any:
        """The result of request `msgid`; RpcError for an error reply, TimeoutError after `timeout`."""
        call = self._calls[msgid]
        deadline = None if timeout is None else time.monotonic() + timeout
        while not call.answered:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"no reply within {timeout}s")
            self._pump(left)
        del self._calls[msgid]
        return call.outcome()

    def call(self, method: str, params: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        return self.wait(self.request(method, params), timeout)

    # --- typed calls (their types cost attrs and cattrs: imported by the first one)

    def open_workspace(self, path: str | os.PathLike[str]) -> Workspace:
        """workspace.open: the workspace of directory `path` (a relative one is taken from the current directory)."""
        from agentctl._records import Workspace, record

        return record(Workspace, self.call("workspace.open", {"path": os.path.abspath(path)}))

    def create_session(self, workspace_id: str, title: str | None = None) -> Session:
        """session.create: a new session; untitled, its first prompt names it."""
        from agentctl._records import Session, record

        params = {"workspace_id": workspace_id} | ({"title": title} if title is not None else {})
        return record(Session, self.call("session.create", params))

    def list_sessions(self, workspace_id: str) -> list[Session]:
        """session.list: the workspace's sessions, most recently updated first."""
        from agentctl._records import Session, record

        return [record(Session, s) for s in self.call("session.list", {"workspace_id": workspace_id})]

    def wait_run(self, run_id: str, timeout: float | None = None) -> RunComplete:
        """run.wait: the run's RunComplete, once it has one (RpcError code 6 after `timeout` seconds)."""
        from agentctl._records import RunComplete, record

        params: dict[str, Any] = {"run_id": run_id} | ({"timeout": timeout} if timeout is not None else {})
        return record(RunComplete, self.call("run.wait", params))

    def cancel(self, workspace_id: str, session_id: str, run_id: str | None = None) -> dict[str, Any]:
        """agent.cancel: the run `run_id`, or without it the session's running run and its queue."""
        params = {"workspace_id": workspace_id, "session_id": session_id}
        if run_id is not None:
            params["run_id"] = run_id
        result: dict[str, Any] = self.call("agent.cancel", params)
        return result

    # --- events and runs

    def subscribe(self, workspace_id: str, *, since: int | None = None) -> BlockingSubscription:
        """events.subscribe: the workspace's events, until the subscription is closed (use it in a `with`).

        `since` as in the trio client's `subscribe`.
        """
        params: dict[str, Any] = {"workspace_id": workspace_id}
        if since is not None:
            params["since"] = since
        queue: deque[dict[str, Any]] = deque()
        msgid = self.request("events.subscribe", params)
        self._routes_at_reply[msgid] = queue
        try:
            reply = self.wait(msgid)
        finally:
            self._routes_at_reply.pop(msgid, None)
        return BlockingSubscription(self, reply, queue)

    def run(
        self,
        workspace_id: str,
        session_id: str,
        prompt: str,
        *,
        model: str | None = None,
        allow: Sequence[str] | None = None,
        run_id: str | None = None,
        on_text: Callable[[str], object] | None = None,
        on_permission: PermissionCallback | None = None,
        timeout: float | None = None,
    ) -> RunResult:
        """Send `prompt` to the session and follow the run to its RunComplete, as the trio client's `run` does.

        `on_permission` is a plain function here; while it decides, nothing
        else is read. Leaving early (Ctrl-C, a callback raising, or `timeout`
        seconds passing, which raises TimeoutError) cancels the run in the
        daemon without waiting for its RunComplete.
        """
        from agentctl._records import PermissionRequest, allow_rules, check_action, record, run_result

        run_id = run_id or new_run_id()
        params = send_params(workspace_id, session_id, prompt, run_id, model, allow_rules(allow))
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.subscribe(workspace_id) as subscription:
            follower = RunFollower(RunStream(session_id, run_id, end_line=False), subscription.id, subscription.seq)
            send = self.request("agent.send", params)
            try:
                try:
                    self.wait(send, timeout)
                except RpcError:
                    send = -1  # refused: there is no run
                    raise
                while True:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise TimeoutError(f"the run did not complete within {timeout}s")
                    envelope = subscription._next_envelope(left)
                    if envelope is None:
                        continue
                    event, text, outcome = follower.take_event(envelope)
                    if text and on_text is not None:
                        on_text(text)
                    request = follower.permission_request(event)
                    if request is not None:
                        action = "deny"
                        if on_permission is not None:
                            action = check_action(on_permission(record(PermissionRequest, request)))
                        grant = {"workspace_id": workspace_id, "request_id": request["request_id"], "action": action}
                        # Its reply adds nothing: the request's permission.resolved says how it ended.
                        self.request("permission.grant", grant, want_reply=False)
                    if outcome is not None:
                        assert follower.complete is not None
                        return run_result(workspace_id, follower.complete, outcome)
            except BaseException:
                if send != -1 and self.connected:
                    # Harmless if the run had not been accepted: agent.cancel of an unknown run_id is a no-op.
                    # Its reply is waited for (bounded): the daemon applies it after the send, in the session's
                    # order, and a connection closed before then would take the cancel with it.
                    try:
                        self.call("agent.cancel", {**_session_ref(params), "run_id": run_id}, timeout=_CLEANUP_TIMEOUT)
                    except (RpcError, ConnectionLost, TimeoutError):
                        pass
                raise

    # --- notifications

    def next_notification(self, timeout: float | None = None) -> tuple[str, Any] | None:
        """The next notification, or None if none arrives within `timeout`.

        Raises ConnectionLost once the connection has ended and every
        notification received before that has been handed out.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._notifications:
            if deadline is None:
                self._pump(None)
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._pump(left)
        return self._notifications.popleft()

    # --- the socket

    def _pump(self, timeout: float | None) -> bool:
        """Read what is there (waiting up to `timeout`); False if nothing came."""
        rpc = self._rpc
        if rpc.closed is not None:
            raise ConnectionLost(rpc.closed)
        readable, _, _ = select.select([self._sock], [], [], timeout)
        if not readable:
            return False
        try:
            data = self._sock.recv(_RECEIVE_SIZE)
        except OSError as exc:
            rpc.close(f"connection lost: {exc}")
            raise ConnectionLost(rpc.closed) from None
        if not data:
            rpc.close("the daemon closed the connection")
            raise ConnectionLost(rpc.closed)
        rpc.receive_data(data)
        try:
            while (event := rpc.next_event()) is not NEED_DATA:
                if type(event) is Notification:
                    if not (self._routes or self._ended) or not self._route(event):
                        self._notifications.append((event.method, event.params))
                elif self._routes_at_reply and type(event) is Call:
                    queue = self._routes_at_reply.pop(event.msgid, None)
                    if queue is not None and event.error is None and isinstance(event.result, dict):
                        self._routes[str(event.result.get("subscription_id"))] = queue
                # An answered Call is marked so by the connection; `wait` sees it.
        except ProtocolError as exc:
            rpc.close(f"bad data from the daemon: {exc}")
            raise ConnectionLost(rpc.closed) from None
        return True

    def _route(self, notification: Notification) -> bool:
        """Keep an event for its `subscribe()`; False if it is not one's."""
        envelope = event_params(notification.params) if notification.method == "event" else None
        subscription_id = envelope.get("subscription_id") if envelope is not None else None
        if envelope is None or not isinstance(subscription_id, str):
            return False
        queue = self._routes.get(subscription_id)
        if queue is not None:
            queue.append(envelope)
            return True
        return subscription_id in self._ended

    def _unsubscribe(self, subscription_id: str) -> None:
        self._routes.pop(subscription_id, None)
        self._ended.add(subscription_id)
        if not self.connected:
            return
        try:
            self.call("events.unsubscribe", {"subscription_id": subscription_id}, timeout=_CLEANUP_TIMEOUT)
        except (RpcError, ConnectionLost, TimeoutError):
            pass  # the workspace closed, or the daemon went: nothing left to end


class BlockingSubscription(SubscriptionPosition):
    """One `subscribe()` of a BlockingClient: its events, in order, as `Event`s; the trio `Subscription`'s twin.

    Iterating waits for each event and ends after a live `workspace.closed`;
    `get(timeout)` waits at most `timeout`. Both raise ConnectionLost once the
    connection has ended and every event received before has been handed out.
    Closing it (leaving its `with`) unsubscribes.
    """

    def __init__(self, client: BlockingClient, reply: dict[str, Any], queue: deque[dict[str, Any]]) -> None:
        super().__init__(reply)
        self._client = client
        self._queue = queue
        self._closed = False

    def __enter__(self) -> BlockingSubscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._client._unsubscribe(self.id)

    def __iter__(self) -> BlockingSubscription:
        return self

    def __next__(self) -> Event:
        while not self.over:
            event = self.get(None)
            if event is not None:
                return event
        raise StopIteration

    def get(self, timeout: float | None = None) -> Event | None:
        """The next event; None if none comes within `timeout` or the subscription is over."""
        if self.over:
            return None
        envelope = self._next_envelope(timeout)
        if envelope is None:
            return None
        from agentctl._records import event

        return event(envelope)

    def _next_envelope(self, timeout: float | None) -> dict[str, Any] | None:
        queue = self._queue
        deadline = None if timeout is None else time.monotonic() + timeout
        while not queue:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            self._client._pump(left)
        envelope = queue.popleft()
        self.note(envelope)
        return envelope


def _session_ref(params: dict[str, Any]) -> dict[str, Any]:
    return {"workspace_id": params["workspace_id"], "session_id": params["session_id"]}
