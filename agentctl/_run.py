"""`agentctl run`: send one prompt, stream its answer, exit with what became of it.

Exit codes: 0 the run completed, 1 the run failed (or was cancelled by someone
else), 2 usage, 3 the daemon could not be reached or the connection was lost
before the run's RunComplete (after trying `run.wait` on a new connection),
130 interrupted by Ctrl-C. It never exits 0 without a RunComplete.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import uuid
from pathlib import Path
from typing import Any, TextIO

import trio

from agentctl.autostart import DaemonUnavailable, ensure_daemon
from agentctl.client import Client, ConnectionLost, RpcError, event_params, open_client
from agentctl.runstream import (
    EXIT_INTERRUPTED,
    EXIT_LOST,
    EXIT_RUN_ERROR,
    EXIT_USAGE,
    Outcome,
    RunStream,
)
from agentd import __version__
from agentd.paths import resolve_socket_path

__all__ = ["run_command"]

# After the first Ctrl-C, how long to wait for the cancelled RunComplete.
CANCEL_GRACE = 5.0
_SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


def _read_prompt(args: argparse.Namespace) -> str | None:
    if args.prompt:
        return " ".join(args.prompt)
    if sys.stdin is None or sys.stdin.isatty():
        return None
    return sys.stdin.read()


def run_command(args: argparse.Namespace) -> int:
    prompt = _read_prompt(args)
    if prompt is None:
        print("agentctl run: no prompt given (pass it as arguments or on stdin)", file=sys.stderr)
        return EXIT_USAGE
    if not prompt.strip():
        print("agentctl run: the prompt is empty", file=sys.stderr)
        return EXIT_USAGE
    cwd = os.path.abspath(args.cwd or os.getcwd())
    if not os.path.isdir(cwd):
        print(f"agentctl run: --cwd: not a directory: {cwd}", file=sys.stderr)
        return EXIT_USAGE
    command = RunCommand(
        socket_path=resolve_socket_path(args.socket),
        cwd=cwd,
        prompt=prompt,
        model=args.model,
        session_id=args.session,
        continue_session=args.continue_,
        json_output=args.json,
        quiet=args.quiet,
    )
    return trio.run(command.main)


class RunCommand:
    def __init__(
        self,
        *,
        socket_path: Path,
        cwd: str,
        prompt: str,
        model: str | None,
        session_id: str | None,
        continue_session: bool,
        json_output: bool,
        quiet: bool,
        out: TextIO | None = None,
        err: TextIO | None = None,
    ) -> None:
        self.socket_path = socket_path
        self.cwd = cwd
        self.prompt = prompt
        self.model = model
        self.session_id = session_id
        self.continue_session = continue_session
        self.json_output = json_output
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.quiet = quiet
        self.run_id = uuid.uuid4().hex
        self.stream: RunStream | None = None
        self._client: Client | None = None
        self._forced_exit: int | None = None
        self._spinning = False
        self._workspace_id = ""
        self._stdout_broken = False

    async def main(self) -> int:
        with trio.open_signal_receiver(signal.SIGINT) as interrupts:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_interrupts, interrupts, nursery.cancel_scope)
                if self._spinner_wanted():
                    nursery.start_soon(self._spin)
                code = await self._drive()
                nursery.cancel_scope.cancel()
        self._stop_spinner()
        if self._forced_exit is not None:
            return self._forced_exit
        return code

    # --- the run

    async def _drive(self) -> int:
        try:
            await trio.to_thread.run_sync(ensure_daemon, self.socket_path)
        except DaemonUnavailable as exc:
            return self._fail(EXIT_LOST, f"cannot reach agentd: {exc}")
        try:
            async with open_client(self.socket_path) as client:
                self._client = client
                try:
                    subscription_id = await self._start(client)
                except RpcError as exc:
                    return self._fail(EXIT_RUN_ERROR, str(exc))
                except ConnectionLost as exc:
                    return self._fail(EXIT_LOST, f"lost the connection to agentd: {exc}")
                outcome = await self._follow(client, subscription_id)
                reason = client.close_reason
        except OSError as exc:
            return self._fail(EXIT_LOST, f"cannot connect to agentd at {self.socket_path}: {exc}")
        if outcome is None:
            outcome = await self._recover(reason or "connection closed")
        return self._finish(outcome)

    async def _start(self, client: Client) -> str:
        await client.call("initialize", {"client_name": "agentctl", "client_version": __version__})
        workspace = await client.call("workspace.open", {"path": self.cwd})
        workspace_id = workspace["id"]
        session_id = self.session_id
        if session_id is None and self.continue_session:
            sessions = await client.call("session.list", {"workspace_id": workspace_id})
            if sessions:
                session_id = max(sessions, key=lambda s: s["updated_at"])["id"]
        if session_id is None:
            title = self.prompt.strip().splitlines()[0][:60]
            session_id = (await client.call("session.create", {"workspace_id": workspace_id, "title": title}))["id"]
        else:
            await client.call("session.get", {"workspace_id": workspace_id, "session_id": session_id})
        # Subscribe before sending: the run's first event must not beat us to it.
        subscription = await client.call("events.subscribe", {"workspace_id": workspace_id})
        self.stream = RunStream(session_id, self.run_id)
        params: dict[str, Any] = {
            "workspace_id": workspace_id,
            "session_id": session_id,
            "prompt": self.prompt,
            "run_id": self.run_id,
        }
        if self.model:
            params["model"] = self.model
        self._workspace_id = workspace_id
        await client.call("agent.send", params)
        return str(subscription["subscription_id"])

    async def _follow(self, client: Client, subscription_id: str) -> Outcome | None:
        """Events until our RunComplete; None when the connection ends first."""
        stream = self.stream
        assert stream is not None
        async for method, params in client.notifications:
            if method != "event":
                continue
            event = event_params(params)
            if event is None or event.get("subscription_id") != subscription_id:
                continue
            text, outcome = stream.handle(event)
            if self.json_output:
                if stream.is_ours(event) or event.get("type") == "events.gap":
                    self._write(json.dumps(event, ensure_ascii=False) + "\n")
            elif text:
                self._write(text)
            if outcome is not None:
                return outcome
        return None

    async def _recover(self, reason: str) -> Outcome:
        """The connection dropped before our RunComplete: ask a new connection."""
        stream = self.stream
        assert stream is not None
        try:
            async with open_client(self.socket_path) as client:
                rc = await client.call("run.wait", {"run_id": self.run_id})
        except (OSError, ConnectionLost, RpcError) as exc:
            return Outcome(
                EXIT_LOST,
                f"lost the connection to agentd before the run completed ({reason}); run.wait: {exc}",
            )
        text, outcome = stream.complete(rc)
        if self.json_output:
            self._write(json.dumps({"type": "run.complete", "payload": rc}, ensure_ascii=False) + "\n")
        else:
            self._write(text)
        return outcome

    def _finish(self, outcome: Outcome) -> int:
        if outcome.error and outcome.exit_code != 0:
            self._note(outcome.error)
        return outcome.exit_code

    def _fail(self, code: int, message: str) -> int:
        self._note(message)
        return code

    # --- interrupts

    async def _watch_interrupts(self, interrupts: Any, scope: trio.CancelScope) -> None:
        async with trio.open_nursery() as nursery:
            async for _ in interrupts:
                stream, client = self.stream, self._client
                if self._forced_exit is not None or stream is None or client is None or stream.cancel_requested:
                    # Not started yet, or the second Ctrl-C: leave now.
                    self._forced_exit = EXIT_INTERRUPTED
                    scope.cancel()
                    return
                stream.cancel_requested = True
                self._note("cancelling... (Ctrl-C again to quit at once)", informational=True)
                nursery.start_soon(self._cancel_run, client, stream, scope)

    async def _cancel_run(self, client: Client, stream: RunStream, scope: trio.CancelScope) -> None:
        try:
            await client.call(
                "agent.cancel",
                {
                    "workspace_id": self._workspace_id,
                    "session_id": stream.session_id,
                    "run_id": stream.run_id,
                },
            )
        except (RpcError, ConnectionLost):
            pass
        # The cancelled RunComplete normally ends us before this does.
        await trio.sleep(CANCEL_GRACE)
        self._forced_exit = EXIT_INTERRUPTED
        scope.cancel()

    # --- output

    def _write(self, text: str) -> None:
        if not text or self._stdout_broken:
            return
        self._stop_spinner()
        try:
            self.out.write(text)
            self.out.flush()
        except BrokenPipeError:
            # The reader went away (`| head`); the run's outcome still decides the exit code.
            self._stdout_broken = True

    def _note(self, message: str, *, informational: bool = False) -> None:
        if self.quiet and informational:
            return
        self._stop_spinner()
        print(f"agentctl: {message}", file=self.err, flush=True)

    def _spinner_wanted(self) -> bool:
        return not self.quiet and not self.json_output and self.err.isatty()

    async def _spin(self) -> None:
        frame = 0
        self._spinning = True
        while self._spinning:
            self.err.write(f"\r{_SPINNER[frame % len(_SPINNER)]} ")
            self.err.flush()
            frame += 1
            await trio.sleep(0.1)

    def _stop_spinner(self) -> None:
        """Erase the spinner before anything else reaches the terminal."""
        if self._spinning:
            self._spinning = False
            self.err.write("\r\033[K")
            self.err.flush()
