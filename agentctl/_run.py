"""`agentctl run`: send one prompt, stream its answer, exit with what became of it.

`agentctl attach` follows an accepted run again, from where it is, and ends
the same way; `agentctl run --detach` returns once its run is accepted.

Exit codes: 0 the run completed, 1 the run failed (or was cancelled by someone
else, or agentd refused the prompt), 2 usage, 3 the daemon could not be
reached, or the connection was lost before the run's RunComplete and no daemon
answered again in time (it reconnects, starting one if needed, resubscribes
from the last seq it saw and asks `run.get`), 130 interrupted by Ctrl-C. It
never exits 0 without a RunComplete (`--detach` exits 0 once the run is
accepted, which promises one).

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

from agentctl._permissions import Answers
from agentctl._sessions import not_here, resolve_session
from agentctl._version import version_mismatch
from agentctl.autostart import DaemonUnavailable
from agentctl.blocking import BlockingClient
from agentctl.errors import ConnectionLost, RpcError
from agentctl.runstream import (
    EXIT_INTERRUPTED,
    EXIT_LOST,
    EXIT_RUN_ERROR,
    EXIT_USAGE,
    Outcome,
    RunFollower,
    RunStream,
    new_run_id,
    send_params,
)
from agentd import __version__
from agentd import event_types as events
from agentd.paths import resolve_socket_path
from agentd.rpc import encode_request
from agentd.trust import UntrustedSocket
from agentd.utf8 import describe_bad_bytes

# typing costs milliseconds to import, and agentctl's start-up is measured in them;
# annotations are strings here, so only type checkers need these names.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any, TextIO

__all__ = ["attach_command", "run_command"]

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
# Marks a tool call's line on the terminal.
_TOOL_MARK = "\u25b8"


def _one_line(text: object, limit: int = 160) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


# Attached mid-answer, how often to read the saved text again while deltas wait for a hole.
_CATCH_UP_EVERY = 0.5
_SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
_PERMISSION_EVENTS = (events.PERMISSION_REQUEST, events.PERMISSION_RESOLVED)


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


class _Refused(Exception):
    """agentd refused what was asked, said for a person; `code` is its error code, if it was an error reply."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


def _read_prompt(args: argparse.Namespace | SimpleNamespace) -> str | None:
    """The arguments; with stdin too (not a terminal), the arguments, a blank line, then stdin; `-`: stdin only."""
    if args.prompt == ["-"]:
        return _read_stdin()
    if sys.stdin is None or sys.stdin.isatty():
        return " ".join(args.prompt) if args.prompt else None
    piped = _read_stdin()
    if not args.prompt:
        return piped
    if not piped.strip():
        # Nothing on stdin (`</dev/null`, a script's empty pipe): the arguments alone.
        return " ".join(args.prompt)
    return " ".join(args.prompt) + "\n\n" + piped


def _read_stdin() -> str:
    if sys.stdin is None:
        return ""
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
        detach=args.detach,
        # --yolo: every tool call of this run goes without asking.
        allow=["*"] if args.yolo else args.allow,
    )
    return command.main()


def attach_command(args: argparse.Namespace) -> int:
    cwd = os.path.abspath(args.cwd or os.getcwd())  # checked by the CLI: it exists
    command = RunCommand(
        socket_path=resolve_socket_path(args.socket),
        cwd=cwd,
        prompt="",
        model=None,
        session_id=None,
        continue_session=False,
        json_output=args.json,
        quiet=args.quiet,
        attach=True,
        run_id=args.run_id,
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
        detach: bool = False,
        attach: bool = False,
        run_id: str | None = None,
        allow: list[str] | None = None,
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
        # Tool calls of the run under way: call_id -> what the call does, until it ends.
        self._tool_calls: dict[str, Any] = {}
        # The MCP servers whose failure this run has told.
        self._mcp_told: set[str] = set()
        self.detach = detach
        # Attaching follows a run that exists (`run_id`, else the latest here)
        # instead of sending one.
        self.attach = attach
        self.run_id = run_id or new_run_id()
        self._find_latest = attach and run_id is None
        # With --json, the last line is the run's run.complete, or else an error line.
        self._printed_complete = False
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
        self._caught_up_at = 0.0
        # The run's own permission rules (`--allow`, `--yolo`), sent with it.
        self.allow = allow
        self._answers: Answers | None = None

    def main(self) -> int:
        previous = _signal.signal(_signal.SIGINT, self._on_interrupt)
        try:
            return self._drive()
        except _Interrupted:
            return EXIT_INTERRUPTED
        finally:
            _signal.signal(_signal.SIGINT, previous)
            self._stop_spinner()
            if self._answers is not None:
                self._answers.close()

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
        except UntrustedSocket as exc:
            return self._fail(EXIT_LOST, f"refusing to use the socket: {exc}")
        except OSError as exc:
            return self._fail(EXIT_LOST, f"cannot connect to agentd at {self.socket_path}: {exc}")
        with client:
            try:
                started = self._attach(client) if self.attach else self._start(client)
            except RpcError as exc:
                from agentctl._explain import explain  # only on the way out

                return self._fail(EXIT_RUN_ERROR, explain(exc), exc.code)
            except _Refused as exc:
                return self._fail(EXIT_RUN_ERROR, str(exc), exc.code)
            except _TooLarge as exc:
                return self._fail(EXIT_USAGE, str(exc))
            except ConnectionLost as exc:
                return self._fail(EXIT_LOST, f"lost the connection to agentd: {exc}")
            if isinstance(started, Outcome):
                return self._finish(started)
            if self.detach:
                return self._detached()
            outcome = self._follow(client, started)
            reason = client.close_reason
        if outcome is None:
            outcome = self._recover(reason or "connection closed")
        return self._finish(outcome)

    def _connect(self) -> BlockingClient:
        return BlockingClient.connect(self.socket_path, start_daemon=True)

    def _start(self, client: BlockingClient) -> str:
        """Open the workspace, pick the session, subscribe, send: three round trips.

        Requests that do not depend on each other's answers go out together.
        """
        hello = client.request("initialize", {"client_name": "agentctl", "client_version": __version__})
        workspace = client.call("workspace.open", {"path": self.cwd})
        server = client.wait(hello)
        # Not informational: a daemon of another version may be why the run misbehaves, so even --quiet shows it.
        mismatch = version_mismatch(server.get("version"))
        if mismatch is not None:
            self._note(mismatch)
        params = send_params(workspace["id"], "", self.prompt, self.run_id, self.model, self.allow)
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
        created = session_id is None
        ref = session_id or ""
        if session_id is None:
            # Untitled: the daemon names a session after its first prompt.
            session_request = client.request("session.create", {"workspace_id": workspace_id})
        else:
            try:
                if not session_id.startswith("ses_") or len(session_id) != _FULL_ID_LENGTH:
                    # A prefix (people type the start of an id): one session.list to expand it.
                    session_id = resolve_session(client, workspace_id, session_id)
            except RpcError as exc:
                if _is_unknown_session(exc):
                    raise _Refused(not_here(client, ref, workspace["path"]), exc.code) from None
                raise
            session_request = client.request("session.get", {"workspace_id": workspace_id, "session_id": session_id})
        # Subscribe before sending: the run's first event must not beat us to it.
        # A detached run is not followed here, so it needs no subscription.
        subscribe_request = None if self.detach else client.request("events.subscribe", {"workspace_id": workspace_id})
        try:
            session_id = client.wait(session_request)["id"]
        except RpcError as exc:
            if _is_unknown_session(exc):
                raise _Refused(not_here(client, ref, workspace["path"]), exc.code) from None
            raise
        subscription = client.wait(subscribe_request) if subscribe_request is not None else {}
        self._last_seq = int(subscription.get("seq", 0))
        params["session_id"] = session_id
        stream = RunStream(session_id, self.run_id)
        self._sending = True
        try:
            reply = client.call("agent.send", params)
            # Accepted: from here a Ctrl-C cancels the run instead of leaving.
            self.stream = stream
        except RpcError:
            if created:
                # The session was made for this prompt alone: refused, it would
                # only be an empty session in every list.
                self._forget_session(client, workspace_id, session_id)
            if self._interrupts:
                raise _Interrupted from None  # refused, and the user wants out anyway
            raise
        finally:
            self._sending = False
        if reply.get("queued"):
            ahead = reply.get("ahead")
            behind = f"{ahead} run{'' if ahead == 1 else 's'}" if isinstance(ahead, int) and ahead else "another run"
            self._note(
                f"queued behind {behind} of session {session_id}; it starts when they end"
                + ("" if self.detach else " (Ctrl-C withdraws it)"),
                informational=True,
            )
        return str(subscription.get("subscription_id", ""))

    @staticmethod
    def _forget_session(client: BlockingClient, workspace_id: str, session_id: str) -> None:
        try:
            client.call("session.delete", {"workspace_id": workspace_id, "session_id": session_id})
        except RpcError:
            pass  # someone else's prompt got into it meanwhile: it is theirs now

    def _detached(self) -> int:
        """The run is accepted and goes on without us: say which it is, for `agentctl attach`."""
        stream = self.stream
        assert stream is not None
        if self.json_output:
            line = {"run_id": self.run_id, "session_id": stream.session_id, "workspace_id": self._workspace_id}
            self._write(_json_line(line) + "\n")
        else:
            self._write(self.run_id + "\n")
        return 0

    # --- attaching to a run that exists

    def _attach(self, client: BlockingClient) -> str | Outcome:
        """Find the run, subscribe to its workspace, print what it has said so far: ready to follow it.

        An Outcome instead when the run has already ended.
        """
        client.request("initialize", {"client_name": "agentctl", "client_version": __version__}, want_reply=False)
        here = client.call("workspace.open", {"path": self.cwd})
        if self._find_latest:
            self.run_id = self._latest_run(client, here["id"], here["path"])
        run = client.call("run.get", {"run_id": self.run_id})
        stream = self.stream = RunStream(run["session_id"], self.run_id)
        if run["complete"] is not None:
            return self._ended(run["complete"])
        if run["workspace_id"] != here["id"]:
            # Followed where it runs; a reconnect goes back there too.
            self.cwd = self._workspace_path(client, run["workspace_id"])
            client.call("workspace.open", {"path": self.cwd})
        self._workspace_id = run["workspace_id"]
        # Subscribed first, then asked again: a run that ends in between is
        # either complete in the second answer or its run.complete is coming.
        subscription = client.call("events.subscribe", {"workspace_id": self._workspace_id})
        self._last_seq = int(subscription.get("seq", 0))
        run = client.call("run.get", {"run_id": self.run_id})
        if run["complete"] is not None:
            return self._ended(run["complete"])
        if not self.json_output:
            stream.keep_ahead = True
            self._catch_up(client)
        return str(subscription["subscription_id"])

    def _ended(self, rc: dict[str, Any]) -> Outcome:
        assert self.stream is not None
        text, outcome = self.stream.complete(rc)
        if self.json_output:
            self._write(_json_line({"type": events.RUN_COMPLETE, "payload": rc}, ensure_ascii=False) + "\n")
            self._printed_complete = True
        else:
            self._write(text)
        return outcome

    def _catch_up(self, client: BlockingClient) -> None:
        """Print the run's answer as saved so far, and the deltas that were waiting for it."""
        stream = self.stream
        assert stream is not None
        self._caught_up_at = time.monotonic()
        messages = client.call(
            "session.messages", {"workspace_id": self._workspace_id, "session_id": stream.session_id}
        )
        for message in messages:
            if message["run_id"] == self.run_id and message["role"] == "assistant":
                self._write(stream.fill(message["id"], message["text"]))

    def _latest_run(self, client: BlockingClient, workspace_id: str, path: str) -> str:
        """The run most recently sent in this workspace: a queued one, else the last one with a message."""
        sessions = client.call("session.list", {"workspace_id": workspace_id})
        for session in sessions:  # most recently updated first
            ref = {"workspace_id": workspace_id, "session_id": session["id"]}
            if session["busy"]:
                queued = client.call("agent.queue", ref)
                if queued:
                    return str(queued[-1]["run_id"])
            runs = [m["run_id"] for m in client.call("session.messages", ref) if m["run_id"]]
            if runs:
                return str(runs[-1])
        raise _Refused(f"no run in this directory's workspace ({path}) to attach to; start one with agentctl run")

    @staticmethod
    def _workspace_path(client: BlockingClient, workspace_id: str) -> str:
        for group in client.call("session.list_all"):
            if group["workspace"]["id"] == workspace_id:
                return str(group["workspace"]["path"])
        raise _Refused(f"the run's workspace {workspace_id} has no sessions any more")

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
        answers = self._permission_answers()
        follower = RunFollower(stream, subscription_id, self._last_seq)
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
            if stream.behind and time.monotonic() - self._caught_up_at >= _CATCH_UP_EVERY:
                try:
                    self._catch_up(client)
                except ConnectionLost:
                    return None
            try:
                if answers is not None:
                    answers.poll(client, self._workspace_id)
                item = client.next_notification(_TICK)
            except ConnectionLost:
                return None
            if item is None:
                if answers is None or answers.asking is None:
                    self._spin()
                continue
            event, text, outcome = follower.take(*item)
            if event is None:
                continue
            self._last_seq = follower.last_seq
            if answers is not None and event.get("type") in _PERMISSION_EVENTS:
                try:
                    answers.handle(client, self._workspace_id, event)
                except ConnectionLost:
                    return None
            if event.get("type") == events.TOOL_STARTED and stream.is_ours(event):
                self._tool_calls[str(event["payload"].get("call_id"))] = event["payload"].get("summary")
            elif event.get("type") == events.TOOL_FINISHED and stream.is_ours(event) and self._spinner_wanted():
                self._tool_line(event["payload"])
            if event.get("type") == events.MCP_STATUS:
                self._mcp_note(event["payload"].get("server") or {})
            if event.get("type") == events.RUN_RETRY and stream.is_ours(event):
                retry = event["payload"]
                self._note(
                    f"{retry.get('reason')}; trying again in {retry.get('delay', 0):.1f} s"
                    f" (attempt {retry.get('attempt')})",
                    informational=True,
                )
            if self.json_output:
                if stream.is_ours(event) or event.get("type") == events.EVENTS_GAP:
                    self._write(_json_line(event, ensure_ascii=False) + "\n")
                    self._printed_complete = outcome is not None
            elif text:
                self._write(text)
            if outcome is not None:
                return outcome

    def _permission_answers(self) -> Answers | None:
        """Who answers the run's permission requests here; None for `agentctl attach` without a terminal.

        `agentctl run` asks on a terminal and denies without one; `attach`
        only asks, leaving a run it did not start to other clients otherwise.
        """
        if self._answers is None:
            ask = bool(sys.stdin is not None and sys.stdin.isatty() and self.err.isatty())
            if self.attach and not ask:
                return None
            assert self.stream is not None
            stream = self.stream
            self._answers = Answers(
                self.run_id,
                ask=ask,
                write_err=self._write_err,
                mid_line=lambda: not stream.at_line_start and not self._stdout_broken and self.out.isatty(),
            )
        return self._answers

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
            except UntrustedSocket as exc:
                # Whoever answers now is not our daemon: not a moment to try again.
                return Outcome(EXIT_LOST, f"lost the connection to agentd, and then refused the socket: {exc}")
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
                return self._ended(run["complete"])
            return self._follow(client, str(subscription["subscription_id"]))

    def _finish(self, outcome: Outcome) -> int:
        if outcome.error and outcome.exit_code != 0:
            self._note(outcome.error)
            self._error_line(outcome.exit_code, outcome.error)
        return outcome.exit_code

    def _fail(self, code: int, message: str, error_code: int | None = None) -> int:
        self._note(message)
        self._error_line(code, message, error_code)
        return code

    def _error_line(self, exit_code: int, message: str, error_code: int | None = None) -> None:
        """With --json, a run that ends without its run.complete printed ends with this line instead."""
        if not self.json_output or self._printed_complete:
            return
        line: dict[str, Any] = {"type": "error", "exit_code": exit_code, "message": message}
        if error_code is not None:
            line["code"] = error_code
        self._write(_json_line(line, ensure_ascii=False) + "\n")

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
            from agentctl._output import silence_stdout

            silence_stdout()

    def _write_err(self, text: str) -> None:
        self._stop_spinner()
        self.err.write(text)
        self.err.flush()

    def _note(self, message: str, *, informational: bool = False) -> None:
        if self.quiet and informational:
            return
        self._stop_spinner()
        print(f"agentctl {'attach' if self.attach else 'run'}: {message}", file=self.err, flush=True)

    def _mcp_note(self, server: dict[str, Any]) -> None:
        """An MCP server of this run's session failed meanwhile: its tools are missing, so say why, once a server."""
        name = str(server.get("name"))
        if server.get("state") != "failed" or name in self._mcp_told:
            return
        stream = self.stream
        if server.get("source") == "session" and (stream is None or server.get("session_id") != stream.session_id):
            return
        self._mcp_told.add(name)
        retry = server.get("retry_in")
        again = f"; starting it again in {retry:g} s" if isinstance(retry, (int, float)) else ""
        self._note(f"MCP server {name} failed: {_one_line(str(server.get('error')))}{again}", informational=True)

    def _tool_line(self, payload: dict[str, Any]) -> None:
        """One line on the terminal per tool call of the run, as it ends: what it did and how it went."""
        stream = self.stream
        assert stream is not None
        what = self._tool_calls.pop(str(payload.get("call_id")), None) or payload.get("name")
        status, summary = payload.get("status"), payload.get("summary")
        lead = "\n" if not stream.at_line_start and not self._stdout_broken and self.out.isatty() else ""
        how = _one_line(summary) if status == "ok" else f"{status}: {_one_line(summary)}"
        self._write_err(f"{lead}{_TOOL_MARK} {_one_line(what)} ({how})\n")

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


# Error paths import what they need when they are taken: a run that goes well never loads them.


def _is_unknown_session(exc: RpcError) -> bool:
    from agentctl._explain import is_unknown_session

    return is_unknown_session(exc)


def _json_line(value: object, **kwargs: Any) -> str:
    import json  # only --json needs it

    return json.dumps(value, **kwargs)
