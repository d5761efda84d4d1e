"""agentd's log: one line per record with its fields, levels for every logger, rotation by size, journald's form."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import WAIT, DaemonFactory

from agentd.daemon import LogFile, OneLineFormatter, configure_logging, stderr_is_journal


def record(message: str, *args: object, level: int = logging.WARNING, **fields: object) -> logging.LogRecord:
    rec = logging.makeLogRecord(
        {"name": "agentd.runs", "levelno": level, "levelname": logging.getLevelName(level), "msg": message}
    )
    rec.args = args or None
    rec.__dict__.update(fields)
    return rec


def test_a_line_is_level_logger_message_then_its_fields() -> None:
    line = OneLineFormatter(timestamps=False).format(record("run %s failed", "r1", run_id="r1", status="failed"))
    assert line == "WARNING agentd.runs: run r1 failed run_id=r1 status=failed"


def test_a_line_starts_with_a_timestamp_off_the_journal() -> None:
    line = OneLineFormatter().format(record("hello"))
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING agentd\.runs: hello", line), line


def test_a_field_with_spaces_quotes_or_newlines_stays_one_quoted_token() -> None:
    line = OneLineFormatter(timestamps=False).format(
        record("x", error='bad "thing"\nERROR agentd: forged', empty="", plain="ok")
    )
    assert "\n" not in line
    assert line == r'WARNING agentd.runs: x error="bad \"thing\"\nERROR agentd: forged" empty="" plain=ok'


def test_the_message_keeps_its_escapes_and_clip() -> None:
    line = OneLineFormatter(timestamps=False).format(record("said: %s", "a\nb\x1b[2Jc" + "z" * 5000))
    assert line.startswith(r"WARNING agentd.runs: said: a\nb\x1b[2Jc")
    assert "more characters)" in line and len(line) < 4200


def test_under_the_journal_the_line_has_a_priority_and_no_timestamp() -> None:
    formatter = OneLineFormatter(timestamps=False, priority_prefix=True)
    assert formatter.format(record("hello")) == "<4>WARNING agentd.runs: hello"
    assert formatter.format(record("hi", level=logging.INFO)) == "<6>INFO agentd.runs: hi"


def test_journal_stream_counts_only_when_it_names_our_stderr(tmp_path: Path) -> None:
    with open(tmp_path / "err", "w") as err, open(tmp_path / "other", "w") as other:
        st = os.fstat(err.fileno())
        ours = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert stderr_is_journal(ours, err.fileno())
        # Inherited by a daemon whose stderr went elsewhere: not the journal.
        assert not stderr_is_journal(ours, other.fileno())
        assert not stderr_is_journal({}, err.fileno())
        assert not stderr_is_journal({"JOURNAL_STREAM": "junk"}, err.fileno())


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers[:]:
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_the_log_file_rotates_at_its_size_keeping_one_old_file(tmp_path: Path, restore_logging: None) -> None:
    path = tmp_path / "agentd.log"
    configure_logging("info", str(path), max_bytes=1000)
    log = logging.getLogger("agentd.test")
    for i in range(60):
        log.info("line %03d %s", i, "x" * 40)
    old, current = (tmp_path / "agentd.log.1").read_text(), path.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agentd.log", "agentd.log.1"]
    assert len(old.encode()) <= 1000 and len(current.encode()) <= 1000
    assert "line 059" in current and "line 058" in old + current
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_the_level_filters_every_logger(tmp_path: Path, restore_logging: None) -> None:
    path = tmp_path / "agentd.log"
    configure_logging("warning", str(path))
    for name in ("agentd", "agentd.server._connection", "httpx", "some.library"):
        logging.getLogger(name).info("%s at info", name)
        logging.getLogger(name).warning("%s at warning", name)
    text = path.read_text()
    assert "at info" not in text
    assert text.count("at warning") == 4


def test_log_file_handler_makes_the_file_0600(tmp_path: Path) -> None:
    handler = LogFile(str(tmp_path / "a.log"), 100)
    try:
        assert os.stat(tmp_path / "a.log").st_mode & 0o777 == 0o600
    finally:
        handler.close()


# --- a real daemon -------------------------------------------------------------------


async def test_the_daemon_logs_at_the_level_it_is_given(start_daemon: DaemonFactory) -> None:
    quiet = start_daemon("--log-level", "warning")
    assert quiet.terminate() == 0
    chatty = start_daemon("--log-level", "debug", socket_path=quiet.socket_path)
    assert chatty.terminate() == 0
    assert "listening on" not in quiet.log()
    assert re.search(r"DEBUG agentd: starting version=\S+ socket=\S+agentd\.sock log_file=\S+", chatty.log())
    assert "INFO agentd: agentd" in chatty.log() and "listening on" in chatty.log()


async def test_the_daemon_rotates_its_log_file_while_it_runs(start_daemon: DaemonFactory) -> None:
    # "starting" at debug, then "listening": together past 200 bytes, so the second rolls the file over.
    daemon = start_daemon("--log-level", "debug", "--log-max-bytes", "200")
    async with daemon.client() as client:
        await client.call("ping")  # served: "listening" was logged before any connection was
    old = daemon.log_path.with_name(daemon.log_path.name + ".1")
    assert "DEBUG agentd: starting" in old.read_text(), daemon.log()
    assert "listening on" in daemon.log()
    # Its stderr went to the same file: it follows the rotation, so a stray traceback lands in the current file.
    assert os.readlink(f"/proc/{daemon.proc.pid}/fd/2") == str(daemon.log_path)
    assert daemon.terminate() == 0
    assert len(old.read_bytes()) <= 200 and len(daemon.log_path.read_bytes()) <= 200


def test_under_systemd_the_daemon_writes_journal_lines_to_stderr(short_tmp: Path, env: dict[str, str]) -> None:
    err_path = short_tmp / "stderr"
    socket_path = short_tmp / "j.sock"
    with open(err_path, "wb") as err:
        st = os.fstat(err.fileno())
        journal_env = {**env, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        read_fd, write_fd = os.pipe()
        proc = subprocess.Popen(
            [sys.executable, "-m", "agentd", "--socket", str(socket_path), "--ready-fd", str(write_fd)],
            env=journal_env,
            stdin=subprocess.DEVNULL,
            stderr=err,
            pass_fds=(write_fd,),
        )
        os.close(write_fd)
        try:
            import select

            assert select.select([read_fd], [], [], WAIT)[0], "agentd did not become ready"
            assert os.read(read_fd, 64).startswith(b"ready")
        finally:
            os.close(read_fd)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=WAIT) == 0
    lines = err_path.read_text().splitlines()
    assert any(re.fullmatch(r"<6>INFO agentd: agentd \d+ listening on \S+", line) for line in lines), lines
    assert all(line.startswith("<") for line in lines), lines
