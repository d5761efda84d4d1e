"""The test helpers' own checks can fail: each says no when the behaviour it looks for is absent."""

from __future__ import annotations

from support import Daemon, open_raw


async def test_closed_by_peer_is_false_while_the_daemon_still_answers(daemon: Daemon) -> None:
    raw = await open_raw(daemon)
    await raw.request("ping")
    assert await raw.closed_by_peer() is False


async def test_closed_by_peer_is_false_for_a_connection_left_open(daemon: Daemon) -> None:
    raw = await open_raw(daemon)
    assert await raw.closed_by_peer(timeout=0.2) is False


async def test_closed_by_peer_is_true_once_the_daemon_closes_it(daemon: Daemon) -> None:
    raw = await open_raw(daemon)
    async with daemon.client() as client:
        assert await client.call("server.shutdown") == {}
    assert await raw.closed_by_peer() is True
    assert await daemon.exited() == 0
