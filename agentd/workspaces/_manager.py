"""The daemon's workspaces: opening by path, finding by id, closing them all."""

from __future__ import annotations

import os
import stat

import attrs
import trio

from agentd._memory import release_freed_memory
from agentd.errors import Conflict, InvalidRequest, NotFound
from agentd.models import ModelRegistry
from agentd.protocol import Session, WorkspaceSessions
from agentd.pubsub import DropStats
from agentd.runs import RunIndex
from agentd.shutdown import Shutdown
from agentd.store import Store
from agentd.utf8 import undecodable

from ._workspace import WorkspaceHost

__all__ = ["Workspaces", "resolve_directory"]


def resolve_directory(path: str) -> str:
    """The canonical form of a workspace path: absolute, symlinks followed.

    Relative paths are refused: the daemon's working directory means nothing
    to a client, so the client resolves them.
    """
    if not path:
        raise InvalidRequest("path: must not be empty")
    if "\x00" in path:
        raise InvalidRequest("path: must not contain NUL")
    if not os.path.isabs(path):
        raise InvalidRequest(f"path: must be absolute, got {path!r}")
    try:
        resolved = os.path.realpath(path)
        mode = os.stat(resolved).st_mode
    except FileNotFoundError:
        raise NotFound(f"path: no such directory: {path}") from None
    except OSError as exc:
        # Not readable by the daemon (a /proc entry of another process, say), a
        # symlink loop, a name too long: the reason is the operating system's.
        raise InvalidRequest(f"path: cannot use {path}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(mode):
        raise InvalidRequest(f"path: not a directory: {path}")
    where = undecodable(resolved)
    if where is not None:
        # Reached through a symlink: the path as sent was UTF-8, its target is not.
        shown = resolved.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raise InvalidRequest(
            f"path: {path} resolves to {shown}, which is not valid UTF-8 ({where}); agentd keeps paths as UTF-8"
        )
    return resolved


class Workspaces:
    def __init__(
        self,
        nursery: trio.Nursery,
        store: Store,
        models: ModelRegistry,
        stats: DropStats,
        *,
        must_deliver_timeout: float,
        idle_grace: float,
        runs: RunIndex,
        shutdown: Shutdown,
    ) -> None:
        self._nursery = nursery
        self._store = store
        self._models = models
        self._stats = stats
        self.must_deliver_timeout = must_deliver_timeout
        self._idle_grace = idle_grace
        self._runs = runs
        self._shutdown = shutdown
        self._hosts: dict[str, WorkspaceHost] = {}
        # Two clients opening one directory at once must get one workspace.
        self._open_lock = trio.Lock()

    def __len__(self) -> int:
        return len(self._hosts)

    def hosts(self) -> list[WorkspaceHost]:
        return list(self._hosts.values())

    async def open(self, path: str, client_id: int) -> WorkspaceHost:
        resolved = resolve_directory(path)
        while True:
            async with self._open_lock:
                record = await self._store.workspace_for_path(resolved)
                host = self._hosts.get(record.id)
                if host is None:
                    host = WorkspaceHost(
                        record.id,
                        record.path,
                        store=self._store,
                        models=self._models,
                        stats=self._stats,
                        must_deliver_timeout=self.must_deliver_timeout,
                        idle_grace=self._idle_grace,
                        runs=self._runs,
                        shutdown=self._shutdown,
                    )
                    await self._nursery.start(self._serve, host)
                if not host.closing:
                    host.claim(client_id)
                    return host
            # Reopening a directory whose workspace is on its way out: let it
            # finish (its runs are completing) and start afresh. The lock is not
            # held meanwhile, so other directories open without waiting.
            await host.closed.wait()

    async def _serve(self, host: WorkspaceHost, *, task_status: trio.TaskStatus[None]) -> None:
        self._hosts[host.id] = host
        try:
            await host.serve(task_status=task_status)
        finally:
            if self._hosts.get(host.id) is host:
                del self._hosts[host.id]
            # A quiet moment: what the workspace's runs allocated is free now.
            release_freed_memory()

    async def all_sessions(self) -> list[WorkspaceSessions]:
        """Every workspace the database knows, open or not, with its sessions, most recently updated first.

        A session id from another directory is found here. Only an open
        workspace can have a busy session.
        """
        live = {h.id: h for h in self._hosts.values() if h.started and not h.ended}
        groups: dict[str, WorkspaceSessions] = {}
        for workspace, record in await self._store.all_sessions():
            group = groups.get(workspace.id)
            if group is None:
                group = groups[workspace.id] = WorkspaceSessions(workspace=workspace, sessions=[])
            host = live.get(workspace.id)
            busy = host is not None and host.dispatcher.is_busy(record.id)
            group.sessions.append(Session(**{**attrs.asdict(record), "busy": busy}))
        return list(groups.values())

    def get(self, workspace_id: str) -> WorkspaceHost:
        """The open workspace `workspace_id`, ready for new work."""
        host = self._hosts.get(workspace_id)
        # Not yet started (its id is known from an earlier opening) or already
        # ended: not open, as far as any client is concerned.
        if host is None or not host.started or host.ended:
            raise NotFound(f"workspace_id: no open workspace {workspace_id!r} (open it with workspace.open)")
        if host.closing:
            raise Conflict(f"workspace {workspace_id} is closing")
        return host

    def release(self, workspace_id: str, client_id: int) -> bool:
        host = self._hosts.get(workspace_id)
        if host is None:
            return False
        host.release(client_id)
        return True

    async def close_all(self, reason: str) -> None:
        """Cancel every run of every workspace and wait until each has its RunComplete."""
        hosts = list(self._hosts.values())
        for host in hosts:
            host.request_close(reason)
        for host in hosts:
            await host.closed.wait()
