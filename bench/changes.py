"""Changes: what recording a run's file changes costs a write, and a revert.

A write tool's write is recorded: the file is read and kept before the run's
first write to it, and read and kept again after each write. Measured, in
one run of the suite, against the reference of the same write unrecorded
(the file replaced by a write beside it and a rename, as the write tool
does), in-process on a real store (SQLite in a temporary directory):

- a run's first write to a file of 4 KiB and of 1 MiB (before and after kept);
- a later write to the same file (only the after is kept);
- `run.revert` of a run that wrote 100 files of 4 KiB, per file.

    python -m bench.changes [--quick]
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from agentd.changes import ChangeRequests, RunChanges
from agentd.protocol import run_complete
from agentd.runs import RunIndex
from agentd.store import RunRecord, Store, new_id

from ._common import Row

__all__ = ["run"]

SECTION = "changes"
SIZES = {"4 KiB": 4 * 1024, "1 MiB": 1024 * 1024}


def _replace(path: Path, data: bytes) -> None:
    """The write itself, as the write tool makes it: beside the file, then renamed over it."""
    temporary = path.with_name(f".{path.name}.new")
    with open(temporary, "wb") as f:
        f.write(data)
    os.replace(temporary, path)


async def _new_run(store: Store, workspace_id: str, session_id: str) -> str:
    run_id = new_id("run")
    await store.create_run(RunRecord(run_id, workspace_id, session_id, "bench", "scripted", time.time()))
    return run_id


async def _measure(root: Path, store: Store, rounds: int) -> dict[str, Any]:
    workspace = await store.workspace_for_path(str(root))
    session = await store.create_session(workspace.id, "bench")
    results: dict[str, Any] = {}
    for label, size in SIZES.items():
        data = b"x" * (size - 1) + b"\n"
        plain, first, later = [], [], []
        for i in range(rounds):
            path = root / f"plain-{i}.txt"
            path.write_bytes(b"before\n")
            start = time.perf_counter()
            await trio.to_thread.run_sync(_replace, path, data)
            plain.append(time.perf_counter() - start)

            changes = RunChanges(store, str(root), await _new_run(store, workspace.id, session.id), session.id)
            name = f"recorded-{label}-{i}.txt"
            (root / name).write_bytes(b"before\n")
            start = time.perf_counter()
            await changes.before_write(name)
            await trio.to_thread.run_sync(_replace, root / name, data)
            await changes.after_write(name)
            first.append(time.perf_counter() - start)
            start = time.perf_counter()
            await changes.before_write(name)
            await trio.to_thread.run_sync(_replace, root / name, data[::-1])
            await changes.after_write(name)
            later.append(time.perf_counter() - start)
        reference = statistics.median(plain)
        results[label] = {
            "unrecorded_ms": reference * 1000,
            "first_write_ms": statistics.median(first) * 1000,
            "later_write_ms": statistics.median(later) * 1000,
            "first_write_ratio": statistics.median(first) / reference,
            "later_write_ratio": statistics.median(later) / reference,
        }

    files = 100
    run_id = await _new_run(store, workspace.id, session.id)
    changes = RunChanges(store, str(root), run_id, session.id)
    for i in range(files):
        name = f"revert/f{i}.txt"
        (root / "revert").mkdir(exist_ok=True)
        (root / name).write_bytes(b"before\n" * 512)
        await changes.before_write(name)
        await trio.to_thread.run_sync(_replace, root / name, b"after\n" * 512)
        await changes.after_write(name)
    await store.finish_run(run_complete(session.id, run_id, changes=changes.count))
    start = time.perf_counter()
    reverted = await ChangeRequests(store, RunIndex(store)).revert(run_id, force=False)
    elapsed = time.perf_counter() - start
    assert len(reverted.reverted) == files
    results["revert_per_file_ms"] = elapsed / files * 1000
    return results


async def _run(rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="agentd-bench-changes") as tmp:
        root = Path(tmp) / "project"
        root.mkdir()
        store = await Store.open(str(Path(tmp) / "agentd.db"))
        try:
            return await _measure(root.resolve(), store, rounds)
        finally:
            await store.aclose()


def run(quick: bool = False) -> tuple[dict[str, Any], list[Row]]:
    results = trio.run(_run, 5 if quick else 40)
    rows = []
    for label in SIZES:
        r = results[label]
        rows.append(
            Row(
                SECTION,
                f"a run's first write to a {label} file, recorded",
                f"{r['first_write_ms']:.2f} ms, {r['first_write_ratio']:.1f}x the write unrecorded"
                f" ({r['unrecorded_ms']:.2f} ms)",
            )
        )
        rows.append(
            Row(
                SECTION,
                "a later write to it",
                f"{r['later_write_ms']:.2f} ms, {r['later_write_ratio']:.1f}x the write unrecorded",
            )
        )
    rows.append(Row(SECTION, "run.revert of 100 files of 3.5 KB", f"{results['revert_per_file_ms']:.2f} ms a file"))
    return results, rows


def _main() -> None:
    results, rows = run(quick="--quick" in sys.argv[1:])
    for row in rows:
        print(f"{row.what:52} {row.value}")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    _main()
