"""The `agentd` command: parse the command line, configure logging, serve."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import trio

import agentd
from agentd.paths import data_dir, resolve_socket_path
from agentd.rpc import clip

__all__ = ["main"]

# C0 and C1 controls, DEL and the Unicode line breaks, each as an escape a reader can see.
_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))}
_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t", 0x2028: "\\u2028", 0x2029: "\\u2029"})
# Call sites bound what they quote (`agentd.rpc.brief`); this catches one that does not.
_MAX_LOGGED_MESSAGE = 4000


class _OneLineFormatter(logging.Formatter):
    """One record, one line: its message cannot start a line of its own.

    A message carries text from clients and providers (a run's error, a
    method name); a newline in it would let that text forge a log line, and
    terminal escapes would let it rewrite the screen of whoever tails the log.
    The traceback of a logged exception still follows on its own lines.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = clip(record.message.translate(_ESCAPES), _MAX_LOGGED_MESSAGE)
        return super().formatMessage(record)


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="agentd", description="The agentd daemon.")
    p.add_argument("--version", action="version", version=f"agentd {agentd.__version__}")
    p.add_argument("--socket", metavar="PATH", help="Unix socket to listen on")
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        help="where the database lives (default: $XDG_DATA_HOME/agentd, else ~/.local/share/agentd)",
    )
    p.add_argument(
        "--must-deliver-timeout",
        type=_positive,
        default=10.0,
        metavar="SECONDS",
        help="disconnect a subscriber that cannot take a must-deliver event within this (default 10)",
    )
    p.add_argument(
        "--idle-grace",
        type=_positive,
        default=30.0,
        metavar="SECONDS",
        help="close a workspace this long after its last client released it (default 30)",
    )
    p.add_argument(
        "--subscriber-buffer",
        type=_positive_int,
        default=1024,
        metavar="EVENTS",
        help="events queued per subscriber before lossy ones are dropped (default 1024)",
    )
    p.add_argument(
        "--max-message-size",
        type=_positive_int,
        default=16 * 1024 * 1024,
        metavar="BYTES",
        help="largest message a client may send (default 16 MiB)",
    )
    p.add_argument(
        "--graceful-timeout",
        type=_positive,
        default=8.0,
        metavar="SECONDS",
        help="on SIGTERM, how long runs get to end and their clients to hear it before the daemon exits (default 8)",
    )
    p.add_argument(
        "--model",
        metavar="NAME",
        help="the default model, for runs that name none (default: $AGENTD_MODEL, else the configuration's)",
    )
    p.add_argument(
        "--idle-exit",
        type=_non_negative,
        metavar="SECONDS",
        help="exit after this long with no workspace, no run and no new connection"
        " (default: 600 when socket-activated, else never; 0: never)",
    )
    p.add_argument("--ready-fd", type=int, metavar="FD", help="write 'ready' to this fd once listening")
    p.add_argument(
        "--check-config",
        action="store_true",
        help="validate the model configuration, print every mistake with its line, and exit",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p


def check_config(default_model: str | None) -> int:
    """`agentd --check-config`: 0 when the configuration is usable, 1 (and every mistake) when not."""
    from agentd.models import ConfigError, config_path, load_config

    try:
        config = load_config(default_model=default_model)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    where = config.source if config.source != "environment" else f"the environment (no {config_path()})"
    print(f"{where}: {len(config.providers)} provider(s), {len(config.models)} model alias(es)")
    print(f"default model: {config.default_model}")
    note = config.default_note(config_path())
    if note is not None:
        print(note)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.check_config:
        return check_config(args.model)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=args.log_level.upper(), handlers=[handler])
    from agentd.server import DaemonConfig, StartupError, serve

    config = DaemonConfig(
        socket_path=Path(resolve_socket_path(args.socket)),
        data_dir=args.data_dir or data_dir(),
        must_deliver_timeout=args.must_deliver_timeout,
        idle_grace=args.idle_grace,
        subscriber_capacity=args.subscriber_buffer,
        max_message_size=args.max_message_size,
        graceful_timeout=args.graceful_timeout,
        ready_fd=args.ready_fd,
        default_model=args.model,
        idle_exit=args.idle_exit,
    )
    try:
        trio.run(serve, config)
    except StartupError as exc:
        print(f"agentd: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        # A failure of the daemon itself, past every workspace's own boundary:
        # one line says what, the traceback is there for whoever asks for it.
        from agentd.runs import describe_error

        log = logging.getLogger("agentd")
        log.debug("agentd failed", exc_info=exc)
        log.critical("agentd failed: %s (start with --log-level debug for the traceback)", describe_error(exc))
        return 70  # EX_SOFTWARE
    return 0
