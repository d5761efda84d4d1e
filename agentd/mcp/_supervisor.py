"""One MCP server's life in a workspace: started, listed, watched, restarted with backoff; and its calls.

`McpServer.run` is the server's task, in its workspace's MCP nursery, until
that nursery is cancelled: start (spawn or connect, `initialize`, list the
tools) within `startup_timeout`; ready until the connection ends; then
failed, and started again after a backoff that doubles from 1 s to 60 s (back
to 1 s after a minute of being ready). Whatever goes wrong in it is the
server's state, never the workspace's or a run's failure.

`call` is made from a run's task: every way it can go wrong (the server is
not ready, it crashes meanwhile, it never answers, it answers with something
invalid) ends as a ToolError for the model. A cancel of the run goes through.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import attrs
import trio

import agentd
from agentd.tools import ToolError

from ._names import tool_name
from ._stdio import CannotStart, Connection, stdio_connection

if TYPE_CHECKING:
    from agentd.protocol import McpServerView

    from ._config import McpServerConfig

__all__ = ["ListedTool", "McpServer"]

log = logging.getLogger("agentd.mcp")

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
# Ready this long, and a failure after is a new trouble: the backoff starts again from BACKOFF_FIRST.
BACKOFF_RESET = 60.0
# What one server may offer: more tools, or longer descriptions, are not shown to the model.
MAX_TOOLS = 200
MAX_LIST_PAGES = 20
MAX_DESCRIPTION_CHARS = 2000


@attrs.frozen
class ListedTool:
    """A tool as the server listed it."""

    name: str
    description: str
    input_schema: dict[str, Any]


def _leaf(exc: BaseException, kinds: tuple[type[Exception], ...]) -> BaseException | None:
    """`exc`, or the first exception of `kinds` inside the groups it is wrapped in; None if there is none."""
    if isinstance(exc, kinds):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            if (found := _leaf(inner, kinds)) is not None:
                return found
    return None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class McpServer:
    def __init__(self, config: McpServerConfig, root: str, on_change: Callable[[McpServer], None]) -> None:
        self.config = config
        self._root = root
        self._on_change = on_change
        self.state: str = "starting" if config.enabled else "disabled"
        self.error: str | None = None
        self.restarts = 0
        self._retry_at: float | None = None
        self.tools: tuple[ListedTool, ...] = ()
        # Set once the first start ended, ready or not: what a run's first turn may wait for.
        self.first_start_over = trio.Event()
        self._session: Any = None
        self._connection: Connection | None = None
        # Set by the server's notifications/tools/list_changed.
        self._tools_changed = trio.Event()

    @property
    def name(self) -> str:
        return self.config.name

    def view(self) -> McpServerView:
        from agentd.protocol import McpServerView

        retry_in = None
        if self.state == "failed" and self._retry_at is not None:
            retry_in = round(max(0.0, self._retry_at - trio.current_time()), 1)
        return McpServerView(
            name=self.name,
            source=self.config.source,
            transport=self.config.transport,
            state=self.state,  # type: ignore[arg-type]
            tools=[tool_name(self.name, tool.name) for tool in self.tools] if self.state == "ready" else [],
            error=self.error,
            restarts=self.restarts,
            retry_in=retry_in,
            session_id=self.config.session_id,
        )

    def _set(self, state: str, error: str | None = None) -> None:
        self.state = state
        if error is not None:
            self.error = error
        self._on_change(self)

    # --- the server's task

    async def run(self) -> None:
        """Start, serve and restart the server until cancelled; the process is gone when this returns."""
        backoff = BACKOFF_FIRST
        await load_sdk()
        try:
            while True:
                ready_at: float | None = None
                try:
                    async with self._connect() as (session, connection):
                        try:
                            with trio.fail_after(self.config.startup_timeout):
                                await session.initialize()
                                tools = await self._list_tools(session)
                        except trio.TooSlowError:
                            raise _StartFailed(
                                f"it did not start within {self.config.startup_timeout:g} s"
                                " (startup_timeout in its configuration)"
                            ) from None
                        except Exception as exc:
                            raise _StartFailed(self._failure(exc, connection)) from exc
                        self.tools, self._session, self._connection = tools, session, connection
                        ready_at = trio.current_time()
                        self.first_start_over.set()
                        log.info("mcp %s: ready, %d tools", self.name, len(tools))
                        self._set("ready")
                        await self._serve(session, connection)
                        error = f"the connection ended: {connection.reason}"
                except Exception as exc:
                    # The SDK's and the transport's task groups wrap what was raised inside them.
                    known = _leaf(exc, (_StartFailed, CannotStart))
                    error = str(known) if known is not None else self._failure(exc, self._connection)
                finally:
                    self._session = self._connection = None
                if ready_at is not None and trio.current_time() - ready_at >= BACKOFF_RESET:
                    backoff = BACKOFF_FIRST
                log.warning("mcp %s: failed (%s); starting it again in %g s", self.name, error, backoff)
                self._retry_at = trio.current_time() + backoff
                self.tools = ()
                self.first_start_over.set()
                self._set("failed", error)
                await trio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                self.restarts += 1
                self._retry_at = None
                self._set("starting")
        finally:
            self._session = self._connection = None
            self.tools = ()
            self.first_start_over.set()

    async def _serve(self, session: Any, connection: Connection) -> None:
        """Until the connection ends: list the tools again each time the server says they changed."""
        while True:
            changed = self._tools_changed = trio.Event()
            await _first_of(connection.gone, changed)
            if connection.gone.is_set():
                return
            with trio.fail_after(self.config.startup_timeout):
                self.tools = await self._list_tools(session)
            log.info("mcp %s: its tools changed, %d tools", self.name, len(self.tools))
            self._set("ready")

    async def _on_message(self, message: Any) -> None:
        from mcp_types import ToolListChangedNotification

        if isinstance(message, ToolListChangedNotification):
            self._tools_changed.set()

    def stopped(self) -> None:
        self.state = "stopped"

    @asynccontextmanager
    async def _connect(self) -> AsyncIterator[tuple[Any, Connection]]:
        from mcp import ClientSession
        from mcp_types import Implementation

        info = Implementation(name="agentd", version=agentd.__version__)
        stdio = self.config.url is None
        transport = stdio_connection(self.config, self._root) if stdio else _http_connection(self.config)
        async with transport as connection:
            async with ClientSession(
                connection.read, connection.write, client_info=info, message_handler=self._on_message
            ) as session:
                yield session, connection

    async def _list_tools(self, session: Any) -> tuple[ListedTool, ...]:
        listed: list[ListedTool] = []
        cursor: str | None = None
        for _page in range(MAX_LIST_PAGES):
            from mcp_types import PaginatedRequestParams

            result = await session.list_tools(params=PaginatedRequestParams(cursor=cursor) if cursor else None)
            for tool in result.tools:
                schema = tool.input_schema if isinstance(tool.input_schema, dict) else {}
                description = (tool.description or "")[:MAX_DESCRIPTION_CHARS]
                listed.append(ListedTool(tool.name, description, schema))
            cursor = result.next_cursor
            if not cursor or len(listed) >= MAX_TOOLS:
                break
        if len(listed) > MAX_TOOLS:
            log.warning("mcp %s: offers %d tools; the first %d are used", self.name, len(listed), MAX_TOOLS)
        return tuple(listed[:MAX_TOOLS])

    def _failure(self, exc: BaseException, connection: Connection | None) -> str:
        if connection is not None and connection.reason is not None:
            ending = f"the connection ended: {connection.reason}"
            if connection.last_stderr:
                ending += f"; its last line on stderr: {connection.last_stderr}"
            return ending
        return _describe(exc)

    # --- a run's calls

    async def call(self, tool: str, arguments: dict[str, Any]) -> Any:
        """The server's CallToolResult for `tool(arguments)`; ToolError for every way the call can fail."""
        from mcp.shared.exceptions import MCPError

        session, connection = self._session, self._connection
        name = self.name
        if session is None or connection is None:
            why = f": {self.error}" if self.error and self.state == "failed" else ""
            raise ToolError(f"MCP server {name!r} is {self.state}{why}; the call was not made")
        timeout = self.config.call_timeout
        with trio.move_on_after(timeout):
            try:
                return await session.call_tool(tool, arguments)
            except MCPError as exc:
                if connection.reason is not None:
                    raise ToolError(
                        f"MCP server {name!r}: the connection ended during the call ({connection.reason});"
                        " the server is being started again"
                    ) from None
                raise ToolError(f"MCP server {name!r} refused the call: {exc}") from None
            except Exception as exc:
                if connection.reason is not None:
                    raise ToolError(
                        f"MCP server {name!r}: the connection ended during the call ({connection.reason})"
                    ) from None
                raise ToolError(f"MCP server {name!r} sent an answer agentd cannot read: {_describe(exc)}") from None
        raise ToolError(
            f"MCP server {name!r} did not answer within {timeout:g} s (call_timeout in its configuration);"
            " the call was abandoned"
        )


async def _first_of(*events: trio.Event) -> None:
    """Wait until any of `events` is set."""
    async with trio.open_nursery() as nursery:

        async def wait(event: trio.Event) -> None:
            await event.wait()
            nursery.cancel_scope.cancel()

        for event in events:
            nursery.start_soon(wait, event)


# What the first server of the daemon's life imports.
_SDK_MODULES = ("mcp", "mcp_types", "mcp.shared.message", "mcp.shared.exceptions", "mcp.client.streamable_http")


def _import_sdk() -> None:
    for name in _SDK_MODULES:
        importlib.import_module(name)


async def load_sdk() -> None:
    """Import the SDK in a thread: its second or so of imports would otherwise stall every client's events."""
    if not all(name in sys.modules for name in _SDK_MODULES):
        await trio.to_thread.run_sync(_import_sdk)


class _StartFailed(Exception):
    """The server did not start; the message says why, for its state."""


@asynccontextmanager
async def _http_connection(config: McpServerConfig) -> AsyncIterator[Connection]:
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    assert config.url is not None
    async with httpx2.AsyncClient(
        headers=dict(config.headers), timeout=httpx2.Timeout(30.0, read=config.call_timeout + 5)
    ) as client:
        async with streamable_http_client(config.url, http_client=client) as (read, write):
            yield Connection(read, write)
