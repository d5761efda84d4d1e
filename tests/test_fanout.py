"""Event fan-out through a real daemon: a lagging subscriber loses lossy events alone and is told;
one that cannot take a must-deliver event is disconnected; everyone else is unaffected."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
from support import WAIT, DaemonFactory, RawConnection, Workspace, open_raw, open_workspace

from agentctl.client import Client
from agentd.rpc import Notification

CHUNK = "x" * 16384


async def stalled_subscriber(raw: RawConnection, project: Path) -> str:
    """Open and subscribe on a raw connection, then (by not reading) stall."""
    opened = await raw.call("workspace.open", {"path": str(project)})
    assert opened.error is None
    sub = await raw.call("events.subscribe", {"workspace_id": opened.result["id"]})
    assert sub.error is None
    return str(sub.result["subscription_id"])


async def wait_for_clients(client: Client, count: int) -> None:
    """Poll server.status (bounded) until the daemon has `count` clients."""
    with trio.fail_after(WAIT):
        while (await client.call("server.status"))["clients"] != count:
            await trio.sleep(0.05)


def deltas_of(events: list[dict[str, Any]], run_id: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "message.delta" and e["payload"]["run_id"] == run_id]


async def test_subscriber_that_never_reads_is_disconnected_and_others_are_unaffected(
    start_daemon: DaemonFactory, project: Path
) -> None:
    daemon = start_daemon("--subscriber-buffer", "64", "--must-deliver-timeout", "1")
    stuck = await open_raw(daemon)
    await stalled_subscriber(stuck, project)
    async with daemon.client() as client:
        ws = await open_workspace(client, project)
        session_id = await ws.new_session()
        chunks = [CHUNK] * 300
        reply = await ws.send(session_id, {"chunks": chunks, "delay_ms": 2})
        rc = await ws.events.until_complete(reply["run_id"])

        # The subscriber that keeps up got everything, in order, with no gap.
        assert rc["text"] == CHUNK * 300 and rc["error"] is None
        deltas = deltas_of(ws.events.seen, reply["run_id"])
        assert [d["payload"]["offset"] for d in deltas] == [i * len(CHUNK) for i in range(300)]
        assert ws.events.of_type("events.gap") == []
        seqs = [e["seq"] for e in ws.events.seen]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))

        status = await client.call("server.status")
        assert status["events_dropped"] > 0

        # The stuck one is cut off at the must-deliver timeout, not left hanging.
        # (Reading it now would unstick it, so watch the daemon's client count.)
        await wait_for_clients(client, 1)
        assert "did not take run.complete" in daemon.log()
        assert await stuck.closed_by_peer()
        # ...and the daemon goes on serving.
        assert await client.call("ping") == {}


async def test_lagging_subscriber_gets_one_gap_when_it_has_room_again(
    start_daemon: DaemonFactory, project: Path
) -> None:
    daemon = start_daemon("--subscriber-buffer", "16")
    slow = await open_raw(daemon)
    slow_sid = await stalled_subscriber(slow, project)
    async with daemon.client() as client:
        ws = await open_workspace(client, project)
        session_id = await ws.new_session()
        reply = await ws.send(session_id, {"chunks": [CHUNK] * 200, "delay_ms": 1})
        run_id = reply["run_id"]
        # Every delta is published once the RunComplete is (it is must-deliver:
        # this watcher gets it even if it lagged itself on a loaded machine).
        await ws.events.until_complete(run_id)
        assert (await client.call("server.status"))["events_dropped"] > 0

        # Now the slow subscriber catches up, and learns what it lost.
        received: list[dict[str, Any]] = []
        with trio.fail_after(WAIT):
            while not received or received[-1]["type"] != "run.complete":
                message = await slow.receive()
                assert message is not None, "slow subscriber was disconnected"
                if isinstance(message, Notification) and message.method == "event":
                    assert message.params[0]["subscription_id"] == slow_sid
                    received.append(message.params[0])

        gaps = [e for e in received if e["type"] == "events.gap"]
        assert len(gaps) == 1
        dropped = gaps[0]["payload"]["dropped"]
        assert dropped > 0 and set(gaps[0]["payload"]) == {"dropped"}
        # Every seq from its first event to the RunComplete is accounted for: it
        # got the event, or was told it lost it (the gap takes no seq of its
        # own), or got it merged into the next delta, which then stands for
        # the seqs since the event before it.
        unannounced = [
            later
            for earlier, later in zip(received, received[1:], strict=False)
            if "events.gap" not in (earlier["type"], later["type"]) and later["seq"] != earlier["seq"] + 1
        ]
        assert all(e["type"] == "message.delta" for e in unannounced)
        final = received[-1]["payload"]["text"]
        for d in deltas_of(received, run_id):
            offset, text = d["payload"]["offset"], d["payload"]["text"]
            assert final[offset : offset + len(text)] == text
        assert len(deltas_of(received, run_id)) < 200
        # The gap sits where the loss was: its seq is the last lost event's, and
        # the seq numbers around it jump by exactly the number lost.
        index = received.index(gaps[0])
        before, after = received[index - 1], received[index + 1]
        assert gaps[0]["seq"] == after["seq"] - 1
        assert after["seq"] - before["seq"] - 1 == dropped
        assert received[-1]["payload"]["run_id"] == run_id and received[-1]["payload"]["error"] is None


async def test_must_deliver_waits_for_a_subscriber_that_is_briefly_slow(
    start_daemon: DaemonFactory, project: Path
) -> None:
    daemon = start_daemon("--subscriber-buffer", "4", "--must-deliver-timeout", "10")
    slow = await open_raw(daemon)
    slow_sid = await stalled_subscriber(slow, project)
    async with daemon.client() as client:
        ws = await open_workspace(client, project)
        session_id = await ws.new_session()
        reply = await ws.send(session_id, {"chunks": [CHUNK] * 100})
        await ws.events.until_complete(reply["run_id"])
        # The slow subscriber is still connected and its RunComplete is waiting for it.
        terminal = None
        while terminal is None:
            message = await slow.receive()
            assert message is not None, "disconnected although it drained within the timeout"
            if isinstance(message, Notification) and message.method == "event":
                event = message.params[0]
                assert event["subscription_id"] == slow_sid
                if event["type"] == "run.complete":
                    terminal = event["payload"]
        assert terminal["run_id"] == reply["run_id"]
        assert terminal["text"] == CHUNK * 100


async def test_slow_subscriber_does_not_hold_back_a_fast_one(start_daemon: DaemonFactory, project: Path) -> None:
    daemon = start_daemon("--subscriber-buffer", "8", "--must-deliver-timeout", "5")
    stuck = await open_raw(daemon)
    await stalled_subscriber(stuck, project)
    async with daemon.client() as client:
        ws: Workspace = await open_workspace(client, project)
        session_id = await ws.new_session()
        reply = await ws.send(session_id, {"chunks": [CHUNK] * 100})
        rc = await ws.events.until_complete(reply["run_id"])
        assert rc["error"] is None
        # The fast subscriber had its RunComplete while the stuck one was still
        # connected, its copy still pending: it did not wait out the timeout.
        assert (await client.call("server.status"))["clients"] == 2


async def test_subscriber_whose_socket_is_full_is_disconnected_even_with_room_in_its_channel(
    start_daemon: DaemonFactory, project: Path
) -> None:
    # A roomy channel never fills, so nothing is dropped: the RunComplete goes
    # into it at once. Only the write to the stalled socket can tell that the
    # subscriber is not taking it, and that write is bounded too.
    daemon = start_daemon("--subscriber-buffer", "4096", "--must-deliver-timeout", "1")
    stuck = await open_raw(daemon)
    await stalled_subscriber(stuck, project)
    async with daemon.client() as client:
        ws = await open_workspace(client, project)
        session_id = await ws.new_session()
        reply = await ws.send(session_id, {"chunks": [CHUNK] * 300})
        await ws.events.until_complete(reply["run_id"])
        await wait_for_clients(client, 1)
        assert (await client.call("server.status"))["events_dropped"] == 0
        assert "its connection stopped reading" in daemon.log()
        assert await stuck.closed_by_peer()


async def test_subscriber_that_keeps_up_loses_no_text_in_a_burst(start_daemon: DaemonFactory, project: Path) -> None:
    # Thousands of chunks with no delay come faster than any client reads: the
    # queue fills (a small one, so it surely does), and the deltas that find it
    # nearly full are merged, not dropped.
    daemon = start_daemon("--subscriber-buffer", "64")
    async with daemon.client() as client:
        ws = await open_workspace(client, project)
        session_id = await ws.new_session()
        chunks = [f"chunk {i}; " for i in range(5000)]
        reply = await ws.send(session_id, {"chunks": chunks})
        rc = await ws.events.until_complete(reply["run_id"])
        assert rc["text"] == "".join(chunks)
        assert ws.events.of_type("events.gap") == []
        deltas = deltas_of(ws.events.seen, reply["run_id"])
        assert "".join(d["payload"]["text"] for d in deltas) == rc["text"]
        offsets = [d["payload"]["offset"] for d in deltas]
        assert offsets == [sum(len(d["payload"]["text"]) for d in deltas[:i]) for i in range(len(deltas))]
        seqs = [e["seq"] for e in ws.events.seen]
        assert seqs == sorted(seqs)
        # The events that end the run found room too.
        assert [e["type"] for e in ws.events.seen if e["seq"] > deltas[-1]["seq"]][:2] == [
            "message.updated",
            "run.complete",
        ]
        assert (await client.call("server.status"))["events_dropped"] == 0
