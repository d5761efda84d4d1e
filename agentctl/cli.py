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

        class Formatter(argparse.HelpFormatter):
            def __init__(self, prog: str) -> None:
                super().__init__(prog, width=max(columns - 2, 40))

        _FORMATTER = Formatter
    return _FORMATTER


_FORMATTER: Any = None


def _add_run(sub: Any) -> None:
    run = sub.add_parser("run", help="run a prompt and stream the answer", formatter_class=_formatter())
    _add_socket(run, top=False)
    run.add_argument("--model", help="model name (default: the daemon's default)")
    which = run.add_mutually_exclusive_group()
    which.add_argument("--session", metavar="ID", help="continue this session")
    which.add_argument("--continue", dest="continue_", action="store_true", help="continue the most recent session")
    run.add_argument("--json", action="store_true", help="print one JSON object per event of this run")
    run.add_argument("--quiet", action="store_true", help="no spinner and no notes on stderr")
    run.add_argument("--cwd", metavar="DIR", help="workspace directory (default: the current directory)")
    run.add_argument("prompt", nargs="*", help="the prompt (default: read from stdin when it is not a terminal)")


def _add_status(sub: Any) -> None:
    status = sub.add_parser("status", help="show the daemon's status", formatter_class=_formatter())
    _add_socket(status, top=False)
    status.add_argument("--json", action="store_true")


def _add_sessions(sub: Any) -> None:
    sessions = sub.add_parser("sessions", help="list the sessions of a workspace", formatter_class=_formatter())
    _add_socket(sessions, top=False)
    sessions.add_argument("--cwd", metavar="DIR")
    sessions.add_argument("--json", action="store_true")


def _add_show(sub: Any) -> None:
    show = sub.add_parser("show", help="print the conversation of a session", formatter_class=_formatter())
    _add_socket(show, top=False)
    show.add_argument("--cwd", metavar="DIR", help="workspace directory (default: the current directory)")
    show.add_argument("--json", action="store_true", help="print the session's messages as a JSON array")
    show.add_argument("session", metavar="SESSION", help="session id, or enough of its start to be unambiguous")


def _add_rm(sub: Any) -> None:
    rm = sub.add_parser("rm", help="delete a session and its messages", formatter_class=_formatter())
    _add_socket(rm, top=False)
    rm.add_argument("--cwd", metavar="DIR", help="workspace directory (default: the current directory)")
    rm.add_argument("session", metavar="SESSION", help="session id, or enough of its start to be unambiguous")


def _add_cancel(sub: Any) -> None:
    cancel = sub.add_parser(
        "cancel", help="cancel the running prompt (and clear the queue)", formatter_class=_formatter()
    )
    _add_socket(cancel, top=False)
    cancel.add_argument("--session", metavar="ID", help="only this session (default: every busy one)")
    cancel.add_argument("--cwd", metavar="DIR")


def _add_stop(sub: Any) -> None:
    stop = sub.add_parser("stop", help="stop the daemon", formatter_class=_formatter())
    _add_socket(stop, top=False)
    stop.add_argument(
        "--if-idle", action="store_true", help="only when no run is active and no other client is connected"
    )


def _add_models(sub: Any) -> None:
    models = sub.add_parser("models", help="list the configured models and the default", formatter_class=_formatter())
    _add_socket(models, top=False)
    models.add_argument("--json", action="store_true")


_COMMANDS: dict[str, Callable[[Any], None]] = {
    "run": _add_run,
    "status": _add_status,
    "sessions": _add_sessions,
    "show": _add_show,
    "rm": _add_rm,
    "cancel": _add_cancel,
    "stop": _add_stop,
    "models": _add_models,
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with `only`, just that command's part of it (building them all costs milliseconds)."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="agentctl", description="Talk to the agentd daemon.", formatter_class=_formatter()
    )
    parser.add_argument("--version", action="version", version=f"agentctl {agentd.__version__}")
    _add_socket(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, add in _COMMANDS.items():
        if only is None or name == only:
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
    "--session": ("session", True),
    "--continue": ("continue_", False),
    "--json": ("json", False),
    "--quiet": ("quiet", False),
    "--cwd": ("cwd", True),
}


def parse_run_quickly(argv: list[str]) -> SimpleNamespace | None:
    """`agentctl [--socket P] run [OPTIONS] PROMPT...` parsed without argparse, or None.

    `agentctl run` is the command scripts call in loops, and argparse (with the
    re, gettext and locale it imports) is a large share of its start-up. The
    common, unambiguous shapes are read here; anything else (help, `--`, an
    option after the prompt, `--opt=value`, a value that looks like an option,
    a conflict) returns None, for argparse to parse or to explain.
    """
    values: dict[str, object] = {
        "command": "run",
        "socket": None,
        "model": None,
        "session": None,
        "continue_": False,
        "json": False,
        "quiet": False,
        "cwd": None,
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


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv == ["--version"]:
        # The one call that needs nothing but a string.
        print(f"agentctl {agentd.__version__}")
        return 0
    quick = parse_run_quickly(argv)
    if quick is not None:
        if _refuse_bad_input(quick):
            return 2
        from agentctl._run import run_command

        return run_command(quick)
    parser = build_parser(only=_command_in(argv))
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if _refuse_bad_input(args):
        return 2
    if args.command == "run":
        from agentctl._run import run_command

        return run_command(args)
    from agentctl import _admin

    command = {
        "status": _admin.status,
        "sessions": _admin.sessions,
        "show": _admin.show,
        "rm": _admin.rm,
        "cancel": _admin.cancel,
        "stop": _admin.stop,
        "models": _admin.models,
    }[args.command]
    return command(args)
