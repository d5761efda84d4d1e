"""`agentctl run`: send one prompt, stream its answer, exit with what became of it.

Exit codes: 0 the run completed, 1 the run failed (or was cancelled by someone
else), 2 usage, 3 the daemon could not be reached, or the connection was lost
before the run's RunComplete and no daemon answered again in time (it
reconnects, starting one if needed, resubscribes from the last seq it saw and
asks `run.get`), 130 interrupted by Ctrl-C. It never exits 0 without a
RunComplete.

Written on the blocking client: a run is one conversation on one socket, and
not importing an event loop keeps the command's start-up close to Python's own.
"""

from __future__ import annotations

# `_signal`, not `signal`: the wrapper's only addition is enums, and importing
# enum costs agentctl milliseconds on every run.
import _signal  # type: ignore[import-not-found]  # typeshed describes only `signal`
import os
import sys
import time
from types import FrameType, SimpleNamespace

from agentctl._sessions import resolve_session
from agentctl.autostart import DaemonUnavailable, ensure_daemon
from agentctl.blocking import BlockingClient
from agentctl.errors import ConnectionLost, RpcError
from agentctl.runstream import (
    EXIT_INTERRUPTED,
    EXIT_LOST,
    EXIT_RUN_ERROR,
    EXIT_USAGE,
    Outcome,
    RunStream,
    event_params,
)
from agentd import __version__
from agentd.paths import resolve_socket_path
from agentd.rpc import encode_request
from agentd.utf8 import describe_bad_bytes

# typing costs milliseconds to import, and agentctl's start-up is measured in them;
# annotations are strings here, so only type checkers need these names.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any, TextIO

__all__ = ["run_command"]

# `ses_` and 32 hex digits: an id of that length needs no expanding.
_FULL_ID_LENGTH = 36
# After the first Ctrl-C, how long to wait for the cancelled RunComplete.
CANCEL_GRACE = 5.0
# After the connection drops, how long to keep trying to reach a daemon again.
RECONNECT_WINDOW = 30.0
RECONNECT_PAUSE = 0.2
# How often the loop wakes with nothing to read: the spinner's frame and the
# longest a Ctrl-C waits to be acted on.
_TICK = 0.1
_SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


def _reconnect_window() -> float:
    """`$AGENTCTL_RECONNECT_TIMEOUT` seconds, else RECONNECT_WINDOW: CI may want to fail sooner."""
    try:
        return max(0.0, float(os.environ.get("AGENTCTL_RECONNECT_TIMEOUT", RECONNECT_WINDOW)))
    except ValueError:
        return RECONNECT_WINDOW


class _Interrupted(Exception):
    """Ctrl-C before the run was accepted, or a second Ctrl-C: leave now."""


class _BadPrompt(Exception):
    pass


class _TooLarge(Exception):
    pass


def _read_prompt(args: argparse.Namespace | SimpleNamespace) -> str | None:
    if args.prompt:
        return " ".join(args.prompt)
    if sys.stdin is None or sys.stdin.isatty():
        return None
    # Bytes, decoded here: how the text layer treats bytes that are not UTF-8
    # depends on the locale (an exception, or surrogates msgpack cannot send).
    data = sys.stdin.buffer.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _BadPrompt(
            f"the prompt on stdin is not valid UTF-8 ({describe_bad_bytes(data, exc)});"
            " convert it first, for example with iconv -t utf-8"
        ) from None


def run_command(args: argparse.Namespace | SimpleNamespace) -> int:
    try:
        prompt = _read_prompt(args)
    except _BadPrompt as exc:
        print(f"agentctl run: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if prompt is None:
        print("agentctl run: no prompt given (pass it as arguments or on stdin)", file=sys.stderr)
        return EXIT_USAGE
    if not prompt.strip():
        print("agentctl run: the prompt is empty", file=sys.stderr)
        return EXIT_USAGE
    cwd = os.path.abspath(args.cwd or os.getcwd())  # checked by the CLI: it exists
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
    return command.main()


class RunCommand:
    def __init__(
        self,
        *,
        socket_path: str,
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
        # As random as uuid4, without importing uuid on the way to the first byte.
        self.run_id = os.urandom(16).hex()
        self.stream: RunStream | None = None
        self._workspace_id = ""
        # The last seq this run's subscription saw: where a resubscribe resumes.
        self._last_seq = 0
        self._resumed = False
        self._interrupts = 0
        # agent.send is written and its answer not yet read.
        self._sending = False
        self._spinning = self._spinner_wanted()
        self._spinner_frame = 0
        self._stdout_broken = False

    def main(self) -> int:
        previous = _signal.signal(_signal.SIGINT, self._on_interrupt)
        try:
            return self._drive()
        except _Interrupted:
            return EXIT_INTERRUPTED
        finally:
            _signal.signal(_signal.SIGINT, previous)
            self._stop_spinner()

    def _on_interrupt(self, signum: int, frame: FrameType | None) -> None:
        self._interrupts += 1
        if self._interrupts > 1 or (self.stream is None and not self._sending):
            raise _Interrupted
        # The first Ctrl-C once the send is out: the daemon may accept the run
        # whatever we do now, so leaving would leave it running. Once the send
        # is answered, the loop asks for the cancel.

    # --- the run

    def _drive(self) -> int:
        try:
            client = self._connect()
        except DaemonUnavailable as exc:
            return self._fail(EXIT_LOST, f"cannot reach agentd: {exc}")
        except OSError as exc:
            return self._fail(EXIT_LOST, f"cannot connect to agentd at {self.socket_path}: {exc}")
        with client:
            try:
                subscription_id = self._start(client)
            except RpcError as exc:
                return self._fail(EXIT_RUN_ERROR, str(exc))
            except _TooLarge as exc:
                return self._fail(EXIT_USAGE, str(exc))
            except ConnectionLost as exc:
                return self._fail(EXIT_LOST, f"lost the connection to agentd: {exc}")
            outcome = self._follow(client, subscription_id)
            reason = client.close_reason
        if outcome is None:
            outcome = self._recover(reason or "connection closed")
        return self._finish(outcome)

    def _connect(self) -> BlockingClient:
        """Connect, starting the daemon only if nothing answers: the common case is one connect."""
        try:
            return BlockingClient.connect(self.socket_path)
        except OSError:
            ensure_daemon(self.socket_path)
        return BlockingClient.connect(self.socket_path)

    def _start(self, client: BlockingClient) -> str:
        """Open the workspace, pick the session, subscribe, send: three round trips.

        Requests that do not depend on each other's answers go out together.
        """
        hello = client.request("initialize", {"client_name": "agentctl", "client_version": __version__})
        workspace = client.call("workspace.open", {"path": self.cwd})
        server = client.wait(hello)
        params: dict[str, Any] = {
            "workspace_id": workspace["id"],
            "session_id": "",
            "prompt": self.prompt,
            "run_id": self.run_id,
        }
        if self.model:
            params["model"] = self.model
        self._check_size(params, server.get("max_message_size"))
        # The daemon words it: only it knows the environment it started with and its configuration.
        note = server.get("default_model_note")
        if self.model is None and note:
            self._note(note, informational=True)
        workspace_id = self._workspace_id = workspace["id"]
        session_id = self.session_id
        if session_id is None and self.continue_session:
            sessions = client.call("session.list", {"workspace_id": workspace_id})
            if sessions:
                session_id = max(sessions, key=lambda s: s["updated_at"])["id"]
        if session_id is None:
            # Untitled: the daemon names a session after its first prompt.
            session_request = client.request("session.create", {"workspace_id": workspace_id})
        else:
            if not session_id.startswith("ses_") or len(session_id) != _FULL_ID_LENGTH:
                # A prefix (people type the start of an id): one session.list to expand it.
                session_id = resolve_session(client, workspace_id, session_id)
            session_request = client.request("session.get", {"workspace_id": workspace_id, "session_id": session_id})
        # Subscribe before sending: the run's first event must not beat us to it.
        subscribe_request = client.request("events.subscribe", {"workspace_id": workspace_id})
        session_id = client.wait(session_request)["id"]
        subscription = client.wait(subscribe_request)
        self._last_seq = int(subscription.get("seq", 0))
        params["session_id"] = session_id
        stream = RunStream(session_id, self.run_id)
        self._sending = True
        try:
            client.call("agent.send", params)
            # Accepted: from here a Ctrl-C cancels the run instead of leaving.
            self.stream = stream
        except RpcError:
            if self._interrupts:
                raise _Interrupted from None  # refused, and the user wants out anyway
            raise
        finally:
            self._sending = False
        return str(subscription["subscription_id"])

    @staticmethod
    def _check_size(params: dict[str, Any], limit: object) -> None:
        """Refuse a send the daemon would answer by closing the connection, before a session exists for it."""
        if not isinstance(limit, int):
            return
        # The largest msgid and a full-length session id: the most the request can take.
        request = encode_request(0xFFFFFFFF, "agent.send", [{**params, "session_id": "s" * _FULL_ID_LENGTH}])
        if len(request) > limit:
            raise _TooLarge(
                f"the prompt is {len(params['prompt'].encode())} bytes, more than agentd takes in one"
                f" request ({limit} bytes, set by agentd --max-message-size)"
            )

    def _follow(self, client: BlockingClient, subscription_id: str) -> Outcome | None:
        """Events until our RunComplete; None when the connection ends first."""
        stream = self.stream
        assert stream is not None
        give_up_at: float | None = None
        while True:
            if self._interrupts and not stream.cancel_requested:
                stream.cancel_requested = True
                self._note("cancelling... (Ctrl-C again to quit at once)", informational=True)
                give_up_at = time.monotonic() + CANCEL_GRACE
                params = {"workspace_id": self._workspace_id, "session_id": stream.session_id, "run_id": self.run_id}
                try:
                    client.request("agent.cancel", params, want_reply=False)
                except ConnectionLost:
                    return None
            if give_up_at is not None and time.monotonic() >= give_up_at:
                # The cancelled RunComplete normally ends us before this does.
                return Outcome(EXIT_INTERRUPTED, "the run did not confirm its cancellation")
            try:
                item = client.next_notification(_TICK)
            except ConnectionLost:
                return None
            if item is None:
                self._spin()
                continue
            method, params = item
            event = event_params(params) if method == "event" else None
            if event is None or event.get("subscription_id") != subscription_id:
                continue
            seq = event.get("seq")
            if isinstance(seq, int) and event.get("type") != "events.gap":
                self._last_seq = max(self._last_seq, seq)
            text, outcome = stream.handle(event)
            if event.get("type") == "run.retry" and stream.is_ours(event):
                retry = event["payload"]
                self._note(
                    f"{retry.get('reason')}; trying again in {retry.get('delay', 0):.1f} s"
                    f" (attempt {retry.get('attempt')})",
                    informational=True,
                )
            if self.json_output:
                if stream.is_ours(event) or event.get("type") == "events.gap":
                    self._write(_json_line(event, ensure_ascii=False) + "\n")
            elif text:
                self._write(text)
            if outcome is not None:
                return outcome

    def _recover(self, reason: str) -> Outcome:
        """The connection dropped before our RunComplete: pick up where we were.

        Reconnect (starting the daemon if it went away), resubscribe from the
        last seq seen, and ask for the run: a finished run (including one a
        restart interrupted) ends us at once; a running one is followed on.
        Only when no daemon can be reached again in time is it exit 3.
        """
        self._note(f"lost the connection to agentd ({reason}); reconnecting", informational=True)
        deadline = time.monotonic() + _reconnect_window()
        while True:
            self._resumed = False
            try:
                outcome = self._resume()
            except (DaemonUnavailable, OSError, ConnectionLost) as exc:
                reason = str(exc)
            except RpcError as exc:
                return Outcome(EXIT_LOST, f"lost the connection to agentd, and then: {exc}")
            else:
                if outcome is not None:
                    return outcome
                reason = "the connection dropped again"
            if self._resumed:
                # It was back for a while: a new drop gets a whole window again.
                deadline = time.monotonic() + _reconnect_window()
            if time.monotonic() >= deadline:
                return Outcome(EXIT_LOST, f"lost the connection to agentd before the run completed ({reason})")
            time.sleep(RECONNECT_PAUSE)

    def _resume(self) -> Outcome | None:
        stream = self.stream
        assert stream is not None
        with self._connect() as client:
            workspace = client.call("workspace.open", {"path": self.cwd})
            subscription = client.call("events.subscribe", {"workspace_id": workspace["id"], "since": self._last_seq})
            run = client.call("run.get", {"run_id": self.run_id})
            self._resumed = True
            if run["complete"] is not None:
                rc = run["complete"]
                text, outcome = stream.complete(rc)
                if self.json_output:
                    self._write(_json_line({"type": "run.complete", "payload": rc}, ensure_ascii=False) + "\n")
                else:
                    self._write(text)
                return outcome
            return self._follow(client, str(subscription["subscription_id"]))

    def _finish(self, outcome: Outcome) -> int:
        if outcome.error and outcome.exit_code != 0:
            self._note(outcome.error)
        return outcome.exit_code

    def _fail(self, code: int, message: str) -> int:
        self._note(message)
        return code

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

    def _spin(self) -> None:
        if self._spinning:
            self.err.write(f"\r{_SPINNER[self._spinner_frame % len(_SPINNER)]} ")
            self.err.flush()
            self._spinner_frame += 1

    def _stop_spinner(self) -> None:
        """Erase the spinner before anything else reaches the terminal; it does not come back."""
        if self._spinning:
            self._spinning = False
            if self._spinner_frame:
                self.err.write("\r\033[K")
                self.err.flush()


def _json_line(value: object, **kwargs: Any) -> str:
    import json  # only --json needs it

    return json.dumps(value, **kwargs)
