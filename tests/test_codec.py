"""The sans-io MessagePack-RPC codec and the error slot, byte by byte."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import msgpack
import pytest

from agentd.rpc import (
    MAX_MSGID,
    ErrorCode,
    Notification,
    ProtocolError,
    Request,
    Response,
    RpcCodec,
    RpcError,
    encode_notification,
    encode_request,
    encode_response,
)
from agentd.rpc._codec import parse_message

LIMIT = 1024


def packb(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def request_of_size(size: int) -> bytes:
    """An encoded request exactly `size` bytes long (padding its one string param)."""
    for pad in range(size):
        data = encode_request(7, "m", ["x" * pad])
        if len(data) == size:
            return data
        if len(data) > size:
            break
    raise AssertionError(f"no request of exactly {size} bytes")


def only(codec: RpcCodec) -> object:
    msgs = codec.messages()
    assert len(msgs) == 1, msgs
    return msgs[0]


# --- round trips -----------------------------------------------------------------


def test_request_round_trips_through_encode_and_decode() -> None:
    codec = RpcCodec()
    codec.receive_data(encode_request(42, "workspace.open", [{"path": "/tmp/x"}]))
    msg = only(codec)
    assert type(msg) is Request
    assert (msg.msgid, msg.method, msg.params) == (42, "workspace.open", [{"path": "/tmp/x"}])


def test_response_round_trips_with_error_and_result_slots() -> None:
    codec = RpcCodec()
    codec.receive_data(encode_response(MAX_MSGID, None, {"ok": True, "data": b"\x00\xff"}))
    codec.receive_data(encode_response(0, [1, "bad"], None))
    ok, err = codec.messages()
    assert type(ok) is Response and type(err) is Response
    assert (ok.msgid, ok.error, ok.result) == (MAX_MSGID, None, {"ok": True, "data": b"\x00\xff"})
    assert (err.msgid, err.error, err.result) == (0, [1, "bad"], None)


def test_notification_round_trips() -> None:
    codec = RpcCodec()
    codec.receive_data(encode_notification("event", [{"seq": 3}]))
    msg = only(codec)
    assert type(msg) is Notification
    assert (msg.method, msg.params) == ("event", [{"seq": 3}])


def test_encoders_produce_plain_msgpack_rpc_arrays() -> None:
    assert msgpack.unpackb(encode_request(1, "m", [2])) == [0, 1, "m", [2]]
    assert msgpack.unpackb(encode_response(1, None, "r")) == [1, 1, None, "r"]
    assert msgpack.unpackb(encode_notification("n", [])) == [2, "n", []]


# --- framing -----------------------------------------------------------------------


def test_several_messages_in_one_chunk_all_decode_in_order() -> None:
    codec = RpcCodec(LIMIT)
    codec.receive_data(
        encode_request(1, "a", [])
        + encode_notification("b", [1])
        + encode_response(2, None, "c")
        + encode_request(3, "d", [{}])
    )
    msgs = codec.messages()
    assert [type(m) for m in msgs] == [Request, Notification, Response, Request]
    assert [getattr(m, "msgid", None) for m in msgs] == [1, None, 2, 3]
    assert codec.next_message() is None


def test_several_small_messages_in_one_chunk_larger_than_the_limit_are_accepted() -> None:
    # The limit is per message: a peer pipelining many small requests, read in one
    # receive_some larger than the limit, has sent no message over it.
    one = encode_request(1, "m", ["x" * 100])
    chunk = one * 20
    assert len(one) < LIMIT < len(chunk)
    codec = RpcCodec(LIMIT)
    codec.receive_data(chunk)
    assert len(codec.messages()) == 20


def test_message_split_byte_by_byte_decodes_only_when_complete() -> None:
    data = encode_request(9, "session.create", [{"workspace_id": "w", "title": "héllo"}])
    codec = RpcCodec(LIMIT)
    for i in range(len(data) - 1):
        codec.receive_data(data[i : i + 1])
        assert codec.next_message() is None
    codec.receive_data(data[-1:])
    msg = codec.next_message()
    assert type(msg) is Request
    assert (msg.msgid, msg.method, msg.params) == (
        9,
        "session.create",
        [{"workspace_id": "w", "title": "héllo"}],
    )
    assert codec.next_message() is None


def test_empty_chunk_is_harmless() -> None:
    codec = RpcCodec(LIMIT)
    codec.receive_data(b"")
    assert codec.next_message() is None
    codec.receive_data(encode_notification("n", []))
    assert type(codec.next_message()) is Notification


# --- size limit --------------------------------------------------------------------


def test_message_exactly_at_the_size_limit_is_accepted() -> None:
    data = request_of_size(LIMIT)
    codec = RpcCodec(LIMIT)
    codec.receive_data(data)
    msg = only(codec)
    assert type(msg) is Request and msg.params == msgpack.unpackb(data)[3]


def test_message_exactly_at_the_size_limit_fed_in_pieces_is_accepted() -> None:
    data = request_of_size(LIMIT)
    codec = RpcCodec(LIMIT)
    got = []
    for i in range(0, len(data), 10):
        codec.receive_data(data[i : i + 10])
        got += codec.messages()
    assert len(got) == 1 and type(got[0]) is Request


def test_message_one_byte_over_the_limit_is_a_protocol_error_naming_the_limit() -> None:
    codec = RpcCodec(LIMIT)
    codec.receive_data(request_of_size(LIMIT + 1))
    with pytest.raises(ProtocolError, match=rf"\b{LIMIT}\b"):
        codec.messages()


def test_message_over_the_limit_fed_in_small_pieces_still_raises() -> None:
    data = request_of_size(LIMIT * 3)
    codec = RpcCodec(LIMIT)
    with pytest.raises(ProtocolError, match=rf"\b{LIMIT}\b"):
        for i in range(0, len(data), 16):
            codec.receive_data(data[i : i + 16])
        codec.messages()


def test_message_over_the_limit_fed_in_pieces_and_polled_between_them_still_raises() -> None:
    # This is how the server and the client read: receive_data, then next_message
    # until None, for every chunk. The unpacker consumes a partly received array
    # element by element, so its buffer never fills; the limit must still hold.
    data = encode_request(1, "m", ["y" * 100 for _ in range(100)])
    assert len(data) > 5 * LIMIT
    codec = RpcCodec(LIMIT)
    got = []
    with pytest.raises(ProtocolError, match=rf"\b{LIMIT}\b"):
        for i in range(0, len(data), 64):
            codec.receive_data(data[i : i + 64])
            got += codec.messages()
    assert got == []


# --- malformed input ---------------------------------------------------------------


def test_invalid_msgpack_byte_is_malformed() -> None:
    codec = RpcCodec(LIMIT)
    codec.receive_data(b"\xc1")
    with pytest.raises(ProtocolError, match="malformed"):
        codec.next_message()


def test_invalid_utf8_in_a_str_is_malformed() -> None:
    # [0, 1, <str "\xff">, []]
    codec = RpcCodec(LIMIT)
    codec.receive_data(b"\x94\x00\x01\xa1\xff\x90")
    with pytest.raises(ProtocolError, match="malformed"):
        codec.next_message()


def test_deep_nesting_is_a_protocol_error_not_a_crash() -> None:
    codec = RpcCodec(1 << 20)
    codec.receive_data(b"\x91" * 100_000 + b"\xc0")
    with pytest.raises(ProtocolError, match="malformed msgpack: arrays or maps nested too deeply"):
        codec.next_message()


@pytest.mark.parametrize("obj", [{"a": 1}, 5, "x", None], ids=["map", "int", "str", "nil"])
def test_message_that_is_not_an_array_is_refused(obj: object) -> None:
    codec = RpcCodec(LIMIT)
    codec.receive_data(packb(obj))
    with pytest.raises(ProtocolError, match="not an array"):
        codec.next_message()


def test_empty_array_is_refused() -> None:
    codec = RpcCodec(LIMIT)
    codec.receive_data(packb([]))
    with pytest.raises(ProtocolError, match="empty array"):
        codec.next_message()


@pytest.mark.parametrize("kind", [5, 3, -1, True, "0", 0.0], ids=repr)
def test_unknown_message_type_is_refused(kind: object) -> None:
    codec = RpcCodec(LIMIT)
    codec.receive_data(packb([kind, 1, "m", []]))
    with pytest.raises(ProtocolError, match="unknown message type"):
        codec.next_message()


@pytest.mark.parametrize("msgid", [-1, MAX_MSGID + 1, 2**64 - 1, True, False, "1", 1.0, None], ids=repr)
def test_request_with_a_msgid_that_is_not_a_uint32_is_refused(msgid: object) -> None:
    codec = RpcCodec(LIMIT)
    codec.receive_data(packb([0, msgid, "m", []]))
    with pytest.raises(ProtocolError, match="request must be"):
        codec.next_message()


@pytest.mark.parametrize("msgid", [-1, MAX_MSGID + 1, True, "1"], ids=repr)
def test_response_with_a_msgid_that_is_not_a_uint32_is_refused(msgid: object) -> None:
    with pytest.raises(ProtocolError, match="response must be"):
        parse_message([1, msgid, None, None])


@pytest.mark.parametrize("msgid", [0, 1, MAX_MSGID])
def test_request_msgid_bounds_are_accepted(msgid: int) -> None:
    codec = RpcCodec(LIMIT)
    codec.receive_data(encode_request(msgid, "m", []))
    msg = only(codec)
    assert type(msg) is Request and msg.msgid == msgid


@pytest.mark.parametrize(
    "obj",
    [
        [0, 1, "m"],
        [0, 1, "m", [], "extra"],
        [0],
        [1, 1, None],
        [1, 1, None, None, 0],
        [2, "n"],
        [2, "n", [], 0],
    ],
    ids=repr,
)
def test_message_of_the_wrong_length_is_refused(obj: list[object]) -> None:
    codec = RpcCodec(LIMIT)
    codec.receive_data(packb(obj))
    with pytest.raises(ProtocolError, match="must be"):
        codec.next_message()


def test_once_broken_the_codec_keeps_raising() -> None:
    codec = RpcCodec(LIMIT)
    codec.receive_data(b"\xc1")
    with pytest.raises(ProtocolError) as first:
        codec.next_message()
    with pytest.raises(ProtocolError) as again:
        codec.next_message()
    assert str(again.value) == str(first.value)
    with pytest.raises(ProtocolError):
        codec.receive_data(encode_request(1, "m", []))
    with pytest.raises(ProtocolError):
        codec.next_message()


def test_once_a_non_rpc_message_breaks_the_codec_later_valid_messages_are_not_returned() -> None:
    codec = RpcCodec(LIMIT)
    codec.receive_data(packb(5) + encode_request(1, "m", []))
    with pytest.raises(ProtocolError, match="not an array"):
        codec.next_message()
    with pytest.raises(ProtocolError, match="not an array"):
        codec.next_message()


def test_once_over_the_limit_the_codec_keeps_raising() -> None:
    codec = RpcCodec(LIMIT)
    codec.receive_data(request_of_size(LIMIT + 1))
    with pytest.raises(ProtocolError, match=rf"\b{LIMIT}\b"):
        codec.next_message()
    with pytest.raises(ProtocolError, match=rf"\b{LIMIT}\b"):
        codec.next_message()
    with pytest.raises(ProtocolError, match=rf"\b{LIMIT}\b"):
        codec.receive_data(b"\x90")


def test_messages_before_a_malformed_one_in_the_same_chunk_are_still_delivered() -> None:
    codec = RpcCodec(LIMIT)
    codec.receive_data(encode_request(1, "m", []) + b"\xc1")
    first = codec.next_message()
    assert type(first) is Request and first.msgid == 1
    with pytest.raises(ProtocolError, match="malformed"):
        codec.next_message()


# --- left to the dispatcher --------------------------------------------------------


def test_map_with_int_keys_decodes() -> None:
    codec = RpcCodec(LIMIT)
    codec.receive_data(encode_request(1, "m", [{1: "a", b"k": 2, "s": 3}]))
    msg = only(codec)
    assert type(msg) is Request and msg.params == [{1: "a", b"k": 2, "s": 3}]


@pytest.mark.parametrize("method", [5, None, b"bytes", ["m"]], ids=repr)
def test_request_whose_method_is_not_a_string_is_still_a_request(method: object) -> None:
    codec = RpcCodec(LIMIT)
    codec.receive_data(packb([0, 11, method, "not-a-list"]))
    msg = only(codec)
    assert type(msg) is Request
    assert (msg.msgid, msg.method, msg.params) == (11, method, "not-a-list")


# --- RpcError ------------------------------------------------------------------------


def test_rpc_error_to_wire_is_code_and_message() -> None:
    err = RpcError(ErrorCode.NOT_FOUND, "no such session")
    wire = err.to_wire()
    assert wire == [2, "no such session"]
    assert type(wire[0]) is int
    assert msgpack.unpackb(packb(wire)) == [2, "no such session"]


def test_rpc_error_round_trips_through_the_wire() -> None:
    back = RpcError.from_wire(RpcError(ErrorCode.CONFLICT, "busy").to_wire())
    assert (back.code, back.message) == (ErrorCode.CONFLICT, "busy")
    assert str(back) == "conflict: busy"


def test_rpc_error_from_a_bare_string_is_internal_with_that_message() -> None:
    err = RpcError.from_wire("something broke")
    assert err.code == ErrorCode.INTERNAL
    assert err.message == "something broke"


def test_rpc_error_from_a_map_or_odd_list_is_internal_and_keeps_the_text() -> None:
    err = RpcError.from_wire({"message": "m"})
    assert err.code == ErrorCode.INTERNAL and "m" in err.message
    odd = RpcError.from_wire(["x", "y", "z"])
    assert odd.code == ErrorCode.INTERNAL and "x" in odd.message


def test_rpc_error_from_wire_stringifies_a_non_string_message() -> None:
    err = RpcError.from_wire([1, 123])
    assert (err.code, err.message) == (1, "123")


def test_rpc_error_with_an_unknown_code_still_formats() -> None:
    assert str(RpcError(99, "odd")) == "error 99: odd"
    assert str(RpcError(ErrorCode.INVALID_PARAMS, "bad")) == "invalid_params: bad"


# --- memory: no buffer keeps the size of the largest message ------------------------

_AFTER_ONE_LARGE_MESSAGE = """
import ctypes, gc
from agentd.rpc import RpcCodec, encode_request, encode_response

def rss_mib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024

def settle():
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # what glibc keeps of freed heap is not the codec's

codec = RpcCodec(64 << 20)
small = encode_request(1, "ping", [])
codec.receive_data(small); codec.messages(); encode_response(1, None, {})
settle()
base = rss_mib()
big = encode_request(2, "agent.send", [{"prompt": "p" * (10 << 20)}])
for i in range(0, len(big), 65536):
    codec.receive_data(big[i:i + 65536])
    got = codec.messages()
del big, got
reply = encode_response(2, None, {"text": "r" * (10 << 20)})
del reply
codec.receive_data(small); codec.messages(); encode_response(3, None, {})
settle()
print(rss_mib() - base)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmRSS from /proc")
def test_after_one_10_mib_message_each_way_the_codec_holds_no_buffer_of_that_size() -> None:
    out = subprocess.run([sys.executable, "-c", _AFTER_ONE_LARGE_MESSAGE], capture_output=True, text=True, check=True)
    grown = float(out.stdout)
    assert grown < 5, f"RSS stayed {grown:.1f} MiB above where it was before one 10 MiB request and reply"


# --- streaming and framing: the same messages, however the bytes are cut -------------


def test_messages_after_a_large_one_keep_their_own_size_limit() -> None:
    big = encode_request(1, "m", ["b" * (2 << 20)])
    codec = RpcCodec(4 << 20)
    codec.receive_data(big + encode_request(2, "m", []))
    got = codec.messages()
    assert [m.msgid for m in got if type(m) is Request] == [1, 2]
    # More than the limit's worth in all after the large one, each message small.
    small = encode_request(3, "m", ["c" * 100])
    for _ in range((3 << 20) // len(small)):
        codec.receive_data(small[:50])
        assert codec.messages() == []
        codec.receive_data(small[50:])
        (third,) = codec.messages()
        assert type(third) is Request and third.msgid == 3
    assert codec.buffered == 0
    codec.receive_data(encode_request(4, "m", ["d" * (4 << 20)]))
    with pytest.raises(ProtocolError, match=str(4 << 20)):
        codec.messages()


@pytest.mark.parametrize("guarded", [False, True], ids=["client", "daemon"])
@pytest.mark.parametrize("cut", [1, 7, 64, 1000, 70_000])
def test_a_mixed_stream_decodes_the_same_however_it_is_cut(guarded: bool, cut: int) -> None:
    messages = [
        [0, 1, "ping", []],
        [0, 2, "agent.send", [{"prompt": "p" * 150_000}]],
        [2, "event", [{"seq": 1}]],
        [0, 3, "long", [list(range(5000))]],
        [1, 4, None, {"k": "v" * 300}],
        [0, 5, "ping", []],
    ]
    data = b"".join(packb(m) for m in messages)
    codec = RpcCodec(1 << 20, guarded=guarded)
    got = []
    for i in range(0, len(data), cut):
        codec.receive_data(data[i : i + cut])
        got += codec.messages()
    assert [(type(m).__name__, getattr(m, "msgid", None)) for m in got] == [
        ("Request", 1),
        ("Request", 2),
        ("Notification", None),
        ("Request", 3),
        ("Response", 4),
        ("Request", 5),
    ]
    assert got[3].params == [list(range(5000))]  # type: ignore[union-attr]
    assert codec.buffered == 0
