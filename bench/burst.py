"""A burst: one run whose provider sends thousands of chunks with no delay, one subscriber that keeps up.

The subscriber is the trio client library (`agentctl.client`) reading its
notifications as fast as it can, the way `agentctl run` does: it is slower than
a burst, never stalled. What it loses is counted from the wire: the
`events.gap` totals, and the text its deltas did not carry (their offsets
against the final text).

    python -m bench.burst [--quick]
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import trio

from agentctl.client import event_params, open_client

from ._common import Daemon, Row, daemon

__all__ = ["run"]

SECTION = "burst"
CHUNKS = 5_000
CHUNK = "word " * 4  # 20 characters, a model's delta
RUN_TIMEOUT = 60.0


async def _one_run(d: Daemon, index: int) -> dict[str, Any]:
    async with open_client(d.socket_path) as client:
        ws = await client.call("workspace.open", {"path": str(d.project())})
        sub = await client.call("events.subscribe", {"workspace_id": ws["id"]})
        session = await client.call("session.create", {"workspace_id": ws["id"], "title": f"burst {index}"})
        prompt = json.dumps({"chunks": [CHUNK] * CHUNKS})
        started = time.monotonic()
        reply = await client.call(
            "agent.send",
            {"workspace_id": ws["id"], "session_id": session["id"], "prompt": prompt, "model": "scripted"},
        )
        deltas = gaps = dropped = carried = 0
        with trio.fail_after(RUN_TIMEOUT):
            async for method, params in client.notifications:
                event = event_params(params) if method == "event" else None
                if event is None or event["subscription_id"] != sub["subscription_id"]:
                    continue
                kind, payload = event["type"], event["payload"]
                if kind == "message.delta" and payload["run_id"] == reply["run_id"]:
                    deltas += 1
                    carried += len(payload["text"])
                elif kind == "events.gap":
                    gaps += 1
                    dropped += payload.get("dropped", 0)
                elif kind == "run.complete" and payload["run_id"] == reply["run_id"]:
                    text_missing = len(payload["text"]) - carried
                    break
        return {
            "seconds": time.monotonic() - started,
            "deltas_received": deltas,
            "gaps": gaps,
            "events_dropped": dropped,
            "text_missing_chars": text_missing,
        }


def run(quick: bool = False) -> tuple[dict[str, Any], list[Row]]:
    runs = 3 if quick else 10
    with daemon() as d:
        results = [trio.run(_one_run, d, i) for i in range(runs)]
    lost = [r["events_dropped"] for r in results]
    missing = [r["text_missing_chars"] for r in results]
    received = [r["deltas_received"] for r in results]
    data = {"chunks": CHUNKS, "chunk_chars": len(CHUNK), "runs": results}
    rows = [
        Row(
            SECTION,
            f"{CHUNKS:,} chunks, no delay, 1 sub: events lost per run (max; runs with a gap)",
            f"{max(lost)} ({sum(1 for r in results if r['gaps'])} of {runs})",
            "0",
            max(lost) == 0,
        ),
        Row(
            SECTION,
            "same: text the deltas did not carry, chars per run (max)",
            f"{max(missing):,}",
            "0",
            max(missing) == 0,
        ),
        Row(
            SECTION,
            "same: deltas received per run (min / max; merged when the queue fills)",
            f"{min(received):,} / {max(received):,}",
        ),
    ]
    return data, rows


def _main() -> None:
    data, rows = run(quick="--quick" in sys.argv[1:])
    for row in rows:
        print(f"{row.what:80} {row.value:24} {row.target}")
    print(json.dumps(data, indent=2))


if __name__ == "__main__":
    _main()
