"""`run.changes` and `run.revert`: a run's file changes listed as diffs, and put back.

A revert is all or nothing when it refuses: if any file cannot be reverted
(someone changed it since the run, or its content before the run was too
large to keep), nothing is written and every such file is named. With
`force`, files changed since are reverted too, and the rest are reverted
even when some cannot be. A file the system will not let us write (a
permission, a full disk) is named as refused, the others are still put back,
and a later revert tries again the files still not reverted.

A revert is not a run: it writes no changes of its own to be undone. The
files it put back are marked reverted, so a second revert of the run is
refused as already done.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import attrs
import trio

from agentd.errors import Conflict, InvalidRequest, NotFound
from agentd.protocol import FileChange, FileRefused, FileReverted, RunChangeList, RunReverted
from agentd.store import FileChangeRecord, FileSnapshot, Store

from ._diff import Action, action_of, differs, unified_diff
from ._files import ABSENT, Unreadable, read_snapshot, remove_empty_dirs, remove_file, write_file
from ._record import DEFAULT_LIMITS, ChangeLimits

if TYPE_CHECKING:
    from agentd.runs import RunIndex

__all__ = ["ChangeRequests"]


@attrs.frozen
class _Run:
    id: str
    workspace_id: str
    session_id: str
    # "queued", "running" or "done".
    state: str


@attrs.frozen
class _Change:
    record: FileChangeRecord
    action: Action
    # As the run left it (or, when the run never finished writing it, as it is now).
    after: FileSnapshot
    # As it is now; None when it cannot be read as a file.
    current: FileSnapshot | None

    @property
    def changed_since(self) -> bool:
        return self.current is None or differs(self.current, self.after)


class ChangeRequests:
    def __init__(self, store: Store, runs: RunIndex, limits: ChangeLimits = DEFAULT_LIMITS) -> None:
        self._store = store
        self._runs = runs
        self._limits = limits
        # One revert at a time: two at once could each find the same file to put back.
        self._revert_lock = trio.Lock()

    async def pick_run(self, run_id: str | None, workspace_id: str | None, session_id: str | None) -> str:
        """The run a request names: `run_id`, or the last run of the session `workspace_id`/`session_id`."""
        if run_id is not None:
            if workspace_id is not None or session_id is not None:
                raise InvalidRequest("run_id: give either run_id or workspace_id and session_id, not both")
            return run_id
        if workspace_id is None or session_id is None:
            raise InvalidRequest("run_id: required, unless workspace_id and session_id name a session (its last run)")
        if await self._store.get_session(workspace_id, session_id) is None:
            raise NotFound(f"session_id: no such session {session_id!r}")
        last = await self._store.last_run(session_id)
        if last is None:
            raise NotFound(f"session {session_id} has no runs")
        return last

    async def _run(self, run_id: str) -> _Run:
        live = self._runs.get(run_id)
        if live is not None and live.complete is None:
            return _Run(live.id, live.workspace_id, live.session_id, live.state.value)
        record = await self._store.get_run(run_id)
        if record is None:
            raise NotFound(f"run_id: no such run {run_id!r}")
        return _Run(record.id, record.workspace_id, record.session_id, record.state)

    async def _root(self, workspace_id: str) -> str:
        workspace = await self._store.get_workspace(workspace_id)
        if workspace is None or not await trio.to_thread.run_sync(os.path.isdir, workspace.path):
            shown = workspace.path if workspace is not None else workspace_id
            raise NotFound(f"the run's workspace directory {shown} no longer exists")
        return workspace.path

    async def _changes(self, run: _Run) -> list[_Change]:
        records = await self._store.file_changes(run.id)
        if not records:
            return []
        root = await self._root(run.workspace_id)
        return await trio.to_thread.run_sync(_compare, root, records, self._limits.max_diff_bytes)

    async def list(self, run_id: str) -> RunChangeList:
        run = await self._run(run_id)
        changes = await self._changes(run)
        limit = self._limits.max_diff_bytes

        def render() -> list[FileChange]:
            return [
                FileChange(
                    path=c.record.path,
                    action=c.action,
                    diff=unified_diff(c.record.path, c.record.before, c.after, limit),
                    changed_since=c.changed_since,
                    reverted=c.record.reverted_at is not None,
                )
                for c in changes
            ]

        files = await trio.to_thread.run_sync(render)
        done = [c.record.reverted_at for c in changes if c.record.reverted_at is not None]
        reverted_at = max(done) if done and len(done) == len(changes) else None
        return RunChangeList(run_id=run.id, session_id=run.session_id, files=files, reverted_at=reverted_at)

    async def revert(self, run_id: str, force: bool) -> RunReverted:
        async with self._revert_lock:
            run = await self._run(run_id)
            if run.state != "done":
                raise Conflict(
                    f"run {run_id} is still {run.state}; revert it once it has ended (agent.cancel ends it now)"
                )
            changes = await self._changes(run)
            pending = [c for c in changes if c.record.reverted_at is None]
            if changes and not pending:
                raise Conflict(f"run {run_id} was already reverted")
            if not pending:
                return RunReverted(run_id=run.id, session_id=run.session_id, reverted=[], refused=[])
            root = await self._root(run.workspace_id)
            # The files and the record of what was put back must agree: once
            # begun, this finishes (bounded by the run's files on a local disk).
            with trio.CancelScope(shield=True):
                reverted, refused = await trio.to_thread.run_sync(_revert, root, pending, force)
                if reverted:
                    await self._store.mark_files_reverted(run.id, [f.path for f in reverted])
            return RunReverted(run_id=run.id, session_id=run.session_id, reverted=reverted, refused=refused)


def _compare(root: str, records: list[FileChangeRecord], keep_up_to: int) -> list[_Change]:
    """The records' files as the run left them and as they are now; those the run did not change left out."""
    changes: list[_Change] = []
    for record in records:
        try:
            current: FileSnapshot | None = read_snapshot(root, record.path, keep_up_to)
        except (OSError, Unreadable):
            current = None
        # No after: the daemon stopped mid-write, and what is there now is the run's.
        after = record.after or current or ABSENT
        action = action_of(record.before, after)
        if action is not None:
            changes.append(_Change(record, action, after, current))
    return changes


def _revert(root: str, changes: list[_Change], force: bool) -> tuple[list[FileReverted], list[FileRefused]]:
    refused: list[FileRefused] = []
    ready: list[_Change] = []
    for change in changes:
        path, before = change.record.path, change.record.before
        if not before.kept:
            reason = f"its content before the run was too large to keep ({before.size} bytes)"
            refused.append(FileRefused(path=path, reason=reason))
        elif change.changed_since and not force:
            refused.append(FileRefused(path=path, reason="changed since the run (it is no longer as the run left it)"))
        else:
            ready.append(change)
    if refused and not force:
        return [], refused
    reverted: list[FileReverted] = []
    for change in ready:
        path, before = change.record.path, change.record.before
        try:
            if before.exists:
                assert before.content is not None
                write_file(root, path, before.content, before.mode)
            else:
                remove_file(root, path)
        except (OSError, ValueError) as exc:
            reason = f"cannot be put back: {getattr(exc, 'strerror', None) or exc}"
            refused.append(FileRefused(path=path, reason=reason))
            continue
        reverted.append(FileReverted(path=path, action=change.action))
    # Directories the run created for files it created go too, as far as they are empty now.
    created_dirs = {c.record.created_dir for c in ready if not c.record.before.exists and c.record.created_dir}
    for directory in sorted(created_dirs, key=lambda d: d.count("/"), reverse=True):
        remove_empty_dirs(root, directory)
    return reverted, refused
