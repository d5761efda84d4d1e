"""A run's file changes as its tools make them: each file kept before its first write, and after each.

Nothing the user made may be lost to an agent: a write goes ahead only once
the file's previous content (or its absence) is in the store. When that
cannot be done (the database refuses, the path is a symlink or a directory)
`before_write` raises ToolError and the tool does not write.

What is kept, per file: its bytes before the run's first write and after the
run's last, each up to `ChangeLimits.max_file_bytes`, and up to
`max_run_bytes` in all for one run. Past either, only the size and the
SHA-256 are kept: the change is still listed and counted, and a revert can
still tell whether someone changed the file since, but it cannot put back a
before it does not have, and says so by name.
"""

from __future__ import annotations

import logging
import os

import attrs
import trio

from agentd.store import KEEP_FILE_BYTES, KEEP_RUN_BYTES, FileSnapshot, Store, StoreError
from agentd.tools._base import ToolError

from ._diff import differs
from ._files import Unreadable, missing_top_dir, read_snapshot, resolve_in_root

__all__ = ["DEFAULT_LIMITS", "ChangeLimits", "RunChanges"]

log = logging.getLogger(__name__)


@attrs.frozen
class ChangeLimits:
    # Bytes of one file's content kept, before and after each.
    max_file_bytes: int = KEEP_FILE_BYTES
    # Bytes of content kept for one run in all.
    max_run_bytes: int = KEEP_RUN_BYTES
    # Bytes of a file (either side) beyond which run.changes says "too large to diff".
    max_diff_bytes: int = 1024 * 1024


DEFAULT_LIMITS = ChangeLimits()


class RunChanges:
    """The `Changes` of one run (agentd.tools._base): what its write and edit tools did, recorded."""

    def __init__(
        self,
        store: Store,
        workspace_root: str,
        run_id: str,
        session_id: str,
        limits: ChangeLimits = DEFAULT_LIMITS,
    ) -> None:
        self._store = store
        self._root = os.path.realpath(workspace_root)
        self._run_id = run_id
        self._session_id = session_id
        self._limits = limits
        # The name a tool used -> the file it reaches, as recorded.
        self._recorded: dict[str, str] = {}
        self._before: dict[str, FileSnapshot] = {}
        self._after: dict[str, FileSnapshot] = {}
        # Bytes of content kept for this run so far: befores, and each file's latest after.
        self._kept = 0

    @property
    def count(self) -> int:
        """Files the run created, changed or deleted: those not as they were before its first write."""
        return sum(1 for path, after in self._after.items() if differs(self._before[path], after))

    def _room(self) -> int:
        return max(0, min(self._limits.max_file_bytes, self._limits.max_run_bytes - self._kept))

    def _refuse(self, path: str, why: str) -> ToolError:
        return ToolError(f"{path}: not written: {why}")

    async def before_write(self, path: str) -> None:
        if path in self._recorded:
            return
        try:
            recorded, before, created_dir = await trio.to_thread.run_sync(self._read_before, path)
        except (ValueError, Unreadable) as exc:
            raise self._refuse(path, f"it {exc}") from None
        except OSError as exc:
            raise self._refuse(path, f"its content could not be read to keep it ({exc.strerror or exc})") from None
        if recorded in self._before:
            # Another name for a file this run has already recorded.
            self._recorded[path] = recorded
            return
        try:
            await self._store.record_file_before(self._run_id, self._session_id, recorded, before, created_dir)
        except StoreError as exc:
            raise self._refuse(path, f"its previous content could not be kept ({exc})") from None
        self._kept += len(before.content or b"")
        self._recorded[path] = recorded
        self._before[recorded] = before

    def _read_before(self, path: str) -> tuple[str, FileSnapshot, str | None]:
        recorded = resolve_in_root(self._root, path)
        before = read_snapshot(self._root, recorded, self._room())
        created_dir = None if before.exists else missing_top_dir(self._root, recorded)
        return recorded, before, created_dir

    async def after_write(self, path: str) -> None:
        recorded = self._recorded.get(path)
        if recorded is None:
            return  # its before could not be kept, so the tool did not write
        previous = self._after.get(recorded)
        # This file's earlier after is replaced: its bytes are room again.
        room = self._room() + (len(previous.content or b"") if previous is not None else 0)
        room = min(room, self._limits.max_file_bytes)
        try:
            after = await trio.to_thread.run_sync(self._read_after, recorded, room)
        except (OSError, Unreadable) as exc:
            # The tool wrote, or tried: its result says so. Without an after,
            # run.changes compares with the file as it is when asked.
            log.warning("run %s: cannot read %s after a write: %s", self._run_id, recorded, exc)
            return
        try:
            await self._store.record_file_after(self._run_id, recorded, after)
        except StoreError:
            log.exception("run %s: recording %s after a write failed", self._run_id, recorded)
            return
        if previous is not None:
            self._kept -= len(previous.content or b"")
        self._kept += len(after.content or b"")
        self._after[recorded] = after

    def _read_after(self, recorded: str, room: int) -> FileSnapshot:
        after = read_snapshot(self._root, recorded, room)
        return attrs.evolve(after, mode=None)  # only a before's mode is restored
