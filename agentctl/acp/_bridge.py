"""The trio adapter of `agentctl acp`: ACP on stdin/stdout, agentd on its socket.

    Bridge.run holds the whole life:
      nursery
      ├── the daemon's connection: open_client(start_daemon=True), held until it
      │   is lost or stdin ends; a lost one is made again by the next request
      │   that needs it, which feeds each workspace again from the last seq seen
      │   and gives each session its editor's MCP servers again
      ├── requests nursery: read stdin → one task per editor request (a prompt
      │   lasts its run); at stdin's end, given EOF_GRACE, prompts let go
      └── one feed per workspace: events.subscribe → each session's updates,
          its prompts' endings, its permission requests

Nothing but ACP goes to stdout: the bridge keeps a duplicate of fd 1 for
itself and points fd 1 at stderr, so a stray print cannot corrupt the stream.
The first `initialize` is answered before trio is imported (`_early`), and
the daemon connects after it. At stdin's end the requests asked are answered,
within EOF_GRACE, pending prompts let go, and the rest is cancelled; runs go
on in the daemon, as with every client.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import sys
import traceback
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import trio

import agentd
from agentctl.acp._early import field, initialize_result
from agentctl.acp._jsonrpc import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    Connection,
    Invalid,
    Notification,
    Request,
    Response,
    RpcFailure,
)
from agentctl.acp._mcp import editor_servers, refusal_update
from agentctl.acp._updates import SessionView, grant_action, permission_params, stop_reason
from agentctl.errors import ConnectionLost
from agentctl.runstream import RunStream, new_run_id
from agentd import event_types as events
from agentd.rpc import RpcError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from agentctl.client import Client

__all__ = ["main", "serve"]

READ_SIZE = 65536
Event = Request | Notification | Response | Invalid
# How long the daemon's connection waits for the editor's first request to be answered.
CONNECT_DELAY = 0.2
# What agent.send needs besides its prompt, within the daemon's message limit.
PROMPT_HEADROOM = 4096
# How long requests asked just before stdin ended get to be answered.
EOF_GRACE = 5.0


def log(message: str) -> None:
    print(f"agentctl acp: {message}", file=sys.stderr, flush=True)


def _cwd(params: Any) -> str:
    cwd: str = field(params, "cwd", str)
    if not os.path.isabs(cwd):
        raise RpcFailure(INVALID_PARAMS, f"cwd: must be an absolute path, not {cwd!r}")
    return cwd


def prompt_text(blocks: Any) -> str:
    """The run's prompt from ACP content blocks: the text, then each resource as context naming its URI."""
    if not isinstance(blocks, list) or not blocks:
        raise RpcFailure(INVALID_PARAMS, "prompt: must be a non-empty array of content blocks")
    texts: list[str] = []
    context: list[str] = []
    for i, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "resource" and isinstance(block.get("resource"), dict):
            resource = block["resource"]
            uri = resource.get("uri")
            if isinstance(resource.get("text"), str):
                context.append(f"Context from {uri}:\n{resource['text']}")
            else:
                raise RpcFailure(INVALID_PARAMS, f"prompt[{i}]: only text resources are supported ({uri})")
        elif kind == "resource_link" and isinstance(block.get("uri"), str):
            name = block.get("name")
            context.append(f"Linked resource: {block['uri']}" + (f" ({name})" if name else ""))
        elif kind in ("image", "audio"):
            raise RpcFailure(
                INVALID_PARAMS, f"prompt[{i}]: {kind} content is not supported (promptCapabilities.{kind} is false)"
            )
        else:
            raise RpcFailure(INVALID_PARAMS, f"prompt[{i}]: not a content block this agent takes ({kind!r})")
    return "\n\n".join(["\n".join(texts), *context] if texts else context)


class Prompt:
    """One session/prompt of ours, waiting for its run's run.complete."""

    def __init__(self, session_id: str, run_id: str) -> None:
        self.stream = RunStream(session_id, run_id, end_line=False)
        self.done = trio.Event()
        self.answer: dict[str, Any] | None = None
        self.failure: str | None = None

    def fail(self, reason: str) -> None:
        if not self.done.is_set():
            self.failure = reason
            self.done.set()

    def take(self, envelope: dict[str, Any]) -> None:
        _, outcome = self.stream.handle(envelope)
        if outcome is None:
            return
        reason = "cancelled" if outcome.cancelled or self.stream.cancel_requested else None
        reason = reason or stop_reason(envelope["payload"])
        if reason is None or (reason == "end_turn" and outcome.error):
            self.failure = outcome.error or "the run failed"
        else:
            self.answer = {"stopReason": reason}
        self.done.set()


class Then:
    """A handler's result and what to do once it is written: session/load goes live only after its answer."""

    def __init__(self, result: Any, after: Callable[[], Awaitable[None]]) -> None:
        self.result = result
        self.after = after


class Session:
    def __init__(
        self, session_id: str, workspace_id: str, root: str, model: str, mcp_servers: list[dict[str, Any]]
    ) -> None:
        self.id = session_id
        self.workspace_id = workspace_id
        self.root = root
        self.model = model
        #: The editor's MCP servers as McpServerSpec maps: the daemon keeps them in memory only, so a
        #: restarted one is given them again.
        self.mcp_servers = mcp_servers
        self.view = SessionView(session_id, root)
        self.prompts: dict[str, Prompt] = {}
        # request_id -> the scope of its session/request_permission, cancelled when another client answers.
        self.asking: dict[str, trio.CancelScope] = {}
        #: While session/load replays, live events wait here (None once live): the spec puts the replay first.
        self.held: list[dict[str, Any]] | None = None


class Bridge:
    def __init__(
        self, stdout: trio.abc.SendStream, *, model: str | None, socket: str | None, rpc: Connection | None = None
    ) -> None:
        self.rpc = rpc or Connection()
        self._stdout = stdout
        self._write_lock = trio.Lock()
        self._model = model
        self._socket = socket
        self._client: Client | None = None
        # Why the last connection attempt failed, said once on stderr until one succeeds.
        self._connect_error: str | None = None
        self._connecting = trio.Lock()
        # True from a connection's loss until the next one is made: that one is said too.
        self._lost = False
        self._first_answered = trio.Event()
        # The daemon's limit on a message: one bigger would close the connection every session shares.
        self._max_message = 0
        self.sessions: dict[str, Session] = {}
        self._feeds: dict[str, trio.Event] = {}
        # workspace_id -> the seq of the last event its feed handed out: the `since` of its next one.
        self._last_seq: dict[str, int] = {}
        self._calls: dict[int, tuple[trio.Event, list[Response]]] = {}
        # The notes about the editor's MCP servers said on stderr: its every session/new brings the same list.
        self._mcp_told: set[str] = set()
        self._nursery: trio.Nursery | None = None
        self._methods: dict[str, Callable[[Any], Awaitable[Any]]] = {
            "initialize": self.initialize,
            "session/new": self.session_new,
            "session/load": self.session_load,
            "session/list": self.session_list,
            "session/prompt": self.session_prompt,
            "session/set_config_option": self.set_config_option,
        }

    # --- the life

    async def run(self, stdin: trio.abc.ReceiveStream, first: Event | None = None, *, answered: bool = False) -> None:
        """Serve until stdin ends; `first` is a message read already, `answered` says initialize was answered."""
        if answered:
            self._first_answered.set()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._connect)
            async with trio.open_nursery() as requests:
                if first is not None:
                    await self._take(first, requests)
                await self._read(stdin, requests)
                # The editor asked, then closed stdin (a script piping requests in): what it asked is
                # answered, within a bound. A prompt is not waited for: its run goes on in the daemon.
                requests.cancel_scope.deadline = trio.current_time() + EOF_GRACE
                for prompt in self._prompts():
                    prompt.fail("stdin closed")
            nursery.cancel_scope.cancel()

    async def _connect(self) -> None:
        # The client library costs more to import than the rest of the bridge; the editor's
        # first request (initialize) is answered before it is paid for.
        with trio.move_on_after(CONNECT_DELAY):
            await self._first_answered.wait()
        with contextlib.suppress(RpcFailure):
            await self.client()

    async def client(self) -> Client:
        """The daemon's connection; a lost one is made again, as the first was, by the request that needs it.

        Again on demand rather than by a background retry: no loop can outlast the
        editor's interest, and a daemon stopped on purpose is started again only when
        the editor asks for something.
        """
        async with self._connecting:
            if self._client is None or not self._client.connected:
                await self._reconnect()
            assert self._client is not None
            return self._client

    async def _reconnect(self) -> None:
        assert self._nursery is not None
        try:
            client: Client = await self._nursery.start(self._hold)
            # Each workspace the editor's sessions are in, fed again from the last event seen:
            # what happened while the daemon was away comes first.
            self._feeds.clear()
            for workspace_id, root in {s.workspace_id: s.root for s in self.sessions.values()}.items():
                await self._reopen(client, workspace_id, root)
            # A restarted daemon has none of the sessions' MCP servers: it keeps them in memory only.
            for session in [s for s in self.sessions.values() if s.mcp_servers]:
                refused = await self._give_servers(client, session)
                if refused is not None:
                    await self._tell_refusal(session, refused)
        except Exception as exc:
            if self._connect_error is None:
                log(f"cannot reach agentd: {exc}")
            self._connect_error = f"cannot reach agentd: {exc}"
            raise RpcFailure(INTERNAL_ERROR, self._connect_error) from None
        self._connect_error = None
        if self._lost:
            self._lost = False
            log("reconnected to agentd")

    async def _hold(self, task_status: trio.TaskStatus[Client] = trio.TASK_STATUS_IGNORED) -> None:
        """One connection, held until it is lost: then its prompts end, and the next request connects again."""
        from agentctl.client import open_client

        async with open_client(self._socket, start_daemon=True) as client:
            hello = {"client_name": "agentctl acp", "client_version": agentd.__version__}
            self._max_message = int((await client.call("initialize", hello)).get("max_message_size") or 0)
            self._client = client
            task_status.started(client)
            # The notifications no subscription takes (none are expected) end with the connection.
            async for _ in client.notifications:
                pass
        self._lost = True
        log(f"agentd connection lost ({client.close_reason}); reconnecting at the next request")
        # Their run.complete can no longer come: the runs in flight were interrupted with the connection.
        for prompt in self._prompts():
            prompt.fail(f"agentd connection lost ({client.close_reason}): the prompt's run was interrupted")

    async def _reopen(self, client: Client, workspace_id: str, root: str) -> None:
        try:
            workspace = await client.open_workspace(root)
        except RpcError as exc:
            workspace = None
            log(f"{root}: cannot be opened again ({exc}): its sessions end here")
        if workspace is None or workspace.id != workspace_id:
            for session in [s for s in self.sessions.values() if s.workspace_id == workspace_id]:
                del self.sessions[session.id]
            self._last_seq.pop(workspace_id, None)
            return
        await self._ensure_feed(client, workspace_id)

    async def _read(self, stdin: trio.abc.ReceiveStream, nursery: trio.Nursery) -> None:
        while True:
            # What was read before the bridge began comes first.
            while (event := self.rpc.next_event()) is not None:
                await self._take(event, nursery)
            try:
                data = await stdin.receive_some(READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not data:
                return
            self.rpc.receive_data(data)

    def _prompts(self) -> list[Prompt]:
        return [prompt for session in self.sessions.values() for prompt in session.prompts.values()]

    async def _take(self, event: Event, nursery: trio.Nursery) -> None:
        if isinstance(event, Request):
            nursery.start_soon(self._answer, event)
        elif isinstance(event, Notification):
            if event.method == "session/cancel":
                nursery.start_soon(self._guarded, self.session_cancel, event.params)
            # Other notifications are for extensions this agent does not have: ignored, as the spec says.
        elif isinstance(event, Response):
            waiting = self._calls.pop(event.id, None)
            if waiting is not None:
                waiting[1].append(event)
                waiting[0].set()
        else:
            log(event.message)
            if event.answer:
                await self.write(self.rpc.error(event.id, event.code, event.message))

    async def write(self, data: bytes) -> None:
        async with self._write_lock:
            try:
                await self._stdout.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the editor went away; stdin's end follows

    async def notify_update(self, session_id: str, update: dict[str, Any]) -> None:
        await self.write(self.rpc.notify("session/update", {"sessionId": session_id, "update": update}))

    async def _answer(self, request: Request) -> None:
        try:
            await self._answer_one(request)
        finally:
            self._first_answered.set()

    async def _answer_one(self, request: Request) -> None:
        handler = self._methods.get(request.method)
        if handler is None:
            await self.write(self.rpc.error(request.id, METHOD_NOT_FOUND, f"method not found: {request.method}"))
            return
        try:
            result = await handler(request.params)
        except RpcFailure as exc:
            await self.write(self.rpc.error(request.id, exc.code, exc.message, exc.data))
        except RpcError as exc:
            await self.write(self.rpc.error(request.id, INTERNAL_ERROR, f"agentd: {exc}"))
        except ConnectionLost as exc:
            await self.write(self.rpc.error(request.id, INTERNAL_ERROR, f"agentd connection lost: {exc}"))
        except Exception as exc:
            # One request's bug must not end the editor's every session.
            traceback.print_exc(file=sys.stderr)
            await self.write(self.rpc.error(request.id, INTERNAL_ERROR, f"internal error: {exc}"))
        else:
            if isinstance(result, Then):
                await self.write(self.rpc.result(request.id, result.result))
                await result.after()
            else:
                await self.write(self.rpc.result(request.id, result))

    async def _guarded(self, handler: Callable[[Any], Awaitable[Any]], params: Any) -> None:
        """A notification's handler: no one to answer, so a failure is only logged."""
        try:
            await handler(params)
        except RpcFailure as exc:
            log(exc.message)
        except (RpcError, ConnectionLost) as exc:
            log(f"agentd: {exc}")
        except Exception:
            traceback.print_exc(file=sys.stderr)

    async def call_editor(self, method: str, params: Any) -> Response:
        """A request to the editor; cancelling the wait makes its late answer a stray that is ignored."""
        msg_id, data = self.rpc.request(method, params)
        done = trio.Event()
        slot: list[Response] = []
        self._calls[msg_id] = (done, slot)
        try:
            await self.write(data)
            await done.wait()
        finally:
            self._calls.pop(msg_id, None)
            self.rpc.abandon(msg_id)
        return slot[0]

    # --- initialize

    async def initialize(self, params: Any) -> dict[str, Any]:
        return initialize_result(params)

    # --- sessions

    def _session(self, params: Any) -> Session:
        session_id: str = field(params, "sessionId", str)
        session = self.sessions.get(session_id)
        if session is None:
            raise RpcFailure(INVALID_PARAMS, f"sessionId: no session {session_id!r} here (session/new or session/load)")
        return session

    async def _models(self, client: Client) -> tuple[list[str], str]:
        listing = await client.call("models.list")
        names = [str(m["name"]) for m in listing.get("models", []) if m.get("kind") != "provider"]
        current = self._model or listing.get("default") or (names[0] if names else "echo")
        if current not in names:
            names.insert(0, current)
        return names, current

    def _config_options(self, names: list[str], current: str) -> list[dict[str, Any]]:
        return [
            {
                "id": "model",
                "name": "Model",
                "description": "The agentd model this session's prompts run on",
                "category": "model",
                "type": "select",
                "currentValue": current,
                "options": [{"value": name, "name": name} for name in names],
            }
        ]

    # --- the editor's MCP servers

    def _editor_servers(self, params: Any) -> list[dict[str, Any]]:
        """The request's mcpServers as agentd's specs; what was renamed or left out is said once on stderr."""
        servers = editor_servers(params.get("mcpServers"))
        for note in servers.notes:
            if note not in self._mcp_told:
                self._mcp_told.add(note)
                log(note)
        return servers.specs

    async def _give_servers(self, client: Client, session: Session) -> str | None:
        """The session's servers to the daemon, in place of those it had; why it refused them, or None.

        A refusal (a server it will not run) leaves the session as it was: the
        editor's request goes on, and the user is told.
        """
        names = ", ".join(spec["name"] for spec in session.mcp_servers) or "none"
        params = {"workspace_id": session.workspace_id, "session_id": session.id, "servers": session.mcp_servers}
        try:
            await client.call("session.mcp_servers", params)
        except RpcError as exc:
            log(f"agentd refused the MCP servers of session {session.id} ({names}): {exc}")
            return str(exc)
        return None

    async def _tell_refusal(self, session: Session, reason: str) -> None:
        await self.notify_update(session.id, refusal_update(reason, f"note_{uuid.uuid4().hex}"))

    async def _open(self, client: Client, cwd: str) -> tuple[str, str]:
        """The workspace of `cwd`, fed: its id, and its root as the daemon resolved it (the updates' paths)."""
        try:
            workspace = await client.open_workspace(cwd)
        except RpcError as exc:
            raise RpcFailure(INVALID_PARAMS, f"cwd: {exc}") from None
        await self._ensure_feed(client, workspace.id)
        return workspace.id, workspace.path

    async def session_new(self, params: Any) -> Then:
        cwd = _cwd(params)
        servers = self._editor_servers(params)
        client = await self.client()
        workspace_id, root = await self._open(client, cwd)
        created = await client.create_session(workspace_id)
        names, current = await self._models(client)
        session = self.sessions[created.id] = Session(created.id, workspace_id, root, current, servers)
        refused = await self._give_servers(client, session) if servers else None

        async def tell() -> None:
            # After the answer: the editor knows the session only from it.
            if refused is not None:
                await self._tell_refusal(session, refused)

        return Then({"sessionId": created.id, "configOptions": self._config_options(names, current)}, tell)

    async def session_load(self, params: Any) -> Then:
        session_id: str = field(params, "sessionId", str)
        cwd = _cwd(params)
        servers = self._editor_servers(params)
        client = await self.client()
        workspace_id, root = await self._open(client, cwd)
        ids = {"workspace_id": workspace_id, "session_id": session_id}
        try:
            messages = await client.call("session.messages", ids)
        except RpcError as exc:
            raise RpcFailure(INVALID_PARAMS, f"sessionId: {exc}") from None
        _, current = await self._models(client)
        session = Session(session_id, workspace_id, root, current, servers)
        # Known before the replay, so that no live event falls between the two; held until the answer.
        session.held = []
        self.sessions[session_id] = session
        # Requests that wait already were handed out when the feed subscribed, before this session was known.
        waiting = await client.call("permission.list", {"workspace_id": workspace_id})
        for update in session.view.replay(messages):
            await self.notify_update(session_id, update)
        # The loading editor's list is the session's, even an empty one: servers an earlier editor gave
        # it (or this one, before its user changed them) stop. An empty list refused misses nothing.
        refused = await self._give_servers(client, session)
        if refused is not None and servers:
            await self._tell_refusal(session, refused)

        async def go_live() -> None:
            held, session.held = session.held or [], None
            for payload in waiting:
                if payload.get("session_id") == session_id:
                    await self._dispatch({"type": events.PERMISSION_REQUEST, "payload": payload})
            for envelope in held:
                await self._dispatch(envelope)

        return Then(None, go_live)

    async def session_list(self, params: Any) -> dict[str, Any]:
        cwd = field(params, "cwd", str, required=False) if params is not None else None
        client = await self.client()
        found: list[tuple[str, dict[str, Any]]] = []
        if cwd is not None:
            workspace = await client.open_workspace(cwd)
            found = [(workspace.path, s) for s in await client.call("session.list", {"workspace_id": workspace.id})]
        else:
            for entry in await client.call("session.list_all"):
                found += [(entry["workspace"]["path"], s) for s in entry["sessions"]]
        return {
            "sessions": [
                {
                    "sessionId": s["id"],
                    "cwd": path,
                    "title": s["title"],
                    "updatedAt": datetime.datetime.fromtimestamp(s["updated_at"], datetime.UTC).isoformat(),
                }
                for path, s in found
            ]
        }

    async def set_config_option(self, params: Any) -> dict[str, Any]:
        session = self._session(params)
        config_id = field(params, "configId", str)
        value = field(params, "value", str)
        if config_id != "model":
            raise RpcFailure(INVALID_PARAMS, f"configId: no option {config_id!r} (there is 'model')")
        names, _ = await self._models(await self.client())
        if value not in names:
            raise RpcFailure(INVALID_PARAMS, f"value: no model {value!r} (there are {', '.join(names)})")
        session.model = value
        return {"configOptions": self._config_options(names, value)}

    # --- prompts

    async def session_prompt(self, params: Any) -> dict[str, Any]:
        session = self._session(params)
        text = prompt_text(params.get("prompt"))
        client = await self.client()
        size = len(text.encode())
        if self._max_message and size > self._max_message - PROMPT_HEADROOM:
            limit = self._max_message - PROMPT_HEADROOM
            raise RpcFailure(INVALID_PARAMS, f"prompt: {size} bytes, more than agentd takes ({limit})")
        run_id = new_run_id()
        # Known before agent.send: the run's events may come before its reply.
        prompt = session.prompts[run_id] = Prompt(session.id, run_id)
        session.view.started(run_id)
        try:
            send = {"workspace_id": session.workspace_id, "session_id": session.id, "prompt": text}
            await client.call("agent.send", send | {"run_id": run_id, "model": session.model})
            if prompt.stream.cancel_requested:
                # The editor cancelled before the daemon had the run, when agent.cancel found nothing to end.
                await client.cancel(session.workspace_id, session.id, run_id)
            await prompt.done.wait()
        finally:
            session.prompts.pop(run_id, None)
        if prompt.failure is not None:
            raise RpcFailure(INTERNAL_ERROR, prompt.failure)
        assert prompt.answer is not None
        return prompt.answer | await self._usage(client, session)

    async def _usage(self, client: Client, session: Session) -> dict[str, Any]:
        """The session's token counts, as PromptResponse's `usage` (totals across the session's turns).

        Not `usage_update`: that one needs the model's context window, which
        agentd's configuration does not give. Nothing when the session's models
        counted no tokens (the built-in ones), or when the daemon cannot say.
        """
        try:
            got = await client.call("session.get", {"workspace_id": session.workspace_id, "session_id": session.id})
        except (RpcError, ConnectionLost):
            return {}
        prompt_tokens, completion_tokens = got.get("prompt_tokens", 0), got.get("completion_tokens", 0)
        if not prompt_tokens and not completion_tokens:
            return {}
        total = prompt_tokens + completion_tokens
        return {"usage": {"totalTokens": total, "inputTokens": prompt_tokens, "outputTokens": completion_tokens}}

    async def session_cancel(self, params: Any) -> None:
        session = self._session(params)
        client = await self.client()
        for run_id, prompt in list(session.prompts.items()):
            prompt.stream.cancel_requested = True
            await client.cancel(session.workspace_id, session.id, run_id)

    # --- the daemon's events

    async def _ensure_feed(self, client: Client, workspace_id: str) -> None:
        ready = self._feeds.get(workspace_id)
        if ready is None:
            ready = self._feeds[workspace_id] = trio.Event()
            assert self._nursery is not None
            self._nursery.start_soon(self._feed, client, workspace_id, ready)
        await ready.wait()

    async def _feed(self, client: Client, workspace_id: str, ready: trio.Event) -> None:
        try:
            closed: Any = None
            async with client.subscribe(workspace_id, since=self._last_seq.get(workspace_id)) as subscription:
                ready.set()
                while not subscription.over:
                    envelope = await subscription._next_envelope()
                    self._last_seq[workspace_id] = subscription.last_seq
                    if envelope.get("type") == events.EVENTS_GAP and envelope["payload"].get("reason"):
                        gap = envelope["payload"]["reason"]
                        log(f"what happened while agentd was away could not all be replayed ({gap})")
                    await self._dispatch(envelope)
                    closed = envelope["payload"] if envelope.get("type") == events.WORKSPACE_CLOSED else None
            if isinstance(closed, dict) and closed.get("reason") == "shutdown":
                # The daemon is going away, and the connection with it: its sessions are kept for the next one.
                return
            reason = "the workspace closed"
        except ConnectionLost:
            # The connection's holder says so and ends the prompts; the next connection feeds this again.
            return
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            reason = f"internal error: {exc}"
        finally:
            ready.set()
            # A feed of an earlier connection must not take the place of the current one's.
            if self._feeds.get(workspace_id) is ready:
                del self._feeds[workspace_id]
        self._last_seq.pop(workspace_id, None)
        log(reason)
        # Their run.complete can no longer come this way: the prompts end with the feed, not never.
        for session in list(self.sessions.values()):
            if session.workspace_id == workspace_id:
                del self.sessions[session.id]
                for prompt in session.prompts.values():
                    prompt.fail(reason)

    async def _dispatch(self, envelope: dict[str, Any]) -> None:
        payload = envelope.get("payload")
        if not isinstance(payload, dict):
            return
        session = self.sessions.get(str(payload.get("session_id")))
        if session is None:
            return
        if session.held is not None:
            session.held.append(envelope)
            return
        for update in session.view.take(envelope):
            await self.notify_update(session.id, update)
        kind = envelope.get("type")
        if kind == events.PERMISSION_REQUEST and payload.get("request_id") not in session.asking:
            scope = session.asking[payload["request_id"]] = trio.CancelScope()
            assert self._nursery is not None
            self._nursery.start_soon(self._guarded, self._ask, (session, payload, scope))
        elif kind == events.PERMISSION_RESOLVED:
            request_id = str(payload.get("request_id"))
            if request_id in session.asking:
                session.asking.pop(request_id).cancel()
        for prompt in list(session.prompts.values()):
            prompt.take(envelope)

    async def _ask(self, args: tuple[Session, dict[str, Any], trio.CancelScope]) -> None:
        session, payload, scope = args
        with scope:
            params = {"sessionId": session.id} | permission_params(payload, session.root)
            response = await self.call_editor("session/request_permission", params)
            outcome = response.result.get("outcome") if isinstance(response.result, dict) else None
            action = grant_action(outcome) if response.error is None else "deny"
            client = await self.client()
            grant = {"workspace_id": session.workspace_id, "request_id": payload["request_id"], "action": action}
            # `resolved: false` means another client answered first: the editor's answer is void.
            await client.call("permission.grant", grant)


async def serve(model: str | None, socket: str | None, rpc: Connection, first: Event | None, answered: bool) -> None:
    stdin = trio.lowlevel.FdStream(os.dup(0))
    stdout = trio.lowlevel.FdStream(os.dup(1))
    # fd 1 now leads to stderr: whatever else writes there cannot break the editor's stream.
    os.dup2(2, 1)
    async with stdin, stdout:
        await Bridge(stdout, model=model, socket=socket, rpc=rpc).run(stdin, first, answered=answered)


def main(model: str | None, socket: str | None, rpc: Connection, first: Event | None, answered: bool) -> int:
    """The bridge, after `agentctl.acp._early` read the first message (`first`, unless it answered it)."""
    try:
        trio.run(serve, model, socket, rpc, first, answered)
    except KeyboardInterrupt:
        return 130
    return 0
