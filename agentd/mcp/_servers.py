"""A workspace's MCP servers: which run, in its nursery, and what a run of a session may call.

`WorkspaceMcp.serve` is a task of the workspace; each server is a task in its
nursery under its own cancel scope, so a server is stopped (its process
group killed, shielded and bounded, in `_stdio`) when the configuration drops
or changes it, and all of them when the workspace closes. `configure` is
where the workspace says which servers it has now; a server whose
configuration is unchanged is left running.

A run never waits on a server beyond `wait_starting`'s bound; after that it
sees whatever is ready at each model turn (`tools`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import trio

from agentd.protocol import McpServerView, McpStatus, events, unstructure

from ._supervisor import McpServer

if TYPE_CHECKING:
    from agentd.pubsub import Broker
    from agentd.tools import ToolSpec

    from ._config import McpServerConfig

__all__ = ["WorkspaceMcp"]

log = logging.getLogger("agentd.mcp")

_Key = tuple[str, str | None, str]
# Shorter values (a flag like "1", a port) are no credential, and replacing them would garble results.
_SHORTEST_SECRET = 8


def _key(config: McpServerConfig) -> _Key:
    return (config.source, config.session_id, config.name)


class _Entry:
    def __init__(self, server: McpServer, scope: trio.CancelScope | None) -> None:
        self.server = server
        self.scope = scope
        self.done = trio.Event()


class WorkspaceMcp:
    def __init__(self, workspace_id: str, root: str, broker: Broker) -> None:
        self._workspace_id = workspace_id
        self._root = root
        self._broker = broker
        self._entries: dict[_Key, _Entry] = {}
        # The project's servers that wait for the user's trust: shown, never started.
        self._untrusted: list[McpServerConfig] = []
        self._nursery: trio.Nursery | None = None
        self._closed = False

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Until cancelled: the servers run in here, and are all stopped on the way out."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._closed = True
            self._nursery = None
            for entry in self._entries.values():
                entry.server.stopped()

    # --- what the workspace has

    def configure(self, servers: Sequence[McpServerConfig], untrusted: Sequence[McpServerConfig] = ()) -> None:
        """These are the workspace's servers now: start the new, stop the gone, restart the changed."""
        wanted = {_key(config): config for config in servers}
        for key, entry in list(self._entries.items()):
            if wanted.get(key) != entry.server.config:
                self._stop(key, entry)
        for key, config in wanted.items():
            if key not in self._entries:
                self._start(key, config)
        changed_untrusted = [c.name for c in untrusted] != [c.name for c in self._untrusted]
        self._untrusted = list(untrusted)
        if changed_untrusted:
            for config in self._untrusted:
                self._publish(self._untrusted_view(config))

    def set_session(self, session_id: str, servers: Sequence[McpServerConfig]) -> None:
        """The session's own servers are now `servers` (each with source "session" and this session_id)."""
        kept = [e.server.config for k, e in self._entries.items() if not (k[0] == "session" and k[1] == session_id)]
        self.configure([*kept, *servers], self._untrusted)

    def configured(self, source: str) -> list[McpServerConfig]:
        """The servers from `source` the workspace has now."""
        return [entry.server.config for key, entry in self._entries.items() if key[0] == source]

    def _start(self, key: _Key, config: McpServerConfig) -> None:
        server = McpServer(config, self._root, self._changed)
        if not config.enabled or self._nursery is None or self._closed:
            self._entries[key] = _Entry(server, None)
            if not config.enabled:
                self._publish(server.view())
            return
        entry = _Entry(server, trio.CancelScope())
        self._entries[key] = entry
        self._nursery.start_soon(self._supervise, entry)
        self._publish(server.view())

    async def _supervise(self, entry: _Entry) -> None:
        assert entry.scope is not None
        try:
            with entry.scope:
                await entry.server.run()
        except Exception:
            # A bug in the supervisor: this server stops, nothing else does.
            log.exception("mcp %s: its supervisor failed; the server is stopped", entry.server.name)
        finally:
            entry.done.set()

    def _stop(self, key: _Key, entry: _Entry) -> None:
        del self._entries[key]
        if entry.scope is not None:
            entry.scope.cancel()
        entry.server.stopped()
        self._publish(entry.server.view())

    def _changed(self, server: McpServer) -> None:
        if self._entries.get(_key(server.config), None) is not None:
            self._publish(server.view())

    def _publish(self, view: McpServerView) -> None:
        self._broker.publish(events.MCP_STATUS, unstructure(McpStatus(self._workspace_id, view)))

    @staticmethod
    def _untrusted_view(config: McpServerConfig) -> McpServerView:
        return McpServerView(
            name=config.name,
            source=config.source,
            transport=config.transport,
            state="untrusted",
        )

    # --- what runs see

    def _visible(self, session_id: str) -> list[McpServer]:
        return [
            entry.server
            for (source, owner, _name), entry in self._entries.items()
            if source != "session" or owner == session_id
        ]

    async def wait_starting(self, session_id: str, timeout: float) -> None:
        """Wait, at most `timeout` seconds, for this session's servers still in their first start."""
        with trio.move_on_after(timeout):
            for server in self._visible(session_id):
                if server.config.enabled:
                    await server.first_start_over.wait()

    def tools(self, session_id: str, taken: set[str]) -> dict[str, ToolSpec]:
        """The tools of this session's servers that are ready now, by their model-facing name."""
        from ._tools import mcp_tool_specs

        return mcp_tool_specs(self._visible(session_id), taken)

    def secrets(self, session_id: str) -> dict[str, str]:
        """The credentials this session's servers were given (`env` and `headers` values), with what to show instead.

        A server may hand its token back in a result (an error that quotes its
        configuration, say): like a provider's key, it must not reach the
        model, the store or the events.
        """
        found: dict[str, str] = {}
        for server in self._visible(session_id):
            config = server.config
            for key, value in config.env.items():
                found[value] = f"[{config.name} env {key}]"
            for key, value in config.headers.items():
                # "Bearer TOKEN": the token alone is a secret too.
                for part in (value, value.split(" ", 1)[-1]):
                    found[part] = f"[{config.name} header {key}]"
        return {value: label for value, label in found.items() if len(value) >= _SHORTEST_SECRET}

    def views(self) -> list[McpServerView]:
        """Every server: the configuration's, the project's (also untrusted), then the sessions'."""
        order = {"config": 0, "workspace": 1, "session": 2}
        shown = [entry.server.view() for entry in self._entries.values()]
        shown += [self._untrusted_view(config) for config in self._untrusted]
        return sorted(shown, key=lambda view: order.get(view.source, 3))

    def counts(self) -> dict[str, int]:
        """Servers by state."""
        counted: dict[str, int] = {}
        for view in self.views():
            counted[view.state] = counted.get(view.state, 0) + 1
        return counted
