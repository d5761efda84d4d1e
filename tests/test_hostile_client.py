"""A client that floods, hoards or sends what a decoder chokes on ends, at worst, its own connection."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import msgpack
import pytest
import trio
from support import WAIT, Daemon, DaemonFactory, RawConnection, Workspace, nested_bytes, open_raw

from agentd.rpc import MAX_DEPTH, encode_request


@contextmanager
def flooding(daemon: Daemon) -> Iterator[threading.Event]:
    """A client pipelining pings back to back, reading every reply; set when replies flow."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(os.fspath(daemon.socket_path))
    batch = b"".join(encode_request(i, "ping", []) for i in range(2000))
    answered = threading.Event()
    stop = threading.Event()

    def read() -> None:
        try:
            while sock.recv(1 << 20):
                answered.set()
        except OSError:
            pass

    def write() -> None:
        try:
            while not stop.is_set():
                sock.sendall(batch)
        except OSError:
            pass

    threads = [threading.Thread(target=read, daemon=True), threading.Thread(target=write, daemon=True)]
    for thread in threads:
        thread.start()
    try:
        yield answered
    finally:
        stop.set()
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        for thread in threads:
            thread.join(WAIT)


@pytest.mark.parametrize("signals", [1, 2], ids=["one-sigterm", "two-sigterms"])
def test_sigterm_ends_the_daemon_within_seconds_while_a_client_floods_it_with_pings(
    daemon: Daemon, signals: int
) -> None:
    with flooding(daemon) as answered:
        assert answered.wait(WAIT), "the flood got no replies"
        started = time.monotonic()
        for _ in range(signals):
            daemon.proc.send_signal(signal.SIGTERM)
        status = daemon.proc.wait(timeout=WAIT)
        took = time.monotonic() - started
    if signals == 1:
        assert status == 0
    # Without the reader's checkpoint it took over 10 s; the margin below that is for a loaded machine.
    assert took < 6.0, f"exit took {took:.1f}s after {signals} SIGTERM(s) under a flood"


# --- messages the decoder would choke on get their documented reply ------------------


def nested(depth: int) -> object:
    value: object = []
    for _ in range(depth - 1):
        value = [value]
    return value


async def expect_usable(raw: RawConnection) -> None:
    reply = await raw.call("ping")
    assert reply.error is None and reply.result == {}


async def test_params_nested_990_to_1020_deep_get_an_invalid_params_reply(daemon: Daemon) -> None:
    raw = await open_raw(daemon)
    for msgid, depth in enumerate((990, 1000, 1020), 500):
        # [0, msgid, "session.get", [{"workspace_id": <nested>}]]
        head = b"\x94\x00" + msgpack.packb(msgid) + msgpack.packb("session.get") + b"\x91\x81"
        await raw.send_bytes(head + msgpack.packb("workspace_id") + nested_bytes(depth))
        reply = await raw.response(msgid)
        assert reply.error == [1, f"message nested deeper than {MAX_DEPTH} levels of arrays and maps"]
    await expect_usable(raw)
    assert "RecursionError" not in daemon.log()


async def test_a_method_nested_1000_deep_gets_the_depth_reply_not_a_recursion_error(daemon: Daemon) -> None:
    raw = await open_raw(daemon)
    await raw.send_bytes(b"\x94\x00\x07" + b"\x91" * 1000 + b"\xa1m" + b"\x90")
    reply = await raw.response(7)
    assert reply.error == [1, f"message nested deeper than {MAX_DEPTH} levels of arrays and maps"]
    await expect_usable(raw)
    assert "RecursionError" not in daemon.log()


async def test_a_method_that_is_not_a_string_is_quoted_briefly(daemon: Daemon) -> None:
    raw = await open_raw(daemon)
    msgid = await raw.request(["m" * 100_000] * 50, [])
    reply = await raw.response(msgid)
    assert reply.error is not None and reply.error[0] == 5
    assert len(reply.error[1]) < 400, len(reply.error[1])
    await expect_usable(raw)


async def test_params_just_within_the_depth_limit_get_the_params_error(daemon: Daemon) -> None:
    raw = await open_raw(daemon)
    # request array, params array, params[0] map: three levels before the value.
    msgid = await raw.request("session.get", [{"workspace_id": nested(MAX_DEPTH - 3)}])
    reply = await raw.response(msgid)
    assert reply.error is not None and reply.error[0] == 1
    assert "expected a string, got list @ params.workspace_id" in reply.error[1]


def map_with_key(key: bytes) -> bytes:
    """`[0, 3, "session.get", [{<key>: "w"}]]`, which msgpack-python cannot pack for an unhashable key."""
    return b"\x94\x00\x03\xabsession.get\x91\x81" + key + b"\xa1w"


async def test_a_map_key_that_is_an_array_gets_the_keys_must_be_strings_reply(daemon: Daemon) -> None:
    raw = await open_raw(daemon)
    await raw.send_bytes(map_with_key(msgpack.packb([1, 2])))
    reply = await raw.response(3)
    assert reply.error == [1, "params[0] keys must be strings, got list [1, 2]"]
    await expect_usable(raw)


async def test_a_map_key_that_is_a_map_gets_the_keys_must_be_strings_reply(daemon: Daemon) -> None:
    raw = await open_raw(daemon)
    await raw.send_bytes(map_with_key(msgpack.packb({"a": 1})))
    reply = await raw.response(3)
    assert reply.error == [1, "params[0] keys must be strings, got dict {'a': 1}"]
    await expect_usable(raw)


# --- memory: unfinished messages hold their bytes, and a budget caps them all ---------


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


HOARD = 16 * 1024 * 1024 - 64  # just under the default 16 MiB limit


async def hoard(daemon: Daemon) -> trio.SocketStream:
    """A connection that sends an array32 header and ~16 MiB of empty arrays, and stays open."""
    stream = await trio.open_unix_socket(str(daemon.socket_path))
    await stream.send_all(b"\xdd\x01\x00\x00\x00" + b"\x90" * HOARD)
    return stream


async def test_connections_holding_unfinished_16_mib_messages_cost_their_bytes_and_the_budget_caps_them(
    start_daemon: DaemonFactory,
) -> None:
    daemon = start_daemon()
    raw = await open_raw(daemon)
    await expect_usable(raw)
    before = rss_kib(daemon.proc.pid)
    held = [await hoard(daemon) for _ in range(3)]
    await expect_usable(raw)  # the daemon has read what the hoarders sent before it answers this
    grown = rss_kib(daemon.proc.pid) - before
    # Three 16 MiB messages, held as bytes: about 48 MiB, not 3.6 GB of lists.
    assert grown < 3 * 40 * 1024, f"RSS grew {grown} KiB for three unfinished messages"
    # A fifth would take all unfinished input past the budget (four messages at the limit).
    held.append(await hoard(daemon))
    over = await trio.open_unix_socket(str(daemon.socket_path))
    with trio.fail_after(WAIT):
        try:
            await over.send_all(b"\xdd\x01\x00\x00\x00" + b"\x90" * HOARD)
            while await over.receive_some(65536):
                pass
        except trio.BrokenResourceError:
            pass  # closed by the daemon while we were still sending: what we expect
    assert "input budget" in daemon.log()
    await expect_usable(raw)
    for stream in held:
        await stream.aclose()


# --- the log: what a client sent is quoted short, and on one line ---------------------


async def test_a_bad_message_with_a_16_mib_first_element_is_logged_in_a_short_line(daemon: Daemon) -> None:
    raw = await open_raw(daemon)
    await raw.send_bytes(msgpack.packb(["x" * (16 * 1024 * 1024 - 100), 1, "m", []]))
    assert await raw.receive() is None  # closed, with no reply
    log = daemon.log()
    assert "unknown message type 'xxx" in log
    assert max(len(line) for line in log.splitlines()) < 1000


async def test_a_newline_in_a_run_error_cannot_forge_a_log_line(daemon: Daemon, ws: Workspace) -> None:
    forged = "2026-01-01 00:00:00,000 ERROR agentd: forged"
    session_id = await ws.new_session()
    reply = await ws.send(session_id, {"chunks": ["a"], "error": f"boom\n{forged}\r\x1b[2Jand " + "y" * 100_000})
    await ws.events.until_complete(reply["run_id"])
    lines = daemon.log().splitlines()
    assert not [line for line in lines if line.startswith(forged)]
    (failed,) = [line for line in lines if f"run {reply['run_id']} failed" in line]
    assert f"boom\\n{forged}\\r\\x1b[2Jand yyy" in failed
    assert len(failed) < 1000
