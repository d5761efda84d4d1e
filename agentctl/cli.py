"""The `agentctl` command line: parsing and dispatch only.

Start-up time is a feature of a CLI run from shells and CI: this module imports
nothing heavy, only the invoked command's arguments are built, and each command
imports what it needs when it runs; `agentctl --version` imports nothing at all.
"""

from __future__ import annotations

import os
import sys
from types import SimpleNamespace

import agentd

# Not `typing.TYPE_CHECKING`: importing typing alone costs more than this
# module's whole start-up budget. Type checkers honour the name either way.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable
    from typing import Any

__all__ = ["main"]


def _add_socket(parser: argparse.ArgumentParser, *, top: bool) -> None:
    import argparse

    # Accepted before or after the subcommand; the subcommand's copy must not
    # overwrite the top-level one with its default.
    parser.add_argument(
        "--socket",
        metavar="PATH",
        default=None if top else argparse.SUPPRESS,
        help=(
            "daemon socket (default: $AGENTD_SOCKET, $XDG_RUNTIME_DIR/agentd/agentd.sock, /tmp/agentd-$UID/agentd.sock)"
        ),
    )


def _formatter() -> Any:
    """argparse's help formatter, sized without `shutil`.

    argparse builds a formatter for every argument it adds, and the default one
    imports shutil and asks for the terminal size each time: milliseconds on
    every command, for help text that is almost never printed.
    """
    import argparse
    import os

    global _FORMATTER
    if _FORMATTER is None:
        try:
            columns = int(os.environ.get("COLUMNS", "")) or os.get_terminal_size(2).columns
        except (ValueError, OSError):
            columns = 80

        # Raw descriptions: each command's examples keep their lines.
        class Formatter(argparse.RawDescriptionHelpFormatter):
            def __init__(self, prog: str) -> None:
                super().__init__(prog, width=max(columns - 2, 40))

        _FORMATTER = Formatter
    return _FORMATTER


_FORMATTER: Any = None


def _add_command(sub: Any, name: str, summary: str, description: str, examples: str) -> Any:
    """A subcommand with its one-line summary, what it does, and examples that run as written."""
    parser = sub.add_parser(
        name,
        help=summary,
        description=f"{summary[0].upper()}{summary[1:]}. {description}",
        epilog="examples:\n" + examples,
        formatter_class=_formatter(),
    )
    _add_socket(parser, top=False)
    return parser


def _add_cwd(parser: Any) -> None:
    parser.add_argument("--cwd", metavar="DIR", help="workspace directory (default: the current directory)")


def _add_json(parser: Any, what: str) -> None:
    parser.add_argument("-j", "--json", action="store_true", help=what)


def _add_run(sub: Any) -> None:
    run = _add_command(
        sub,
        "run",
        "run a prompt and stream the answer",
        "The prompt is the arguments; with stdin also given (not a terminal), the arguments, a blank line, then"
        " stdin; `-` alone reads the prompt from stdin only. Exits 0 when the run completed, 1 when it failed,"
        " 2 on a usage error, 3 when agentd could not be reached, 130 on Ctrl-C.",
        '  agentctl run "explain this repository"\n'
        '  agentctl run -c "and the tests?"\n'
        '  cat notes.txt | agentctl run "summarize:"\n'
        '  agentctl run --detach "run the long task"   # prints the run id; `agentctl attach` follows it\n',
    )
    run.add_argument("-m", "--model", help="model name (default: the daemon's default)")
    which = run.add_mutually_exclusive_group()
    which.add_argument("-s", "--session", metavar="ID", help="continue this session")
    which.add_argument(
        "-c", "--continue", dest="continue_", action="store_true", help="continue the most recent session"
    )
    _add_json(run, "print one JSON object per event of this run; the last line is its run.complete or an error")
    run.add_argument("-q", "--quiet", action="store_true", help="no spinner and no notes on stderr")
    run.add_argument(
        "-d", "--detach", action="store_true", help="print the run id once the run is accepted, and return"
    )
    run.add_argument(
        "--allow",
        metavar="TOOL[:PREFIX]",
        action="append",
        help="let this run's calls of TOOL (bash: commands starting with PREFIX) go without asking; repeatable",
    )
    run.add_argument("--yolo", action="store_true", help="let every tool call of this run go without asking")
    _add_cwd(run)
    run.add_argument("prompt", nargs="*", help="the prompt (default: read from stdin when it is not a terminal)")


def _add_attach(sub: Any) -> None:
    attach = _add_command(
        sub,
        "attach",
        "follow a run again, from where it is",
        "Prints the run's answer so far, then streams the rest, and exits as `agentctl run` would have.",
        "  agentctl attach                      # the latest run in this directory's workspace\n"
        "  agentctl attach 73ba724abf7c4059a08940904eddbc8a\n",
    )
    _add_json(attach, "print one JSON object per event of the run; the last line is its run.complete or an error")
    attach.add_argument("-q", "--quiet", action="store_true", help="no spinner and no notes on stderr")
    _add_cwd(attach)
    attach.add_argument(
        "run_id", metavar="RUN_ID", nargs="?", help="the run (default: the latest in this directory's workspace)"
    )


def _add_status(sub: Any) -> None:
    status = _add_command(
        sub,
        "status",
        "show the daemon's status",
        "Exits 3 when no daemon is running (none is started).",
        "  agentctl status\n  agentctl status --json\n",
    )
    _add_json(status, "print the status as one JSON object")


def _add_sessions(sub: Any) -> None:
    sessions = _add_command(
        sub,
        "sessions",
        "list the sessions of a workspace",
        "Newest first: id, last activity, messages, busy, title.",
        "  agentctl sessions\n  agentctl sessions --all     # every directory's sessions\n",
    )
    _add_cwd(sessions)
    sessions.add_argument(
        "-a", "--all", dest="all_", action="store_true", help="the sessions of every workspace, with its directory"
    )
    _add_json(sessions, "print the sessions as a JSON array")


def _add_show(sub: Any) -> None:
    show = _add_command(
        sub,
        "show",
        "print the conversation of a session",
        "A run that failed or was cancelled says so under its answer.",
        "  agentctl show 3f2a\n  agentctl show --json 3f2a\n",
    )
    _add_cwd(show)
    _add_json(show, "print the session's messages as a JSON array")
    show.add_argument("session", metavar="SESSION", help="session id, or enough of its start to be unambiguous")


def _add_rm(sub: Any) -> None:
    rm = _add_command(
        sub,
        "rm",
        "delete a session and its messages",
        "Not while it runs a prompt: `agentctl cancel` first.",
        "  agentctl rm 3f2a\n",
    )
    _add_cwd(rm)
    rm.add_argument("session", metavar="SESSION", help="session id, or enough of its start to be unambiguous")


def _add_cancel(sub: Any) -> None:
    cancel = _add_command(
        sub,
        "cancel",
        "cancel the running prompt (and clear the queue)",
        "Each cancelled run still ends with its RunComplete, recorded.",
        "  agentctl cancel            # every busy session of this directory\n  agentctl cancel -s 3f2a\n",
    )
    cancel.add_argument("-s", "--session", metavar="ID", help="only this session (default: every busy one)")
    _add_cwd(cancel)


def _add_stop(sub: Any) -> None:
    stop = _add_command(
        sub,
        "stop",
        "stop the daemon",
        "Every run ends cancelled, recorded and reported; exits 0 when no daemon runs.",
        "  agentctl stop\n  agentctl stop --if-idle\n",
    )
    stop.add_argument(
        "--if-idle", action="store_true", help="only when no run is active and no other client is connected"
    )


def _add_models(sub: Any) -> None:
    models = _add_command(
        sub,
        "models",
        "list the configured models and the default",
        "The default is marked `*`.",
        "  agentctl models\n  agentctl models --json\n",
    )
    _add_json(models, "print the models as one JSON object")


def _add_diff_and_undo(sub: Any) -> None:
    for name, summary, description, examples in (
        (
            "diff",
            "show what a run did to the workspace's files, as a diff",
            "Default: the last run of the current session (the most recently active one of this directory's"
            " workspace). Only the diff goes to stdout, in colour on a terminal.",
            "  agentctl diff\n  agentctl diff --run 73ba724abf7c4059a08940904eddbc8a\n  agentctl diff | less -R\n",
        ),
        (
            "undo",
            "put back the files a run created, changed or deleted",
            "Default: the last run of the current session. Refuses, naming them, files changed since the run"
            " (and then undoes nothing) unless --force. Exits 1 when a file was not put back.",
            "  agentctl undo\n  agentctl undo --run 73ba724abf7c4059a08940904eddbc8a --force\n",
        ),
    ):
        parser = _add_command(sub, name, summary, description, examples)
        which = parser.add_mutually_exclusive_group()
        which.add_argument("-r", "--run", metavar="ID", help="this run (default: the session's last run)")
        which.add_argument("-s", "--session", metavar="ID", help="the last run of this session")
        if name == "undo":
            parser.add_argument("-f", "--force", action="store_true", help="put back files changed since the run too")
        _add_cwd(parser)
        _add_json(parser, "print the reply as one JSON object")


def _add_daemon_and_restart(sub: Any) -> None:
    daemon = _add_command(
        sub,
        "daemon",
        "install or uninstall agentd as a systemd user service",
        "install writes agentd.socket and agentd.service to $XDG_CONFIG_HOME/systemd/user (default"
        " ~/.config/systemd/user), running this installation's agentd, then runs `systemctl --user daemon-reload`"
        " and `systemctl --user enable --now agentd.socket` when systemctl is there; uninstall reverses it.",
        "  agentctl daemon install\n  agentctl daemon uninstall\n",
    )
    daemon.add_argument("action", choices=["install", "uninstall"], help="what to do")
    restart = _add_command(
        sub,
        "restart",
        "restart the daemon that serves the socket",
        "Waits for the active runs to finish first, unless --now. A socket-activated daemon is restarted by"
        " `systemctl --user restart agentd.service`; any other is stopped and started again. Prints the old"
        " and the new pid.",
        "  agentctl restart\n  agentctl restart --now\n",
    )
    restart.add_argument("--now", action="store_true", help="cancel the active runs instead of waiting for them")


def _add_acp(sub: Any) -> None:
    acp = _add_command(
        sub,
        "acp",
        "serve an editor the Agent Client Protocol on stdin and stdout",
        "An ACP agent (protocol version 1) that an editor starts: its sessions are agentd's, shared with every"
        " client. Only ACP goes to stdout; notes go to stderr. Exits 0 when stdin closes; runs go on in the daemon.",
        "  agentctl acp\n  agentctl acp --model scripted\n",
    )
    acp.add_argument("-m", "--model", help="model of new sessions (default: the daemon's default)")


def _add_mcp(sub: Any) -> None:
    mcp = _add_command(
        sub,
        "mcp",
        "list this directory's MCP servers, or trust its .agentd/config.toml",
        "list (the default) prints a line per server: name, source (config, workspace or session), transport,"
        " state, tools, restarts and the last error; then the project's .agentd/config.toml, trusted or not."
        " trust lets that file's servers start, as the file is now: a later change needs trusting again.",
        "  agentctl mcp\n  agentctl mcp list --json\n  agentctl mcp trust\n",
    )
    mcp.add_argument("action", nargs="?", choices=["list", "trust"], default="list", help="what to do (default: list)")
    _add_cwd(mcp)
    _add_json(mcp, "print the reply as one JSON object")


_COMMANDS: dict[str, Callable[[Any], None]] = {
    "run": _add_run,
    "attach": _add_attach,
    "status": _add_status,
    "sessions": _add_sessions,
    "show": _add_show,
    "rm": _add_rm,
    "cancel": _add_cancel,
    "stop": _add_stop,
    "models": _add_models,
    "diff": _add_diff_and_undo,
    "undo": _add_diff_and_undo,
    "daemon": _add_daemon_and_restart,
    "restart": _add_daemon_and_restart,
    "acp": _add_acp,
    "mcp": _add_mcp,
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with `only`, just that command's part of it (building them all costs milliseconds)."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="agentctl",
        description="Talk to the agentd daemon (started on demand). `agentctl COMMAND --help` tells more.",
        epilog='examples:\n  agentctl run "explain this repository"\n  agentctl sessions\n',
        formatter_class=_formatter(),
    )
    parser.add_argument("--version", action="version", version=f"agentctl {agentd.__version__}")
    _add_socket(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    added = set()
    for name, add in _COMMANDS.items():
        if (only is None or name == only) and add not in added:
            added.add(add)
            add(sub)
    return parser


def _command_in(argv: list[str]) -> str | None:
    """The subcommand `argv` names, found the way argparse would: the first bare word."""
    words = iter(argv)
    for word in words:
        if word == "--socket":
            next(words, None)
        elif not word.startswith("-"):
            return word if word in _COMMANDS else None
    return None


# `run`'s options as `parse_run_quickly` reads them: option -> (dest, takes a value).
# tests/test_cli_parsing.py holds this to the argparse parser above, which stays
# the authority: anything this table does not cover goes to it.
RUN_OPTIONS: dict[str, tuple[str, bool]] = {
    "--socket": ("socket", True),
    "--model": ("model", True),
    "-m": ("model", True),
    "--session": ("session", True),
    "-s": ("session", True),
    "--continue": ("continue_", False),
    "-c": ("continue_", False),
    "--json": ("json", False),
    "-j": ("json", False),
    "--quiet": ("quiet", False),
    "-q": ("quiet", False),
    "--detach": ("detach", False),
    "-d": ("detach", False),
    "--cwd": ("cwd", True),
    "--allow": ("allow", True),
    "--yolo": ("yolo", False),
}
# Options that may be given more than once, each value added to a list.
_REPEATED = frozenset({"allow"})


def parse_run_quickly(argv: list[str]) -> SimpleNamespace | None:
    """`agentctl [--socket P] run [OPTIONS] PROMPT...` parsed without argparse, or None.

    `agentctl run` is the command scripts call in loops, and argparse (with the
    re, gettext and locale it imports) is a large share of its start-up. The
    common, unambiguous shapes are read here; anything else (help, `--`, an
    option after the prompt, `--opt=value`, short flags run together (`-qj`),
    a value that looks like an option, a conflict) returns None, for argparse
    to parse or to explain.
    """
    values: dict[str, object] = {
        "command": "run",
        "socket": None,
        "model": None,
        "session": None,
        "continue_": False,
        "json": False,
        "quiet": False,
        "detach": False,
        "cwd": None,
        "allow": None,
        "yolo": False,
    }
    prompt: list[str] = []
    seen_command = False
    i = 0
    while i < len(argv):
        word = argv[i]
        if word.startswith("-") and word != "-":
            spec = RUN_OPTIONS.get(word)
            if spec is None or prompt or (not seen_command and word != "--socket"):
                return None
            dest, takes_value = spec
            if takes_value:
                if i + 1 >= len(argv) or argv[i + 1].startswith("-"):
                    return None
                if dest in _REPEATED:
                    values[dest] = [*(values[dest] or []), argv[i + 1]]  # type: ignore[misc]
                else:
                    values[dest] = argv[i + 1]
                i += 2
                continue
            values[dest] = True
        elif seen_command:
            prompt.append(word)
        elif word == "run":
            seen_command = True
        else:
            return None
        i += 1
    if not seen_command or (values["session"] is not None and values["continue_"]):
        return None
    return SimpleNamespace(prompt=prompt, **values)


def _refuse_bad_input(args: argparse.Namespace | SimpleNamespace) -> bool:
    """Say so, and True, when an argument (or the directory it defaults to) cannot be used.

    The protocol carries UTF-8 text; bytes that are not UTF-8 would otherwise
    surface as a traceback from the encoder, after a session was created. And
    every command that takes `--cwd` refuses a directory that is not there the
    same way, before reaching the daemon.
    """
    from agentd.utf8 import undecodable

    for dest, value in vars(args).items():
        for text in value if isinstance(value, list) else [value]:
            where = undecodable(text) if isinstance(text, str) else None
            if where is not None:
                what = "the prompt" if dest == "prompt" else f"the {dest.rstrip('_')} argument"
                print(f"agentctl {args.command}: {what} is not valid UTF-8 ({where})", file=sys.stderr)
                return True
    cwd = getattr(args, "cwd", None)
    if cwd is not None and not os.path.isdir(cwd):
        print(f"agentctl {args.command}: --cwd: not a directory: {os.path.abspath(cwd)}", file=sys.stderr)
        return True
    if getattr(args, "cwd", "") is None:
        # The workspace defaults to the current directory.
        try:
            cwd = os.getcwd()
        except FileNotFoundError:
            print(f"agentctl {args.command}: the current directory no longer exists; pass --cwd", file=sys.stderr)
            return True
        where = undecodable(cwd)
        if where is not None:
            print(
                f"agentctl {args.command}: the current directory's path is not valid UTF-8 ({where}),"
                " and agentd keeps paths as UTF-8; pass --cwd",
                file=sys.stderr,
            )
            return True
    return False


def _usage_error(parser: argparse.ArgumentParser, command: str | None, message: str) -> None:
    """argparse's usage error, from the subcommand's parser so it names the subcommand (`agentctl run: error:`)."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            action.choices[command].error(message)
    parser.error(message)


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    try:
        if argv == ["--version"]:
            # The one call that needs nothing but a string.
            print(f"agentctl {agentd.__version__}", flush=True)
            return 0
        code = _dispatch(argv)
        # What is still buffered goes now, while a closed reader can still be told apart.
        if sys.stdout is not None:
            sys.stdout.flush()
    except BrokenPipeError:  # and agentctl._output.StdoutClosed, raised where stdout is written
        # The reader went away (`| head -1`): nothing is wrong with agentd, so end
        # quietly, as git does, with the status of a process SIGPIPE ended.
        from agentctl._output import silence_stdout

        silence_stdout()
        return EXIT_STDOUT_CLOSED
    return code


# 128 + SIGPIPE, what a shell reports for `git log | head -1`.
EXIT_STDOUT_CLOSED = 141


def _dispatch(argv: list[str]) -> int:
    quick = parse_run_quickly(argv)
    if quick is not None:
        if _refuse_bad_input(quick):
            return 2
        from agentctl._run import run_command

        return run_command(quick)
    command = _command_in(argv)
    parser = build_parser(only=command)
    args, extra = parser.parse_known_args(argv)
    if extra:
        _usage_error(parser, args.command, f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if _refuse_bad_input(args):
        return 2
    if args.command == "run":
        from agentctl._run import run_command

        return run_command(args)
    if args.command == "attach":
        from agentctl._run import attach_command

        return attach_command(args)
    if args.command in ("diff", "undo"):
        from agentctl import _changes

        return _changes.diff(args) if args.command == "diff" else _changes.undo(args)
    if args.command == "daemon":
        from agentctl import _daemon_units

        return _daemon_units.install(args) if args.action == "install" else _daemon_units.uninstall(args)
    if args.command == "restart":
        from agentctl._restart import restart

        return restart(args)
    if args.command == "mcp":
        from agentctl import _mcp

        return _mcp.trust(args) if args.action == "trust" else _mcp.list_servers(args)
    if args.command == "acp":
        from agentctl.acp._early import main as acp_main

        return acp_main(args.model, args.socket)
    from agentctl import _admin

    handler = {
        "status": _admin.status,
        "sessions": _admin.sessions,
        "show": _admin.show,
        "rm": _admin.rm,
        "cancel": _admin.cancel,
        "stop": _admin.stop,
        "models": _admin.models,
    }[args.command]
    return handler(args)
