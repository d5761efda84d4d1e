"""A stdio MCP server's process and its pipes: the streams the SDK's ClientSession speaks over.

The SDK's own `stdio_client` would do for a well-behaved server; this one is
ours because a server is the user's program, and whatever it writes must not
grow the daemon's memory or log without bound:

- a message (one stdout line) is read up to `MAX_MESSAGE_BYTES`; a longer one
  breaks the connection, which fails the calls waiting on it with a message
  that says why, and the server is started again;
- a line that is not JSON-RPC is logged (within the budget) and skipped, as
  servers that print to stdout by mistake are common;
- stderr goes to the daemon's log, one line at a time, each line cut at
  `STDERR_LINE_CHARS`, at most `STDERR_LINES_PER_MINUTE` lines a minute, with
  the values of the server's own `env` taken out;
- the process runs in its own process group, in the workspace's root, with a
  small clean environment (never the daemon's, which may hold provider keys),
  and the whole group is killed when the connection ends: on close, on
  shutdown, and after the server crashed (its children may live on).

The JSON-RPC messages themselves are the SDK's (`mcp_types`): nothing of the
protocol is written here.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import attrs
import trio

from agentd.redact import redact

if TYPE_CHECKING:
    from ._config import McpServerConfig

__all__ = ["MAX_MESSAGE_BYTES", "CannotStart", "Connection", "server_environment", "stdio_connection"]

log = logging.getLogger("agentd.mcp")

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
STDERR_LINE_CHARS = 500
STDERR_LINES_PER_MINUTE = 120
# Seconds a server has to exit after its stdin closed, then after SIGTERM, before SIGKILL.
EXIT_GRACE = 1.0
TERM_GRACE = 1.0
_READ_CHUNK = 64 * 1024
# What a server inherits from the daemon's environment: enough to find programs and a home.
_INHERITED = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR")
_SHORTEST_SECRET = 8


class CannotStart(Exception):
    """The server's program could not be started; the message names it and why."""


@attrs.define(eq=False)
class Connection:
    """The streams a ClientSession speaks over, and how the connection ended once it did."""

    read: Any
    write: Any
    # Set when the connection ended (the server exited, closed its stdout, broke the framing...).
    gone: trio.Event = attrs.field(factory=trio.Event)
    # Why, in words that follow "the connection ended: ".
    reason: str | None = None
    # The server's last line on stderr, which often says why it stopped.
    last_stderr: str | None = None

    def end(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        self.gone.set()


def server_environment(env: Mapping[str, str], base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The server's environment: the few inherited variables, then its configured `env` over them."""
    source = os.environ if base is None else base
    inherited = {name: source[name] for name in _INHERITED if name in source}
    return inherited | dict(env)


class _StderrLog:
    """A server's stderr, into the log line by line, within a per-minute budget."""

    def __init__(self, name: str, secrets: Mapping[str, str], connection: Connection) -> None:
        self._name = name
        self._connection = connection
        self._secrets = secrets
        self._line = bytearray()
        self._cut = False
        self._window_start = trio.current_time()
        self._logged = 0
        self._dropped = 0

    def feed(self, data: bytes | bytearray) -> None:
        data = bytes(data)
        while data:
            newline = data.find(b"\n")
            part, data = (data, b"") if newline < 0 else (data[:newline], data[newline + 1 :])
            room = STDERR_LINE_CHARS * 4 - len(self._line)  # bytes: up to 4 per character
            if len(part) > room:
                part, self._cut = part[: max(room, 0)], True
            self._line += part
            if newline >= 0:
                self._emit()

    def finish(self) -> None:
        if self._line:
            self._emit()
        if self._dropped:
            log.info("mcp %s: %d more lines of stderr were not logged", self._name, self._dropped)
            self._dropped = 0

    def _emit(self) -> None:
        text = self._line.decode("utf-8", "replace").rstrip("\r")
        cut = self._cut or len(text) > STDERR_LINE_CHARS
        self._line.clear()
        self._cut = False
        now = trio.current_time()
        if now - self._window_start >= 60:
            if self._dropped:
                log.info("mcp %s: %d lines of stderr were not logged", self._name, self._dropped)
            self._window_start, self._logged, self._dropped = now, 0, 0
        if text.strip():
            self._connection.last_stderr = redact(text.strip()[:200], self._secrets)
        if self._logged >= STDERR_LINES_PER_MINUTE:
            self._dropped += 1
            return
        self._logged += 1
        text = redact(text[:STDERR_LINE_CHARS], self._secrets)
        log.info("mcp %s: %s%s", self._name, text, " [...]" if cut else "")


def _exited(code: int) -> str:
    return f"it exited (killed by signal {-code})" if code < 0 else f"it exited (exit status {code})"


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # the group is gone already


async def _stop(process: trio.Process, name: str) -> None:
    """End the server and its whole group: stdin closed, then SIGTERM, then SIGKILL. Shielded and bounded."""
    with trio.CancelScope(shield=True):
        pgid = process.pid  # start_new_session: the leader's pid is the group's id
        try:
            if process.stdin is not None:
                await process.stdin.aclose()
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        with trio.move_on_after(EXIT_GRACE):
            await process.wait()
        if process.returncode is None:
            _signal_group(pgid, signal.SIGTERM)
            with trio.move_on_after(TERM_GRACE):
                await process.wait()
        # Also when the leader exited: what it started may still be running.
        _signal_group(pgid, signal.SIGKILL)
        with trio.move_on_after(TERM_GRACE):
            await process.wait()
        if process.returncode is None:
            log.warning("mcp %s: process %d is still alive after SIGKILL", name, process.pid)


@asynccontextmanager
async def stdio_connection(config: McpServerConfig, root: str) -> AsyncIterator[Connection]:
    """Start the server; yield its Connection, whose streams a ClientSession speaks over.

    Raises OSError when the program cannot be started. On the way out the
    server's process group is killed, shielded and bounded.
    """
    import anyio
    import mcp_types
    from mcp.shared.message import SessionMessage

    secrets = {value: f"[{key}]" for key, value in config.env.items() if len(value) >= _SHORTEST_SECRET}
    try:
        process = await trio.lowlevel.open_process(
            list(config.command),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=root,
            env=server_environment(config.env),
            start_new_session=True,
        )
    except OSError as exc:
        raise CannotStart(f"cannot start {config.command[0]!r}: {exc.strerror or exc}") from None
    incoming_send, incoming = anyio.create_memory_object_stream[Any](0)
    outgoing, outgoing_receive = anyio.create_memory_object_stream[Any](0)
    connection = Connection(incoming, outgoing)
    end = connection.end
    stderr_log = _StderrLog(config.name, secrets, connection)
    junk_logged = 0

    async def read_messages() -> None:
        nonlocal junk_logged
        assert process.stdout is not None
        buffer = bytearray()
        try:
            async with incoming_send:
                while True:
                    data = await process.stdout.receive_some(_READ_CHUNK)
                    if not data:
                        # Most often it exited: its exit status says more than the end of its stdout.
                        with trio.move_on_after(EXIT_GRACE):
                            await process.wait()
                        end(_exited(process.returncode) if process.returncode is not None else "it closed its stdout")
                        return
                    buffer += data
                    while (newline := buffer.find(b"\n")) >= 0:
                        line = bytes(buffer[:newline])
                        del buffer[: newline + 1]
                        if not line.strip():
                            continue
                        try:
                            message = mcp_types.jsonrpc_message_adapter.validate_json(line, by_name=False)
                        except ValueError:
                            if junk_logged < STDERR_LINES_PER_MINUTE:
                                junk_logged += 1
                                shown = redact(line[:200].decode("utf-8", "replace"), secrets)
                                log.info("mcp %s: skipped a stdout line that is not JSON-RPC: %s", config.name, shown)
                            continue
                        await incoming_send.send(SessionMessage(message))
                    if len(buffer) > MAX_MESSAGE_BYTES:
                        end(f"it sent a message over {MAX_MESSAGE_BYTES // (1024 * 1024)} MiB")
                        return
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, trio.ClosedResourceError):
            end("the connection was closed")
        except OSError as exc:
            end(f"reading its stdout failed: {exc}")

    async def write_messages() -> None:
        assert process.stdin is not None
        try:
            async with outgoing_receive:
                async for session_message in outgoing_receive:
                    text = session_message.message.model_dump_json(by_alias=True, exclude_unset=True)
                    await process.stdin.send_all(text.encode() + b"\n")
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, anyio.BrokenResourceError) as exc:
            end(f"writing to its stdin failed: {exc}")

    async def read_stderr() -> None:
        assert process.stderr is not None
        try:
            while data := await process.stderr.receive_some(_READ_CHUNK):
                stderr_log.feed(data)
        except (OSError, trio.ClosedResourceError):
            pass
        finally:
            stderr_log.finish()

    async def watch_exit() -> None:
        end(_exited(await process.wait()))

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_messages)
            nursery.start_soon(write_messages)
            nursery.start_soon(read_stderr)
            nursery.start_soon(watch_exit)
            try:
                yield connection
            finally:
                nursery.cancel_scope.cancel()
    finally:
        await _stop(process, config.name)
        for stream in (incoming, outgoing):
            stream.close()
        if connection.reason is not None:
            log.info("mcp %s: the connection ended: %s", config.name, connection.reason)
