"""Helpers the tests share: a daemon handle, event readers, raw wire access, the agentctl runner."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import trio

from agentctl.client import Client, event_params, open_client
from agentd.rpc import Notification, Refusal, Request, Response, RpcCodec

WAIT = 10.0  # the bound on any single wait in a test


class Daemon:
    """A running agentd and where to find it."""

    def __init__(self, proc: subprocess.Popen[bytes], socket_path: Path, log_path: Path) -> None:
        self.proc = proc
        self.socket_path = socket_path
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def client(self) -> Any:
        return open_client(self.socket_path)

    async def exited(self) -> int:
        """Its exit status, waited for (at most WAIT) without blocking trio."""
        return await trio.to_thread.run_sync(lambda: self.proc.wait(timeout=WAIT))

    def terminate(self, timeout: float = WAIT) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)


DaemonFactory = Callable[..., Daemon]


# --- talking to it ---------------------------------------------------------------


class Events:
    """The `event` notifications of one subscription, read with a bound on every wait."""

    def __init__(self, client: Client, subscription_id: str) -> None:
        self.client = client
        self.subscription_id = subscription_id
        self.seen: list[dict[str, Any]] = []

    async def next(self, timeout: float = WAIT) -> dict[str, Any]:
        with trio.fail_after(timeout):
            async for method, params in self.client.notifications:
                event = event_params(params) if method == "event" else None
                if event is not None and event["subscription_id"] == self.subscription_id:
                    self.seen.append(event)
                    return event
        raise AssertionError("the connection closed while waiting for an event")

    async def until(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = WAIT) -> dict[str, Any]:
        """The first event `predicate` accepts; `timeout` bounds the wait for each event."""
        while True:
            event = await self.next(timeout)
            if predicate(event):
                return event

    async def until_complete(self, run_id: str, timeout: float = WAIT) -> dict[str, Any]:
        """The run's RunComplete, whether it already went by or is still to come."""

        def is_it(e: dict[str, Any]) -> bool:
            return bool(e["type"] == "run.complete" and e["payload"]["run_id"] == run_id)

        for event in self.seen:
            if is_it(event):
                return event["payload"]  # type: ignore[no-any-return]
        return (await self.until(is_it, timeout))["payload"]  # type: ignore[no-any-return]

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.seen if e["type"] == kind]


class Workspace:
    """A client with an open workspace and a subscription to it."""

    def __init__(self, client: Client, workspace_id: str, events: Events) -> None:
        self.client = client
        self.id = workspace_id
        self.events = events

    async def new_session(self, title: str = "test") -> str:
        session = await self.client.call("session.create", {"workspace_id": self.id, "title": title})
        return str(session["id"])

    async def send(self, session_id: str, prompt: str | dict[str, Any], **extra: Any) -> dict[str, Any]:
        if isinstance(prompt, dict):
            prompt = json.dumps(prompt)
            extra.setdefault("model", "scripted")
        params = {"workspace_id": self.id, "session_id": session_id, "prompt": prompt, **extra}
        return await self.client.call("agent.send", params)  # type: ignore[no-any-return]

    async def cancel(self, session_id: str) -> dict[str, Any]:
        return await self.client.call(  # type: ignore[no-any-return]
            "agent.cancel", {"workspace_id": self.id, "session_id": session_id}
        )


async def open_workspace(client: Client, path: Path) -> Workspace:
    ws = await client.call("workspace.open", {"path": str(path)})
    sub = await client.call("events.subscribe", {"workspace_id": ws["id"]})
    return Workspace(client, ws["id"], Events(client, sub["subscription_id"]))


class RawConnection:
    """Bytes on the socket, for tests of the wire itself."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.codec = RpcCodec()
        self._msgid = 0

    async def send_bytes(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def request(self, method: object, params: object = None) -> int:
        self._msgid += 1
        if params is None:
            params = []
        await self.stream.send_all(msgpack.packb([0, self._msgid, method, params]))
        return self._msgid

    async def receive(self) -> Request | Response | Notification | Refusal | None:
        """The next message, or None at end of stream."""
        with trio.fail_after(WAIT):
            while True:
                message = self.codec.next_message()
                if message is not None:
                    return message
                data = await self.stream.receive_some(65536)
                if not data:
                    return None
                self.codec.receive_data(data)

    async def response(self, msgid: int) -> Response:
        while True:
            message = await self.receive()
            assert message is not None, "connection closed before the response"
            if isinstance(message, Response) and message.msgid == msgid:
                return message

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Response:
        return await self.response(await self.request(method, [params] if params is not None else []))

    async def closed_by_peer(self, timeout: float = WAIT) -> bool:
        """Whether the daemon closes this connection within `timeout`, reading past its notifications.

        False if a reply or a request arrives first (the connection is still
        served) or if it stays open that long.
        """
        with trio.move_on_after(timeout):
            while True:
                try:
                    message = await self.receive()
                except trio.BrokenResourceError:
                    return True
                except trio.TooSlowError:
                    return False
                if message is None:
                    return True
                if not isinstance(message, Notification):
                    return False
        return False


def nested_bytes(depth: int) -> bytes:
    """`depth` arrays, each holding the next, as msgpack: packed by hand, since
    msgpack's own packer refuses deep nesting in some of the versions we allow."""
    return b"\x91" * (depth - 1) + b"\x90"


async def open_raw(daemon: Daemon) -> RawConnection:
    return RawConnection(await trio.open_unix_socket(str(daemon.socket_path)))


def agentctl_command() -> list[str]:
    script = Path(sys.executable).parent / "agentctl"
    return [str(script)] if script.exists() else [sys.executable, "-m", "agentctl"]


async def run_agentctl(
    *args: str,
    env: dict[str, str],
    cwd: Path | None = None,
    stdin: bytes | None = None,
    timeout: float = WAIT * 2,
) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(timeout):
        return await trio.run_process(
            [*agentctl_command(), *args],
            env=env,
            cwd=cwd,
            stdin=stdin if stdin is not None else b"",
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


def delta_reaching(length: int) -> Callable[[dict[str, Any]], bool]:
    """An `Events.until` predicate: the delta whose text ends at `length`.

    Not the delta at a given offset: a subscriber whose queue filled gets
    consecutive deltas merged into one, which keeps the first one's offset.
    """

    def reaches(e: dict[str, Any]) -> bool:
        return bool(e["type"] == "message.delta" and e["payload"]["offset"] + len(e["payload"]["text"]) == length)

    return reaches


async def run_into_closed_pipe(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    """agentctl with a stdout whose reader has already gone, as after `| head -1` has read its line."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        with trio.fail_after(WAIT):
            return await trio.run_process(
                [*agentctl_command(), *args],
                env=env,
                cwd=cwd,
                stdin=b"",
                stdout=write_end,
                capture_stderr=True,
                check=False,
            )
    finally:
        os.close(write_end)


def write_config(env: dict[str, str], text: str) -> Path:
    """The user's config.toml, as the daemon started with `env` reads it."""
    path = Path(env["XDG_CONFIG_HOME"]) / "agentd" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def configure_loopback(
    env: dict[str, str],
    base_url: str,
    *,
    key_env: str,
    key: str,
    provider_type: str = "openai",
    max_retries: int = 0,
    default_model: str = "quick",
    extra: str = "",
) -> Path:
    """A provider `loop` at `base_url` (a loopback server), its key in `env`, and the alias `quick` for its model."""
    env[key_env] = key
    return write_config(
        env,
        f"""default_model = "{default_model}"

[providers.loop]
type = "{provider_type}"
base_url = "{base_url}"
api_key_env = "{key_env}"
max_retries = {max_retries}
{extra}
[models.quick]
provider = "loop"
model = "loop-model-1"
""",
    )


# --- processes -----------------------------------------------------------------------------------


def alive(pid: int) -> bool:
    """Whether process `pid` runs: neither gone nor a zombie waiting for its parent."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def gone(pid: int, timeout: float = WAIT) -> bool:
    """Whether process `pid` ends within `timeout` (polled: it is not ours to wait for)."""
    with trio.move_on_after(timeout):
        while alive(pid):
            await trio.sleep(0.05)
        return True
    return False
