"""The state store: workspaces, sessions, messages and runs.

Every method is async so the backend can move off the trio thread (SQLite behind
`trio.to_thread`) without touching a caller; this backend keeps everything in
process memory, so a restart forgets it.
"""

from __future__ import annotations

import time
import uuid

import attrs

from agentd.protocol import Message, RunComplete, Workspace

__all__ = ["RunRecord", "SessionRecord", "Store", "new_id"]


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


@attrs.define
class SessionRecord:
    id: str
    workspace_id: str
    title: str
    created_at: float
    updated_at: float
    message_count: int = 0


@attrs.define
class RunRecord:
    id: str
    workspace_id: str
    session_id: str
    prompt: str
    model: str
    created_at: float
    complete: RunComplete | None = None
    finished_at: float | None = None


class Store:
    def __init__(self) -> None:
        self._workspace_by_path: dict[str, Workspace] = {}
        self._workspaces: dict[str, Workspace] = {}
        self._sessions: dict[str, SessionRecord] = {}
        self._messages: dict[str, list[Message]] = {}
        self._message_index: dict[str, tuple[str, int]] = {}
        self._runs: dict[str, RunRecord] = {}

    async def aclose(self) -> None:
        pass

    # --- workspaces

    async def workspace_for_path(self, path: str) -> Workspace:
        """The workspace of a resolved directory path, created on first use."""
        ws = self._workspace_by_path.get(path)
        if ws is None:
            ws = Workspace(id=new_id("ws"), path=path)
            self._workspace_by_path[path] = ws
            self._workspaces[ws.id] = ws
        return ws

    async def get_workspace(self, workspace_id: str) -> Workspace | None:
        return self._workspaces.get(workspace_id)

    # --- sessions

    async def create_session(self, workspace_id: str, title: str) -> SessionRecord:
        now = time.time()
        rec = SessionRecord(new_id("ses"), workspace_id, title, now, now)
        self._sessions[rec.id] = rec
        self._messages[rec.id] = []
        return attrs.evolve(rec)

    async def get_session(self, workspace_id: str, session_id: str) -> SessionRecord | None:
        rec = self._sessions.get(session_id)
        if rec is None or rec.workspace_id != workspace_id:
            return None
        return attrs.evolve(rec)

    async def list_sessions(self, workspace_id: str) -> list[SessionRecord]:
        return [attrs.evolve(r) for r in self._sessions.values() if r.workspace_id == workspace_id]

    async def delete_session(self, workspace_id: str, session_id: str) -> SessionRecord | None:
        rec = self._sessions.get(session_id)
        if rec is None or rec.workspace_id != workspace_id:
            return None
        del self._sessions[session_id]
        for msg in self._messages.pop(session_id, []):
            self._message_index.pop(msg.id, None)
        return rec

    # --- messages

    async def add_message(
        self,
        session_id: str,
        role: str,
        text: str,
        run_id: str | None,
        finish_reason: str | None = None,
    ) -> Message:
        rec = self._sessions[session_id]
        now = time.time()
        msg = Message(
            id=new_id("msg"),
            session_id=session_id,
            role=role,
            text=text,
            run_id=run_id,
            created_at=now,
            finish_reason=finish_reason,
        )
        messages = self._messages[session_id]
        self._message_index[msg.id] = (session_id, len(messages))
        messages.append(msg)
        rec.message_count += 1
        rec.updated_at = now
        return msg

    async def update_message(self, message_id: str, text: str, finish_reason: str | None) -> Message:
        session_id, index = self._message_index[message_id]
        messages = self._messages[session_id]
        msg = attrs.evolve(messages[index], text=text, finish_reason=finish_reason)
        messages[index] = msg
        self._sessions[session_id].updated_at = time.time()
        return msg

    async def list_messages(self, session_id: str) -> list[Message]:
        return list(self._messages.get(session_id, ()))

    # --- runs

    async def create_run(self, record: RunRecord) -> None:
        self._runs[record.id] = record

    async def finish_run(self, run_id: str, complete: RunComplete) -> None:
        rec = self._runs[run_id]
        rec.complete = complete
        rec.finished_at = time.time()

    async def get_run(self, run_id: str) -> RunRecord | None:
        return self._runs.get(run_id)
