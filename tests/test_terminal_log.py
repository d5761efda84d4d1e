"""The store's terminal log: RunCompletes the database refused, durable beside it."""

from __future__ import annotations

from pathlib import Path

from agentd.protocol import run_complete
from agentd.store import TerminalLog, TerminalRecord


def test_records_read_back_as_written_and_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    log = TerminalLog(str(tmp_path / "agentd.db-terminal"))
    complete = run_complete("ses_1", "r1", message_id="m1", text="héllo\n")
    first = TerminalRecord("ws_1", 7, complete, ("m1", "héllo\n", "stop"))
    second = TerminalRecord("ws_1", 9, run_complete("ses_1", "r2", cancelled=True, error="ignored"))
    log.append(first)
    log.append(second)
    # A crash mid-write: half of a third record, never told to anyone.
    with open(log.path, "ab") as f:
        f.write(b'{"workspace_id":"ws_1","seq":11,"compl')
    assert log.read() == [first, second]
    assert second.complete.error is None  # a cancelled run carries no error
    log.clear()
    assert log.read() == []


def test_a_missing_log_reads_as_empty_and_clears_quietly(tmp_path: Path) -> None:
    log = TerminalLog(str(tmp_path / "none"))
    assert log.read() == []
    log.clear()
    assert not (tmp_path / "none").exists()
