"""Memory after a large answer: the daemon's RSS idle, after one ~10 MB answer, and after its workspace closed.

Each round opens a workspace, runs the `scripted` model for a ~10 MB answer
with a subscriber reading it, disconnects, and waits for the workspace's idle
close. What the daemon keeps afterwards (buffers grown to the answer's size,
freed heap the allocator does not give back) shows as RSS above idle, and as
growth from round to round.

    python -m bench.memory [--quick]
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from agentctl.blocking import BlockingClient

from ._common import Daemon, Row, daemon, rss_kb

__all__ = ["run"]

SECTION = "memory"
CHUNK = "z" * 16384
ANSWER_CHUNKS = 640  # 10 MiB
IDLE_GRACE = 0.5
TARGET_RATIO = 1.2


def _rss_mb(d: Daemon) -> float:
    return rss_kb(d.pid)["rss_kb"] / 1024


def _settled_rss_mb(d: Daemon, control: BlockingClient, workspaces: int, timeout: float = 30.0) -> float:
    """RSS once server.status shows `workspaces` open and a moment has passed."""
    deadline = time.monotonic() + timeout
    while control.call("server.status", timeout=5)["workspaces"] != workspaces:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the daemon still has workspaces open after {timeout}s")
        time.sleep(0.05)
    time.sleep(0.3)
    return _rss_mb(d)


def _one_answer(d: Daemon, project: str) -> float:
    """Run one ~10 MB answer on a connection of its own; RSS right after its RunComplete."""
    with BlockingClient.connect(d.socket_path) as client:
        ws = client.call("workspace.open", {"path": project}, timeout=10)
        sub = client.call("events.subscribe", {"workspace_id": ws["id"]}, timeout=10)
        session = client.call("session.create", {"workspace_id": ws["id"]}, timeout=10)
        reply = client.call(
            "agent.send",
            {
                "workspace_id": ws["id"],
                "session_id": session["id"],
                "prompt": json.dumps({"chunks": [CHUNK] * ANSWER_CHUNKS}),
                "model": "scripted",
            },
            timeout=30,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            item = client.next_notification(timeout=30)
            if item is None:
                continue
            event = item[1][0]
            if (
                event["subscription_id"] == sub["subscription_id"]
                and event["type"] == "run.complete"
                and event["payload"]["run_id"] == reply["run_id"]
            ):
                assert len(event["payload"]["text"]) == len(CHUNK) * ANSWER_CHUNKS
                break
        else:
            raise TimeoutError("no run.complete within 120 s")
        return _rss_mb(d)


def run(quick: bool = False) -> tuple[dict[str, Any], list[Row]]:
    rounds = 2 if quick else 4
    with daemon("--idle-grace", str(IDLE_GRACE)) as d, BlockingClient.connect(d.socket_path) as control:
        project = str(d.project("memory"))
        # Idle means warmed up: one small run has loaded what any run loads.
        with BlockingClient.connect(d.socket_path) as warm:
            ws = warm.call("workspace.open", {"path": project}, timeout=10)
            session = warm.call("session.create", {"workspace_id": ws["id"]}, timeout=10)
            warm.call(
                "agent.send",
                {"workspace_id": ws["id"], "session_id": session["id"], "prompt": "warm up", "model": "echo"},
                timeout=10,
            )
            time.sleep(0.5)
        idle = _settled_rss_mb(d, control, 0)
        results = []
        for _ in range(rounds):
            after_answer = _one_answer(d, project)
            closed = _settled_rss_mb(d, control, 0)
            results.append({"after_answer_mb": after_answer, "after_close_mb": closed})
        peak = rss_kb(d.pid)["peak_rss_kb"] / 1024
    last = results[-1]["after_close_mb"]
    data = {"idle_mb": idle, "peak_mb": peak, "answer_bytes": len(CHUNK) * ANSWER_CHUNKS, "rounds": results}
    rows = [
        Row(SECTION, "daemon RSS idle (warmed up)", f"{idle:.1f} MB"),
        Row(
            SECTION,
            "RSS after a 10 MiB answer, each round",
            ", ".join(f"{r['after_answer_mb']:.1f}" for r in results) + f" MB (peak {peak:.1f})",
        ),
        Row(
            SECTION,
            "RSS after its workspace closed, each round (vs idle)",
            ", ".join(f"{r['after_close_mb']:.1f}" for r in results) + f" MB (x{last / idle:.2f})",
            f"<= {TARGET_RATIO:g} x idle",
            last <= TARGET_RATIO * idle,
        ),
    ]
    return data, rows


def _main() -> None:
    data, rows = run(quick="--quick" in sys.argv[1:])
    for row in rows:
        print(f"{row.what:56} {row.value:40} {row.target}")
    print(json.dumps(data, indent=2))


if __name__ == "__main__":
    _main()
