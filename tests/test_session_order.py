"""SessionOrder: requests naming one session act in the order their tickets were taken."""

from __future__ import annotations

import trio
import trio.lowlevel

from agentd.workspaces import SessionOrder


async def test_turns_are_taken_in_ticket_order_whatever_order_the_tasks_start() -> None:
    order = SessionOrder()
    done: list[int] = []
    tickets = [order.ticket("w", "s") for _ in range(5)]

    async def act(i: int) -> None:
        async with tickets[i]:
            await trio.lowlevel.checkpoint()  # a turn that awaits keeps the others waiting
            done.append(i)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            for i in reversed(range(5)):
                nursery.start_soon(act, i)
    assert done == [0, 1, 2, 3, 4]
    assert len(order) == 0  # nobody holds a ticket: nothing is kept


async def test_other_sessions_do_not_wait_and_an_abandoned_ticket_is_skipped() -> None:
    order = SessionOrder()
    first = order.ticket("w", "s")
    abandoned = order.ticket("w", "s")
    third = order.ticket("w", "s")
    other = order.ticket("w", "other")
    with trio.fail_after(5):
        async with other:
            pass  # not behind "s"
        abandoned.release()  # a request that will never run (its task was cancelled first)
        async with first:
            pass
        async with third:
            pass
    assert len(order) == 0


async def test_a_waiter_cancelled_before_its_turn_gives_its_place_up() -> None:
    order = SessionOrder()
    first = order.ticket("w", "s")
    waiter = order.ticket("w", "s")
    last = order.ticket("w", "s")
    gave_up = trio.Event()

    async def wait_in_vain() -> None:
        with trio.move_on_after(0.01):
            async with waiter:
                raise AssertionError("never its turn")
        gave_up.set()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            async with first:
                nursery.start_soon(wait_in_vain)
                await gave_up.wait()  # it left while the first still held the turn
        async with last:
            pass
    assert len(order) == 0
