"""The workspace event broker, driven directly under trio: seq, fan-out, drops, gaps, must-deliver."""

from __future__ import annotations

import math
from typing import Any

import msgpack
import pytest
import trio
import trio.testing

from agentd.protocol import events, unstructure
from agentd.pubsub import MAX_COALESCED_TEXT, Broker, DropStats, Event, Subscriber

WAIT = 5.0  # the bound on any wait that should finish at once
TIMEOUT = 0.2  # must-deliver timeout for the disconnect tests


class Overflows:
    """An on_overflow callback that records whom it was called for."""

    def __init__(self) -> None:
        self.calls: list[Subscriber] = []

    def __call__(self, sub: Subscriber) -> None:
        self.calls.append(sub)


def make_broker(timeout: float = WAIT) -> tuple[Broker, DropStats]:
    stats = DropStats()
    return Broker("ws1", stats, must_deliver_timeout=timeout), stats


def drain(sub: Subscriber) -> list[Event]:
    """Everything queued for `sub` right now, without waiting."""
    out: list[Event] = []
    while True:
        try:
            out.append(sub.receive_channel.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            return out


def seqs(evs: list[Event]) -> list[int]:
    return [e.seq for e in evs]


def delta(i: int) -> dict[str, Any]:
    """A lossy event that continues no other: the first delta of message `i`."""
    return {"session_id": "s1", "run_id": f"r{i}", "message_id": f"m{i}", "offset": 0, "text": f"text {i}"}


def text_delta(offset: int, text: str, message_id: str = "m") -> dict[str, Any]:
    return {"session_id": "s1", "run_id": "r", "message_id": message_id, "offset": offset, "text": text}


# --- seq and in-order fan-out ------------------------------------------------------------


async def test_seq_increases_by_one_per_publish_across_lossy_and_must_deliver() -> None:
    broker, _ = make_broker()
    assert broker.seq == 0
    got = [broker.publish(events.MESSAGE_DELTA, delta(0)).seq]
    with trio.fail_after(WAIT):
        got.append((await broker.publish_must_deliver(events.RUN_COMPLETE, {})).seq)
    got.append(broker.publish(events.MESSAGE_DELTA, delta(1)).seq)
    with trio.fail_after(WAIT):
        got.append((await broker.publish_must_deliver(events.RUN_COMPLETE, {})).seq)
    assert got == [1, 2, 3, 4]
    assert broker.seq == 4


async def test_seq_advances_even_when_a_subscriber_drops_the_event() -> None:
    broker, _ = make_broker()
    sub = broker.subscribe("s", 1, Overflows())
    assert [broker.publish(events.MESSAGE_DELTA, delta(i)).seq for i in range(3)] == [1, 2, 3]
    assert seqs(drain(sub)) == [1]


async def test_every_subscriber_receives_every_event_in_order_when_it_keeps_up() -> None:
    broker, stats = make_broker()
    subs = [broker.subscribe(f"s{i}", 4, Overflows()) for i in range(3)]
    received: dict[str, list[Event]] = {s.id: [] for s in subs}

    async def reader(sub: Subscriber) -> None:
        async for event in sub.receive_channel:
            received[sub.id].append(event)

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            for sub in subs:
                nursery.start_soon(reader, sub)
            for i in range(20):
                if i % 5 == 4:
                    await broker.publish_must_deliver(events.RUN_COMPLETE, {"message_id": f"m{i}"})
                else:
                    broker.publish(events.MESSAGE_DELTA, delta(i))
                await trio.testing.wait_all_tasks_blocked()
            broker.close()
    for sub in subs:
        assert seqs(received[sub.id]) == list(range(1, 21))
        assert [e.payload["message_id"] for e in received[sub.id]] == [f"m{i}" for i in range(20)]
        assert sub.dropped_total == 0
    assert stats.events_dropped == 0


async def test_the_same_event_object_is_fanned_out_to_every_subscriber() -> None:
    broker, _ = make_broker()
    a = broker.subscribe("a", 4, Overflows())
    b = broker.subscribe("b", 4, Overflows())
    event = broker.publish(events.MESSAGE_DELTA, delta(0))
    assert event.workspace_id == "ws1" and event.type == events.MESSAGE_DELTA
    assert drain(a) == [event] and drain(b) == [event]


# --- lossy drops and gaps -----------------------------------------------------------------


async def test_lossy_publish_drops_only_for_the_lagging_subscriber() -> None:
    broker, stats = make_broker()
    slow = broker.subscribe("slow", 2, Overflows())
    fast = broker.subscribe("fast", 16, Overflows())
    for i in range(5):
        broker.publish(events.MESSAGE_DELTA, delta(i))
    assert seqs(drain(slow)) == [1, 2]
    assert slow.dropped_total == 3
    assert stats.events_dropped == 3
    assert seqs(drain(fast)) == [1, 2, 3, 4, 5]
    assert fast.dropped_total == 0


async def test_drop_stats_are_shared_across_brokers_and_subscribers() -> None:
    stats = DropStats()
    one = Broker("w1", stats)
    two = Broker("w2", stats)
    a = one.subscribe("a", 1, Overflows())
    b = two.subscribe("b", 1, Overflows())
    for i in range(3):
        one.publish(events.MESSAGE_DELTA, delta(i))
    two.publish(events.MESSAGE_DELTA, delta(0))
    two.publish(events.MESSAGE_DELTA, delta(1))
    assert (a.dropped_total, b.dropped_total) == (2, 1)
    assert stats.events_dropped == 3


async def test_after_draining_the_next_publish_delivers_the_gap_first_then_the_event() -> None:
    broker, _ = make_broker()
    sub = broker.subscribe("s", 2, Overflows())
    for i in range(5):  # seq 1, 2 queued; 3, 4, 5 dropped
        broker.publish(events.MESSAGE_DELTA, delta(i))
    assert seqs(drain(sub)) == [1, 2]
    broker.publish(events.MESSAGE_DELTA, delta(5))  # seq 6
    gap, after = drain(sub)
    assert gap.type == events.EVENTS_GAP
    assert gap.payload == {"dropped": 3}
    assert gap.seq == 5  # the last dropped event's seq
    assert gap.workspace_id == "ws1"
    assert (after.type, after.seq, after.payload) == (events.MESSAGE_DELTA, 6, delta(5))
    assert sub.take_gap() is None


async def test_gap_that_fills_the_last_slot_drops_the_event_and_a_new_gap_follows() -> None:
    broker, stats = make_broker()
    sub = broker.subscribe("s", 2, Overflows())
    for i in range(3):  # seq 1, 2 queued; 3 dropped
        broker.publish(events.MESSAGE_DELTA, delta(i))
    assert sub.receive_channel.receive_nowait().seq == 1  # one slot free
    broker.publish(events.MESSAGE_DELTA, delta(3))  # seq 4: the gap takes the slot, 4 is dropped
    second, gap = drain(sub)
    assert second.seq == 2
    assert (gap.type, gap.seq, gap.payload) == (events.EVENTS_GAP, 3, {"dropped": 1})
    assert sub.dropped_total == 2 and stats.events_dropped == 2
    broker.publish(events.MESSAGE_DELTA, delta(4))  # seq 5
    gap2, after = drain(sub)
    assert (gap2.type, gap2.seq, gap2.payload) == (events.EVENTS_GAP, 4, {"dropped": 1})
    assert (after.type, after.seq) == (events.MESSAGE_DELTA, 5)
    assert sub.take_gap() is None


async def test_take_gap_returns_the_owed_gap_once_and_then_none() -> None:
    broker, _ = make_broker()
    sub = broker.subscribe("s", 1, Overflows())
    assert sub.take_gap() is None
    for i in range(4):  # seq 1 queued, 2..4 dropped
        broker.publish(events.MESSAGE_DELTA, delta(i))
    gap = sub.take_gap()
    assert gap is not None
    assert (gap.type, gap.seq, gap.payload, gap.workspace_id) == (events.EVENTS_GAP, 4, {"dropped": 3}, "ws1")
    assert sub.take_gap() is None
    # The debt was paid: the next publish after draining carries no second gap.
    assert seqs(drain(sub)) == [1]
    broker.publish(events.MESSAGE_DELTA, delta(4))
    assert [(e.type, e.seq) for e in drain(sub)] == [(events.MESSAGE_DELTA, 5)]
    assert sub.dropped_total == 3


async def test_must_deliver_after_drops_reaches_the_reader_after_the_gap_for_them() -> None:
    # Read the way the connection writer does: take the owed gap whenever the channel
    # is drained. The gap covers seqs older than the must-deliver event, so it has
    # to be seen first, or the client sees seq jump and then go backwards.
    broker, _ = make_broker()
    sub = broker.subscribe("s", 2, Overflows())
    for i in range(4):  # seq 1, 2 queued; 3, 4 dropped
        broker.publish(events.MESSAGE_DELTA, delta(i))
    seen: list[Event] = []
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(broker.publish_must_deliver, events.RUN_COMPLETE, {})  # seq 5
            await trio.testing.wait_all_tasks_blocked()
            while events.RUN_COMPLETE not in [e.type for e in seen]:
                seen.append(await sub.receive_channel.receive())
                if len(sub.receive_channel) == 0:
                    gap = sub.take_gap()
                    if gap is not None:
                        seen.append(gap)
    gap = sub.take_gap()
    if gap is not None:
        seen.append(gap)
    assert [(e.type, e.seq) for e in seen] == [
        (events.MESSAGE_DELTA, 1),
        (events.MESSAGE_DELTA, 2),
        (events.EVENTS_GAP, 4),
        (events.RUN_COMPLETE, 5),
    ]


async def read_as_the_writer_does(sub: Subscriber, until: int) -> list[Event]:
    """Receive until seq `until` arrives, taking the owed gap whenever the channel is drained, as the writer does."""
    seen: list[Event] = []
    while until not in [e.seq for e in seen if e.type != events.EVENTS_GAP]:
        # Let the publishers queue what they can, then take a whole batch with
        # no checkpoint in between: a publisher parked for room cannot get in
        # before the gap is taken.
        await trio.testing.wait_all_tasks_blocked()
        seen += drain(sub)
        gap = sub.take_gap()
        if gap is not None:
            seen.append(gap)
    return seen


async def test_a_gap_for_losses_after_a_waiting_must_deliver_event_goes_behind_it() -> None:
    # The writer drains the channel while the run.complete still waits for the
    # room it just made: the gap owed then tells of events published after the
    # run.complete, so it must not be written ahead of it (the client would see
    # seq jump past the run.complete and then go back to it).
    broker, _ = make_broker()
    sub = broker.subscribe("s", 1, Overflows())
    broker.publish(events.MESSAGE_DELTA, delta(0))  # seq 1 fills the channel
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(broker.publish_must_deliver, events.RUN_COMPLETE, {})  # seq 2
            await trio.testing.wait_all_tasks_blocked()
            broker.publish(events.MESSAGE_DELTA, delta(1))  # seq 3: dropped, behind the waiting run.complete
            seen = await read_as_the_writer_does(sub, 2)
    gap = sub.take_gap()
    seen += [gap] if gap is not None else []
    assert [(e.type, e.seq) for e in seen] == [
        (events.MESSAGE_DELTA, 1),
        (events.RUN_COMPLETE, 2),
        (events.EVENTS_GAP, 3),
    ]


async def test_losses_on_either_side_of_a_waiting_must_deliver_event_get_a_gap_on_each_side() -> None:
    broker, _ = make_broker()
    sub = broker.subscribe("s", 1, Overflows())
    broker.publish(events.MESSAGE_DELTA, delta(0))  # seq 1 fills the channel
    broker.publish(events.MESSAGE_DELTA, delta(1))  # seq 2: dropped
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(broker.publish_must_deliver, events.RUN_COMPLETE, {"n": 1})  # seq 3
            await trio.testing.wait_all_tasks_blocked()
            broker.publish(events.MESSAGE_DELTA, delta(2))  # seq 4: dropped
            nursery.start_soon(broker.publish_must_deliver, events.RUN_COMPLETE, {"n": 2})  # seq 5
            await trio.testing.wait_all_tasks_blocked()
            broker.publish(events.MESSAGE_DELTA, delta(3))  # seq 6: dropped
            seen = await read_as_the_writer_does(sub, 5)
    gap = sub.take_gap()
    seen += [gap] if gap is not None else []
    assert [(e.type, e.seq, e.payload.get("dropped")) for e in seen] == [
        (events.MESSAGE_DELTA, 1, None),
        (events.EVENTS_GAP, 2, 1),
        (events.RUN_COMPLETE, 3, None),
        (events.EVENTS_GAP, 4, 1),
        (events.RUN_COMPLETE, 5, None),
        (events.EVENTS_GAP, 6, 1),
    ]
    assert sub.dropped_total == 3


async def test_losses_held_behind_a_must_deliver_event_are_told_once_it_is_taken_with_nothing_published_after() -> None:
    # The writer may take the run.complete in a batch before its publisher is
    # done with it (trio runs the two in either order: try many times), and
    # then waits for the next event: the gap held behind the run.complete must
    # come by itself, since nothing more is published to carry it.
    for _ in range(40):
        broker, _ = make_broker()
        sub = broker.subscribe("s", 2, Overflows())
        broker.publish(events.MESSAGE_DELTA, delta(0))  # seq 1
        broker.publish(events.MESSAGE_DELTA, delta(1))  # seq 2: the channel is full
        seen: list[Event] = []
        with trio.fail_after(WAIT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(broker.publish_must_deliver, events.RUN_COMPLETE, {})  # seq 3
                await trio.testing.wait_all_tasks_blocked()
                broker.publish(events.MESSAGE_DELTA, delta(2))  # seq 4: dropped
                seen.append(sub.receive_channel.receive_nowait())
                while len(sub.receive_channel) < 2:  # the run.complete is in
                    await trio.lowlevel.checkpoint()
                seen += drain(sub)  # one batch, as the writer takes it
                if (gap := sub.take_gap()) is not None:
                    seen.append(gap)
            # The writer now waits for its next event.
            seen += drain(sub)
        assert [(e.type, e.seq) for e in seen] == [
            (events.MESSAGE_DELTA, 1),
            (events.MESSAGE_DELTA, 2),
            (events.RUN_COMPLETE, 3),
            (events.EVENTS_GAP, 4),
        ]


# --- must-deliver ---------------------------------------------------------------------------


async def test_must_deliver_to_a_full_subscriber_waits_for_the_reader_and_keeps_order() -> None:
    broker, stats = make_broker()
    overflows = Overflows()
    sub = broker.subscribe("s", 2, overflows)
    broker.publish(events.MESSAGE_DELTA, delta(0))
    broker.publish(events.MESSAGE_DELTA, delta(1))
    published: list[Event] = []

    async def publisher() -> None:
        published.append(await broker.publish_must_deliver(events.RUN_COMPLETE, {"ok": True}))

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(publisher)
            await trio.testing.wait_all_tasks_blocked()
            assert published == []  # parked: the channel is full
            first = await sub.receive_channel.receive()
            second = await sub.receive_channel.receive()
            third = await sub.receive_channel.receive()
    assert [(e.type, e.seq) for e in (first, second, third)] == [
        (events.MESSAGE_DELTA, 1),
        (events.MESSAGE_DELTA, 2),
        (events.RUN_COMPLETE, 3),
    ]
    assert published == [third]
    assert not sub.disconnected and overflows.calls == []
    assert sub.dropped_total == 0 and stats.events_dropped == 0


async def test_a_must_deliver_event_that_waited_for_room_owes_no_flush_once_written() -> None:
    # The writer may take the event the moment it is queued, before its publisher runs again. Were its
    # deadline recorded only then, it would outlive the event: the writer's next wait for a full socket
    # would be held to it, and a subscriber that owes nothing would be cut off. Which of the two runs
    # first is the scheduler's choice, so both orders get their turns.
    broker, _ = make_broker()
    sub = broker.subscribe("s", 1, Overflows())
    for i in range(20):
        broker.publish(events.MESSAGE_DELTA, delta(i))  # fills the channel: the next must-deliver waits
        with trio.fail_after(WAIT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(broker.publish_must_deliver, events.RUN_COMPLETE, {})
                await trio.testing.wait_all_tasks_blocked()
                # As the connection's writer does: take each event as it comes, then say what was written.
                for _ in range(2):
                    event = await sub.receive_channel.receive()
                    sub.flushed(int(event.must_deliver))
        assert sub.flush_deadline == math.inf, f"round {i}: a deadline outlived its event"
    assert not sub.disconnected


async def test_lossy_events_published_while_a_must_deliver_waits_do_not_overtake_it() -> None:
    broker, _ = make_broker()
    sub = broker.subscribe("s", 1, Overflows())
    broker.publish(events.MESSAGE_DELTA, delta(0))  # seq 1 fills the channel
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(broker.publish_must_deliver, events.RUN_COMPLETE, {})  # seq 2
            await trio.testing.wait_all_tasks_blocked()
            broker.publish(events.MESSAGE_DELTA, delta(1))  # seq 3: no room, dropped
            got = [await sub.receive_channel.receive(), await sub.receive_channel.receive()]
    assert [(e.type, e.seq) for e in got] == [(events.MESSAGE_DELTA, 1), (events.RUN_COMPLETE, 2)]
    assert sub.dropped_total == 1


async def test_must_deliver_disconnects_a_stuck_subscriber_while_a_fast_one_gets_it_at_once() -> None:
    broker, stats = make_broker(timeout=TIMEOUT)
    stuck_overflows = Overflows()
    fast_overflows = Overflows()
    stuck = broker.subscribe("stuck", 1, stuck_overflows)
    fast = broker.subscribe("fast", 4, fast_overflows)
    broker.publish(events.MESSAGE_DELTA, delta(0))  # seq 1 fills `stuck`
    assert seqs(drain(fast)) == [1]
    published: list[Event] = []

    async def publisher() -> None:
        published.append(await broker.publish_must_deliver(events.RUN_COMPLETE, {}))

    start = trio.current_time()
    with trio.fail_after(TIMEOUT + WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(publisher)
            await trio.testing.wait_all_tasks_blocked()
            # The publish is parked on `stuck`, yet `fast` already has the event.
            assert published == []
            early = fast.receive_channel.receive_nowait()
            assert (early.type, early.seq) == (events.RUN_COMPLETE, 2)
            assert trio.current_time() - start < TIMEOUT
            assert not stuck.disconnected and stuck_overflows.calls == []
    elapsed = trio.current_time() - start
    assert elapsed >= TIMEOUT
    assert published == [early]
    assert stuck.disconnected
    assert stuck_overflows.calls == [stuck]
    assert fast_overflows.calls == [] and not fast.disconnected
    # The stuck subscriber keeps what was queued, then its channel ends.
    with trio.fail_after(WAIT):
        assert [e.seq async for e in stuck.receive_channel] == [1]
    # It is no longer a subscriber: later events neither reach nor count against it.
    broker.publish(events.MESSAGE_DELTA, delta(1))
    with trio.fail_after(WAIT):
        await broker.publish_must_deliver(events.RUN_COMPLETE, {})
    assert stuck.dropped_total == 0 and stats.events_dropped == 0
    assert stuck_overflows.calls == [stuck]
    assert seqs(drain(fast)) == [3, 4]


async def test_must_deliver_timeouts_run_concurrently_for_several_stuck_subscribers() -> None:
    broker, _ = make_broker(timeout=TIMEOUT)
    overflows = Overflows()
    stuck = [broker.subscribe(f"s{i}", 1, overflows) for i in range(3)]
    broker.publish(events.MESSAGE_DELTA, delta(0))
    start = trio.current_time()
    with trio.fail_after(TIMEOUT * 2.5):  # one timeout for all, not one each
        await broker.publish_must_deliver(events.RUN_COMPLETE, {})
    assert trio.current_time() - start >= TIMEOUT
    assert sorted(s.id for s in overflows.calls) == ["s0", "s1", "s2"]
    assert all(s.disconnected for s in stuck)


async def test_unsubscribing_while_a_must_deliver_waits_releases_it_without_overflow() -> None:
    broker, _ = make_broker(timeout=WAIT * 2)
    overflows = Overflows()
    sub = broker.subscribe("s", 1, overflows)
    broker.publish(events.MESSAGE_DELTA, delta(0))
    published: list[Event] = []

    async def publisher() -> None:
        published.append(await broker.publish_must_deliver(events.RUN_COMPLETE, {}))

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(publisher)
            await trio.testing.wait_all_tasks_blocked()
            assert published == []
            broker.unsubscribe("s")
    assert len(published) == 1
    assert overflows.calls == [] and not sub.disconnected


# --- ending subscriptions --------------------------------------------------------------------


async def test_unsubscribe_closes_the_channel_so_the_reader_ends() -> None:
    broker, _ = make_broker()
    gone = broker.subscribe("gone", 4, Overflows())
    stays = broker.subscribe("stays", 4, Overflows())
    broker.publish(events.MESSAGE_DELTA, delta(0))
    read: list[int] = []
    ended = trio.Event()

    async def reader() -> None:
        async for event in gone.receive_channel:
            read.append(event.seq)
        ended.set()

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            assert not ended.is_set()
            broker.unsubscribe("gone")
            await ended.wait()
    assert read == [1]
    broker.publish(events.MESSAGE_DELTA, delta(1))
    assert gone.dropped_total == 0
    assert seqs(drain(stays)) == [1, 2]
    broker.unsubscribe("gone")  # a second time is harmless
    broker.unsubscribe("never-existed")


async def test_close_ends_every_subscription() -> None:
    broker, _ = make_broker()
    subs = [broker.subscribe(f"s{i}", 4, Overflows()) for i in range(3)]
    broker.publish(events.MESSAGE_DELTA, delta(0))
    read: dict[str, list[int]] = {s.id: [] for s in subs}

    async def reader(sub: Subscriber) -> None:
        async for event in sub.receive_channel:
            read[sub.id].append(event.seq)

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            for sub in subs:
                nursery.start_soon(reader, sub)
            await trio.testing.wait_all_tasks_blocked()
            broker.close()
    assert read == {s.id: [1] for s in subs}
    # Nothing is fanned out after close, and must-deliver has nobody to wait for.
    broker.publish(events.MESSAGE_DELTA, delta(1))
    with trio.fail_after(WAIT):
        await broker.publish_must_deliver(events.WORKSPACE_CLOSED, {})
    assert all(s.dropped_total == 0 for s in subs)


async def test_close_releases_a_parked_must_deliver() -> None:
    broker, _ = make_broker(timeout=WAIT * 2)
    overflows = Overflows()
    sub = broker.subscribe("s", 1, overflows)
    broker.publish(events.MESSAGE_DELTA, delta(0))
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(broker.publish_must_deliver, events.WORKSPACE_CLOSED, {})
            await trio.testing.wait_all_tasks_blocked()
            broker.close()
    assert overflows.calls == []
    assert seqs(drain(sub)) == [1]


# --- wire encoding -------------------------------------------------------------------------


async def test_encode_notification_is_the_event_envelope_as_msgpack_rpc() -> None:
    payload = {"session_id": "s", "text": "héllo", "n": 3, "blob": b"\x00\xff", "nested": [1, {"a": None}]}
    event = Event("ws1", 77, events.MESSAGE_DELTA, payload)
    for sid in ("sub-1", "another-subscription-id" * 10):
        data = event.encode_notification(sid)
        decoded = msgpack.unpackb(data, raw=False)
        assert decoded == [
            2,
            "event",
            [
                {
                    "subscription_id": sid,
                    "workspace_id": "ws1",
                    "seq": 77,
                    "type": "message.delta",
                    "payload": payload,
                }
            ],
        ]
        # The bytes are the envelope type's own unstructured form: one source for both.
        assert decoded[2][0] == unstructure(event.envelope(sid))


async def test_encode_notification_decodes_through_the_rpc_codec() -> None:
    from agentd.rpc import Notification, RpcCodec

    broker, _ = make_broker()
    sub = broker.subscribe("sid", 4, Overflows())
    broker.publish(events.MESSAGE_DELTA, {"x": 1})
    broker.publish(events.RUN_COMPLETE, {"y": 2})
    codec = RpcCodec()
    for event in drain(sub):
        codec.receive_data(event.encode_notification(sub.id))
    msgs = codec.messages()
    assert all(type(m) is Notification and m.method == "event" for m in msgs)
    assert [m.params for m in msgs] == [  # type: ignore[union-attr]
        [
            {
                "subscription_id": "sid",
                "workspace_id": "ws1",
                "seq": 1,
                "type": "message.delta",
                "payload": {"x": 1},
            }
        ],
        [
            {
                "subscription_id": "sid",
                "workspace_id": "ws1",
                "seq": 2,
                "type": "run.complete",
                "payload": {"y": 2},
            }
        ],
    ]


# --- a burst of deltas is absorbed, not dropped --------------------------------------------


async def test_deltas_that_continue_the_tail_are_absorbed_into_it_when_the_queue_is_full() -> None:
    broker, stats = make_broker()
    sub = broker.subscribe("s", 2, Overflows())
    roomy = broker.subscribe("roomy", 16, Overflows())
    broker.publish(events.SESSION_UPDATED, {"busy": True})  # seq 1
    offset = 0
    for word in ["Hello", ",", " wor", "ld", "!"]:  # seqs 2..6
        broker.publish(events.MESSAGE_DELTA, text_delta(offset, word))
        offset += len(word)
    got = drain(sub)
    assert [(e.type, e.seq) for e in got] == [(events.SESSION_UPDATED, 1), (events.MESSAGE_DELTA, 6)]
    assert got[1].payload == text_delta(0, "Hello, world!")
    assert sub.dropped_total == 0 and stats.events_dropped == 0 and sub.take_gap() is None
    # The merged delta is this subscriber's own: the others get the shared events as published.
    assert [e.payload.get("text") for e in drain(roomy)] == [None, "Hello", ",", " wor", "ld", "!"]
    # Once taken, the tail is an ordinary event again: the queue has room and takes the next as is.
    broker.publish(events.MESSAGE_DELTA, text_delta(offset, " more"))
    assert [(e.seq, e.payload["text"]) for e in drain(sub)] == [(7, " more")]


async def test_merged_delta_encodes_its_own_seq_and_text() -> None:
    broker, _ = make_broker()
    sub = broker.subscribe("s", 1, Overflows())
    broker.publish(events.MESSAGE_DELTA, text_delta(0, "ab"))
    broker.publish(events.MESSAGE_DELTA, text_delta(2, "cd"))
    (merged,) = drain(sub)
    envelope = msgpack.unpackb(merged.encode_notification("s"))[2][0]
    assert (envelope["seq"], envelope["payload"]["text"], envelope["payload"]["offset"]) == (2, "abcd", 0)


@pytest.mark.parametrize(
    ("kind", "payload"),
    [
        (events.MESSAGE_DELTA, text_delta(3, "d")),  # a hole at offset 2
        (events.MESSAGE_DELTA, text_delta(1, "b")),  # overlaps
        (events.MESSAGE_DELTA, text_delta(2, "c", message_id="other")),  # another message
        (events.SESSION_UPDATED, {"busy": False}),  # not a delta
    ],
)
async def test_an_event_that_does_not_continue_the_tail_is_dropped(kind: str, payload: dict[str, Any]) -> None:
    broker, _ = make_broker()
    sub = broker.subscribe("s", 1, Overflows())
    broker.publish(events.MESSAGE_DELTA, text_delta(0, "ab"))  # seq 1 fills the queue
    broker.publish(kind, payload)
    assert sub.dropped_total == 1
    assert [(e.seq, e.payload["text"]) for e in drain(sub)] == [(1, "ab")]


async def test_no_delta_is_absorbed_behind_a_loss() -> None:
    broker, _ = make_broker()
    sub = broker.subscribe("s", 1, Overflows())
    broker.publish(events.MESSAGE_DELTA, text_delta(0, "ab"))  # seq 1
    broker.publish(events.SESSION_UPDATED, {"busy": False})  # seq 2: dropped
    broker.publish(events.MESSAGE_DELTA, text_delta(2, "cd"))  # seq 3 continues seq 1, but after the loss
    assert sub.dropped_total == 2
    assert [(e.seq, e.payload["text"]) for e in drain(sub)] == [(1, "ab")]
    gap = sub.take_gap()
    assert gap is not None and (gap.seq, gap.payload) == (3, {"dropped": 2})


async def test_no_delta_is_absorbed_ahead_of_a_waiting_must_deliver_event() -> None:
    broker, _ = make_broker()
    sub = broker.subscribe("s", 1, Overflows())
    broker.publish(events.MESSAGE_DELTA, text_delta(0, "ab"))  # seq 1 fills the queue
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(broker.publish_must_deliver, events.RUN_COMPLETE, {})  # seq 2 waits
            await trio.testing.wait_all_tasks_blocked()
            broker.publish(events.MESSAGE_DELTA, text_delta(2, "cd"))  # seq 3 must not overtake it
            got = [await sub.receive_channel.receive(), await sub.receive_channel.receive()]
    assert [(e.seq, e.payload.get("text")) for e in got] == [(1, "ab"), (2, None)]
    assert sub.dropped_total == 1


async def test_an_absorbed_delta_grows_no_larger_than_the_bound() -> None:
    broker, _ = make_broker()
    sub = broker.subscribe("s", 1, Overflows())
    half = "x" * (MAX_COALESCED_TEXT // 2)
    for i in range(3):
        broker.publish(events.MESSAGE_DELTA, text_delta(i * len(half), half))
    assert sub.dropped_total == 1
    (merged,) = drain(sub)
    assert merged.payload["text"] == half * 2


async def test_the_last_slots_are_kept_for_the_events_that_end_a_burst() -> None:
    broker, stats = make_broker()
    sub = broker.subscribe("s", 32, Overflows())  # deltas merge once 30 are queued
    offset = 0
    for i in range(100):
        broker.publish(events.MESSAGE_DELTA, text_delta(offset, f"{i} "))
        offset += len(f"{i} ")
    broker.publish(events.MESSAGE_UPDATED, {"message_id": "m"})
    broker.publish(events.SESSION_UPDATED, {"busy": False})
    got = drain(sub)
    assert stats.events_dropped == 0
    assert [e.type for e in got] == [events.MESSAGE_DELTA] * 30 + [events.MESSAGE_UPDATED, events.SESSION_UPDATED]
    assert "".join(e.payload["text"] for e in got[:30]) == "".join(f"{i} " for i in range(100))
    assert got[29].seq == 100
