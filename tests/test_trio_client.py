"""The trio client library (`agentctl.client`) when its daemon goes away under it.

The peer here is a bare socket, not agentd: the case needs a daemon that has
sent more notifications than the client buffers and then vanished, at a
moment the test controls.
"""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest
import trio
import trio.testing

from agentctl.client import NOTIFICATION_BUFFER, ConnectionLost, open_client


async def test_a_call_that_finds_the_daemon_gone_is_connection_lost_even_with_notifications_backed_up(
    short_tmp: Path,
) -> None:
    path = str(short_tmp / "peer.sock")
    listener = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await listener.bind(path)
    listener.listen(1)
    event = msgpack.packb([2, "event", [{"type": "message.delta"}]])
    with trio.fail_after(10):
        async with open_client(path) as client:
            accepted, _ = await listener.accept()
            # More notifications than the client holds, none of them read: its
            # reader waits for room. Then the daemon is gone.
            async with trio.SocketStream(accepted) as peer:
                await peer.send_all(event * (NOTIFICATION_BUFFER + 10))
                await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(ConnectionLost):
                await client.call("ping")
            assert not client.connected
    listener.close()
