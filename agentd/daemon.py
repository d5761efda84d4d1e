"""The `agentd` command: parse the command line, configure logging, serve."""

from __future__ import annotations

import argparse
import io
import logging
import logging.handlers
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import trio

import agentd
from agentd._memory import limit_retained_memory
from agentd.paths import data_dir, open_private, resolve_socket_path
from agentd.rpc import clip

__all__ = ["DEFAULT_LOG_MAX_BYTES", "LogFile", "OneLineFormatter", "configure_logging", "main", "stderr_is_journal"]

# C0 and C1 controls, DEL and the Unicode line breaks, each as an escape a reader can see.
_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))}
_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t", 0x2028: "\\u2028", 0x2029: "\\u2029"})
# Call sites bound what they quote (`agentd.rpc.brief`); this catches one that does not.
_MAX_LOGGED_MESSAGE = 4000


# What every LogRecord has; anything else on a record came in `extra=` and is a field.
_RECORD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
# journald's priority prefix (SyslogLevelPrefix=, on by default): `journalctl -p warning` then works.
_SYSLOG_PRIORITY = {"CRITICAL": 2, "ERROR": 3, "WARNING": 4, "INFO": 6, "DEBUG": 7}
# A daemon log past this size is moved to `agentd.log.1`, replacing the one before.
DEFAULT_LOG_MAX_BYTES = 8 * 1024 * 1024


def _escape(text: str) -> str:
    return clip(text.translate(_ESCAPES), _MAX_LOGGED_MESSAGE)


def _field(value: object) -> str:
    # Backslashes and quotes first, so the escapes _escape adds stay single and readable.
    text = _escape(str(value).replace("\\", "\\\\").replace('"', '\\"'))
    if text and not any(c in text for c in ' "=\\'):
        return text
    return f'"{text}"'


class OneLineFormatter(logging.Formatter):
    """One record, one line: `level logger: message key=value ...`, its message unable to start a line of its own.

    A message carries text from clients and providers (a run's error, a
    method name); a newline in it would let that text forge a log line, and
    terminal escapes would let it rewrite the screen of whoever tails the log.
    Fields given as `extra=` follow as key=value, quoted when they hold a
    space, a quote or an equals sign. The traceback of a logged exception
    still follows on its own lines.
    """

    def __init__(self, *, timestamps: bool = True, priority_prefix: bool = False) -> None:
        fmt = "%(levelname)s %(name)s: %(message)s"
        if timestamps:
            fmt = "%(asctime)s " + fmt
        super().__init__(fmt)
        self._priority_prefix = priority_prefix

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = _escape(record.message)
        line = super().formatMessage(record)
        fields = [f"{key}={_field(value)}" for key, value in record.__dict__.items() if key not in _RECORD_ATTRIBUTES]
        if fields:
            line += " " + " ".join(fields)
        if self._priority_prefix:
            line = f"<{_SYSLOG_PRIORITY.get(record.levelname, 6)}>{line}"
        return line


def stderr_is_journal(environ: Mapping[str, str] | None = None, fd: int = 2) -> bool:
    """Whether `fd` is the journal's stream: `$JOURNAL_STREAM` names its device and inode.

    Comparing them, not only testing that the variable is set, matters: a
    daemon agentctl starts from inside a service inherits the variable with
    its stderr sent to a file.
    """
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(fd)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


class LogFile(logging.handlers.RotatingFileHandler):
    """The daemon's own log file, moved aside to `NAME.1` when it passes its size, and made 0600.

    When stderr was sent to the same file (agentctl starts the daemon so, to
    keep what is written before logging is set up), stderr follows each
    rotation: a stray traceback lands in the current file, not the old one.
    """

    def __init__(self, path: str, max_bytes: int) -> None:
        self._stderr_follows = _same_file(path, 2)
        super().__init__(path, maxBytes=max_bytes, backupCount=1, encoding="utf-8", errors="backslashreplace")

    def _open(self) -> io.TextIOWrapper:
        # Run errors are in it: readable by its owner only, from its first byte.
        fd = open_private(self.baseFilename)
        return open(fd, "a", encoding=self.encoding, errors=self.errors)

    def doRollover(self) -> None:
        super().doRollover()
        if self._stderr_follows and self.stream is not None:
            sys.stderr.flush()
            os.dup2(self.stream.fileno(), 2)


def _same_file(path: str, fd: int) -> bool:
    try:
        a, b = os.stat(path), os.fstat(fd)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def configure_logging(level: str, log_file: str | None, max_bytes: int = DEFAULT_LOG_MAX_BYTES) -> None:
    """Every logger at `level`, one line per record: to `log_file`, rotated by size, else to stderr.

    Under systemd, stderr is the journal: it stamps each line itself, so ours
    carry no time, and the level goes as a priority prefix too.
    """
    handler: logging.Handler
    if log_file is not None:
        handler = LogFile(log_file, max_bytes)
        handler.setFormatter(OneLineFormatter())
    else:
        handler = logging.StreamHandler(sys.stderr)
        journal = stderr_is_journal()
        handler.setFormatter(OneLineFormatter(timestamps=not journal, priority_prefix=journal))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level.upper())


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
    p.add_argument(
        "--log-file",
        metavar="PATH",
        help="log to this file instead of stderr, moving it to PATH.1 when it passes --log-max-bytes",
    )
    p.add_argument(
        "--log-max-bytes",
        type=_positive_int,
        default=DEFAULT_LOG_MAX_BYTES,
        metavar="BYTES",
        help="the size at which --log-file is rotated (default 8 MiB)",
    )
    p.add_argument(
        "--allow-root",
        action="store_true",
        help="also serve connections from root (by default only this daemon's own user is served)",
    )
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
    socket_path = resolve_socket_path(args.socket)
    try:
        configure_logging(args.log_level, args.log_file, args.log_max_bytes)
    except OSError as exc:
        print(f"agentd: cannot open the log file {args.log_file}: {exc}", file=sys.stderr)
        return 1
    logging.getLogger("agentd").debug(
        "starting", extra={"version": agentd.__version__, "socket": socket_path, "log_file": args.log_file}
    )
    from agentd.server import DaemonConfig, StartupError, serve

    config = DaemonConfig(
        socket_path=Path(socket_path),
        data_dir=args.data_dir or data_dir(),
        must_deliver_timeout=args.must_deliver_timeout,
        idle_grace=args.idle_grace,
        subscriber_capacity=args.subscriber_buffer,
        max_message_size=args.max_message_size,
        graceful_timeout=args.graceful_timeout,
        ready_fd=args.ready_fd,
        default_model=args.model,
        idle_exit=args.idle_exit,
        owns_data_dir=args.data_dir is None,
        allow_root=args.allow_root,
    )
    # Before the first large block: from here on each is given back when freed.
    limit_retained_memory()
    try:
        trio.run(serve, config)
    except StartupError as exc:
        print(f"agentd: {exc}", file=sys.stderr)
        return exc.exit_status
    except Exception as exc:
        # A failure of the daemon itself, past every workspace's own boundary:
        # one line says what, the traceback is there for whoever asks for it.
        from agentd.runs import describe_error

        log = logging.getLogger("agentd")
        log.debug("agentd failed", exc_info=exc)
        log.critical("agentd failed: %s (start with --log-level debug for the traceback)", describe_error(exc))
        return 70  # EX_SOFTWARE
    return 0
