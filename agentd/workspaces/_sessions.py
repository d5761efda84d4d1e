"""What clients ask of a workspace's sessions: the use cases behind the session and agent methods.

The method table decodes a request, calls one of these, and encodes what it
returns; the rules live here: a send is idempotent by run_id, stored before it
is accepted, and names an untitled session; a session with a run cannot be
deleted. Every refusal is a domain error (`agentd.errors`).
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Awaitable, Callable

import trio

from agentd.errors import Conflict, InvalidRequest, NotFound
from agentd.models import ModelRegistry, UnknownModelError
from agentd.permissions import rule_problem
from agentd.protocol import (
    CancelResult,
    Message,
    QueueCleared,
    QueuedPrompt,
    SendResult,
    Session,
    events,
    run_complete,
    unstructure,
)
from agentd.pubsub import Broker
from agentd.runs import Closing, Dispatcher, Run, RunIndex
from agentd.store import RunRecord, SessionRecord, Store

__all__ = ["DEFAULT_TITLE", "SessionRequests", "session_title"]

DEFAULT_TITLE = "New session"
_UNTITLED = ("", DEFAULT_TITLE)
_TITLE_LENGTH = 60
_MAX_RUN_ID = 128


def session_title(prompt: str) -> str:
    """A title from a prompt: its first line, whitespace collapsed, shortened."""
    first = next((line for line in prompt.splitlines() if line.strip()), prompt)
    title = " ".join(first.split())
    return title if len(title) <= _TITLE_LENGTH else title[: _TITLE_LENGTH - 1].rstrip() + "…"


def _no_session(session_id: str) -> NotFound:
    return NotFound(f"session_id: no such session {session_id!r}")


class SessionRequests:
    def __init__(
        self,
        workspace_id: str,
        store: Store,
        broker: Broker,
        dispatcher: Dispatcher,
        runs: RunIndex,
        models: ModelRegistry,
        publish_session_state: Callable[[str], Awaitable[None]],
    ) -> None:
        self._workspace_id = workspace_id
        self._store = store
        self._broker = broker
        self._dispatcher = dispatcher
        self._runs = runs
        self._models = models
        self._publish_session_state = publish_session_state

    def view(self, record: SessionRecord) -> Session:
        """A session as clients see it: the stored record, and whether it is running something now."""
        return Session(
            id=record.id,
            workspace_id=record.workspace_id,
            title=record.title,
            created_at=record.created_at,
            updated_at=record.updated_at,
            message_count=record.message_count,
            busy=self._dispatcher.is_busy(record.id),
            prompt_tokens=record.prompt_tokens,
            completion_tokens=record.completion_tokens,
        )

    async def _record(self, session_id: str) -> SessionRecord:
        record = await self._store.get_session(self._workspace_id, session_id)
        if record is None:
            raise _no_session(session_id)
        return record

    # --- sessions

    async def create(self, title: str | None) -> Session:
        record = await self._store.create_session(self._workspace_id, title or DEFAULT_TITLE)
        session = self.view(record)
        self._broker.publish(events.SESSION_CREATED, unstructure(session))
        return session

    async def list_all(self) -> list[Session]:
        records = await self._store.list_sessions(self._workspace_id)
        records.sort(key=lambda r: r.updated_at, reverse=True)
        return [self.view(r) for r in records]

    async def get(self, session_id: str) -> Session:
        return self.view(await self._record(session_id))

    async def delete(self, session_id: str) -> Session:
        record = await self._record(session_id)
        if self._dispatcher.is_busy(record.id):
            raise Conflict(f"session {record.id} has a run in progress; cancel it first (agent.cancel)")
        deleted = await self._store.delete_session(self._workspace_id, record.id)
        if deleted is None:
            raise _no_session(session_id)
        session = self.view(deleted)
        self._broker.publish(events.SESSION_DELETED, unstructure(session))
        return session

    async def messages(self, session_id: str) -> list[Message]:
        record = await self._record(session_id)
        return await self._store.list_messages(record.id)

    # --- prompts

    async def send(
        self,
        session_id: str,
        prompt: str,
        run_id: str | None,
        model: str | None,
        allow: list[str] | None = None,
    ) -> SendResult:
        """Accept a prompt as a run: stored first, then reserved in the session's lane.

        A run_id the daemon knows is the same request again (answered with that
        run, nothing started) or a mistake (another prompt under that id).
        `allow`: the run's own permission rules, kept with the run in memory only.
        """
        if not prompt.strip():
            raise InvalidRequest("prompt: must not be empty")
        for index, rule in enumerate(allow or ()):
            problem = rule_problem(rule)
            if problem is not None:
                raise InvalidRequest(f"allow[{index}]: {rule!r} is not a usable rule: {problem}")
        run_id = run_id if run_id is not None else uuid.uuid4().hex
        if not run_id or len(run_id) > _MAX_RUN_ID:
            raise InvalidRequest(f"run_id: must be 1 to {_MAX_RUN_ID} characters")
        if not run_id.isprintable():
            # An id is shown in terminals and logs, other clients' too: a control character in it could rewrite them.
            raise InvalidRequest(f"run_id: {run_id!r} has a control character; printable characters only")
        record = await self._record(session_id)
        stored = await self._store.get_run(run_id)
        # The live index is checked after the await, with no checkpoint before
        # the accept: two sends racing with one run_id cannot both start a run.
        live = self._runs.get(run_id)
        if live is not None:
            return _resend(run_id, prompt, session_id, live.session_id, live.prompt, live.state.value)
        if stored is not None:
            return _resend(run_id, prompt, session_id, stored.session_id, stored.prompt, stored.state)
        if model is not None:
            # Refused before anything is stored: a name the registry cannot resolve
            # would only make a run that fails, in a session left with nothing else.
            try:
                self._models.resolve_name(model)
            except UnknownModelError as exc:
                raise InvalidRequest(f"model: {exc}") from None
        run = Run(run_id, self._workspace_id, record.id, prompt, model, allow=tuple(allow or ()))
        dispatcher = self._dispatcher
        # From here the run is the workspace's: a client that hangs up now must
        # not leave it half accepted.
        with trio.CancelScope(shield=True):
            # Its place in the session's queue, should it have to wait.
            position = len(dispatcher.queued(record.id)) if dispatcher.is_busy(record.id) else None
            try:
                # Stored before it is accepted: a send the store cannot take is an
                # error reply, never a run the client was told failed.
                await self._store.create_run(
                    RunRecord(run.id, self._workspace_id, record.id, prompt, model or "", run.created_at), position
                )
            except sqlite3.IntegrityError:
                # The same run_id, sent twice at once: the other send stored it first.
                stored = await self._store.get_run(run_id)
                assert stored is not None
                return _resend(run_id, prompt, session_id, stored.session_id, stored.prompt, stored.state)
            try:
                queued = dispatcher.accept(run)
            except Closing:
                await self._store.finish_run(
                    run_complete(record.id, run_id, error="the workspace closed before the run started")
                )
                raise Conflict(f"workspace {self._workspace_id} is closing") from None
            # Runs ahead of this one, counted as it joins: the session's running one
            # and those queued before it.
            ahead = len(dispatcher.queued(record.id)) if queued else 0
            self._runs.add(run)
            if record.title in _UNTITLED and await self._store.title_untitled_session(
                record.id, session_title(prompt), _UNTITLED
            ):
                # An untitled session is named by its first prompt, so lists are readable.
                await self._publish_session_state(record.id)
        return SendResult(run_id=run_id, queued=queued, state="queued" if queued else "running", ahead=ahead)

    async def cancel(self, session_id: str, run_id: str | None) -> CancelResult:
        record = await self._record(session_id)
        if run_id is not None:
            active, cleared = self._dispatcher.cancel_run(record.id, run_id)
        else:
            active, cleared = self._dispatcher.cancel(record.id)
        return CancelResult(
            cancelled=active is not None,
            run_id=active.id if active is not None else None,
            cleared=len(cleared),
        )

    async def queue(self, session_id: str) -> list[QueuedPrompt]:
        record = await self._record(session_id)
        return [run.queued_prompt() for run in self._dispatcher.queued(record.id)]

    async def clear_queue(self, session_id: str) -> QueueCleared:
        record = await self._record(session_id)
        return QueueCleared(cleared=len(self._dispatcher.clear_queue(record.id)))


def _resend(run_id: str, prompt: str, session_id: str, known_session: str, known_prompt: str, state: str) -> SendResult:
    """A send with a run_id the daemon already knows: the same request again, or a mistake."""
    if prompt != known_prompt or session_id != known_session:
        raise Conflict(f"run_id: {run_id!r} is already used by another prompt")
    return SendResult(run_id=run_id, queued=state == "queued", state=state)
