"""The floor for this stack: a minimal trio msgpack-RPC server that answers every request with nil.

`python -m bench.floor_server SOCKET` listens until killed. It does the least a
correct server must (decode a stream, answer each request), so agentd's ping
can be compared with what trio and msgpack cost on their own.
"""

from __future__ import annotations

import os
import socket
import sys

import msgpack
import trio


async def _serve_client(stream: trio.SocketStream) -> None:
    unpacker = msgpack.Unpacker(raw=False)
    packer = msgpack.Packer()
    while True:
        data = await stream.receive_some(65536)
        if not data:
            return
        unpacker.feed(data)
        out = [packer.pack([1, message[1], None, None]) for message in unpacker if message[0] == 0]
        if out:
            await stream.send_all(b"".join(out))


async def main(path: str) -> None:
    if os.path.exists(path):
        os.unlink(path)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(path)
    sock.listen(128)
    print("ready", flush=True)
    await trio.serve_listeners(_serve_client, [trio.SocketListener(sock)])


if __name__ == "__main__":
    trio.run(main, sys.argv[1])
