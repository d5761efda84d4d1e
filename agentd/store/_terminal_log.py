"""RunCompletes the database refused, kept durable beside it until it takes them.

A run's end is told to clients only once it is durable: normally that is the
database transaction that records it (`Store.finish_run`). When SQLite refuses
that write (another process holds the write lock past the busy timeout, the
disk is full for the database's WAL but not for a few hundred bytes more), the
run still has to end, and what its clients are told must be what the next
daemon finds, even if this one is killed before the database recovers. So the
RunComplete, the assistant message's final text and the event's seq are
appended here, one JSON line each, and fsync'd, before the event goes out. At
start the store applies every record to the database before it finishes
interrupted runs, so a run told live is never finished a second time.

The file is append-only while a daemon runs and emptied at start once its
records are in the database. A line cut short by a crash mid-write was never
told to anyone (the event goes out after the fsync), so it is skipped.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import attrs

from agentd.paths import open_private
from agentd.protocol import RunComplete, converter

__all__ = ["TerminalLog", "TerminalRecord"]

log = logging.getLogger(__name__)


@attrs.frozen
class TerminalRecord:
    workspace_id: str
    # The seq the run.complete event was published with: the restart logs it there, once.
    seq: int
    complete: RunComplete
    # (message_id, text, finish_reason) of the run's assistant message, when it had one.
    final_message: tuple[str, str, str | None] | None = None


class TerminalLog:
    def __init__(self, path: str) -> None:
        self.path = path

    def append(self, record: TerminalRecord) -> None:
        """Write `record` durably; OSError if it could not be.

        Blocking, on purpose and briefly: it runs only when the database has
        refused a run's end, and the event must not go out before this returns.
        """
        line = json.dumps(converter.unstructure(record), ensure_ascii=False, separators=(",", ":")) + "\n"
        fd = open_private(self.path)
        try:
            data = line.encode("utf-8")
            while data:
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        finally:
            os.close(fd)

    def read(self) -> list[TerminalRecord]:
        """Every whole record; a line a crash cut short is skipped."""
        try:
            with open(self.path, "rb") as f:
                lines = f.read().split(b"\n")
        except FileNotFoundError:
            return []
        records: list[TerminalRecord] = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                raw: Any = json.loads(line)
                records.append(converter.structure(raw, TerminalRecord))
            except Exception as exc:
                # Only the last line can be torn; anything else is damage, and
                # what it held was in the database's hands already or lost.
                log.warning("%s line %d: skipped an unreadable record (%s)", self.path, number, type(exc).__name__)
        return records

    def clear(self) -> None:
        """Empty the file, durably: its records are in the database now."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
