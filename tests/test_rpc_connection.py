"""The sans-io RpcConnection, both ends wired back to back: no sockets, no event loop."""

from __future__ import annotations

import msgpack
import pytest
from support import nested_bytes

from agentd.rpc import (
    MAX_DEPTH,
    MAX_VALUES,
    NEED_DATA,
    PAUSED,
    TAKEN,
    Call,
    ErrorCode,
    InputBudget,
    InputBudgetExceeded,
    Notification,
    ProtocolError,
    Reply,
    Request,
    RpcConnection,
    RpcError,
    encode_notification,
    encode_request,
    encode_response,
)


def events(conn: RpcConnection, data: bytes = b"") -> list[object]:
    """Everything `data` completes, up to NEED_DATA or PAUSED (which ends the list)."""
    if data:
        conn.receive_data(data)
    out: list[object] = []
    while True:
        event = conn.next_event()
        out.append(event)
        if event is NEED_DATA or event is PAUSED:
            return out


def reply_of(event: object) -> list[object]:
    assert type(event) is Reply, event
    decoded: list[object] = msgpack.unpackb(event.data, strict_map_key=False)
    return decoded


# --- calls: ids and the pending table ----------------------------------------------


def test_a_call_is_answered_by_the_response_with_its_msgid() -> None:
    client, server = RpcConnection(), RpcConnection()
    first, first_bytes = client.call("a", [])
    second, second_bytes = client.call("b", [{"x": 1}])
    assert first.msgid != second.msgid
    got = events(server, first_bytes + second_bytes)
    requests = [e for e in got if type(e) is Request]
    assert [(r.method, r.params) for r in requests] == [("a", []), ("b", [{"x": 1}])]
    # Answered out of order: each reply finds its own call.
    back = server.respond(requests[1], None, "B") + server.respond(requests[0], [ErrorCode.NOT_FOUND, "no"], None)
    assert events(client, back) == [second, first, NEED_DATA]
    assert second.answered and second.outcome() == "B"
    with pytest.raises(RpcError) as err:
        first.outcome()
    assert (err.value.code, err.value.message) == (ErrorCode.NOT_FOUND, "no")


def test_a_response_to_no_call_of_ours_is_dropped() -> None:
    client = RpcConnection()
    assert events(client, encode_response(77, None, "stray")) == [NEED_DATA]


def test_an_abandoned_call_drops_its_late_response() -> None:
    client, server = RpcConnection(), RpcConnection()
    call, data = client.call("slow", [])
    (request, _) = events(server, data)
    assert type(request) is Request
    client.abandon(call)
    assert events(client, server.respond(request, None, 1)) == [NEED_DATA]
    assert not call.answered


def test_a_call_without_want_reply_is_not_answered() -> None:
    client, server = RpcConnection(), RpcConnection()
    call, data = client.call("fire", [], want_reply=False)
    (request, _) = events(server, data)
    assert type(request) is Request and request.msgid == call.msgid
    assert events(client, server.respond(request, None, 1)) == [NEED_DATA]
    assert not call.answered


def test_close_hands_back_every_unanswered_call_lost_with_the_reason() -> None:
    client = RpcConnection()
    calls = [client.call("m", [])[0] for _ in range(3)]
    lost = client.close("the daemon closed the connection")
    assert lost == calls
    assert all(c.lost == "the daemon closed the connection" and not c.answered for c in calls)
    assert client.closed == "the daemon closed the connection"
    assert client.close("again") == [] and client.closed == "the daemon closed the connection"


# --- routing -------------------------------------------------------------------------


def test_notifications_come_out_in_order_between_answers() -> None:
    client = RpcConnection()
    call, _ = client.call("m", [])
    data = (
        encode_notification("event", [1]) + encode_response(call.msgid, None, "r") + encode_notification("event", [2])
    )
    got = events(client, data)
    assert [type(e) for e in got] == [Notification, Call, Notification, type(NEED_DATA)]
    assert [e.params for e in got if type(e) is Notification] == [[1], [2]]


def test_a_notification_whose_method_is_not_a_string_is_dropped() -> None:
    client = RpcConnection()
    assert events(client, msgpack.packb([2, 5, []])) == [NEED_DATA]


@pytest.mark.parametrize("method", [5, None, b"ping", ["ping"]], ids=repr)
def test_a_request_whose_method_is_not_a_string_is_refused_with_unknown_method(method: object) -> None:
    server = RpcConnection()
    reply, _ = events(server, msgpack.packb([0, 9, method, []]))
    assert reply_of(reply) == [1, 9, [ErrorCode.UNKNOWN_METHOD, reply_of(reply)[2][1]], None]  # type: ignore[index]
    assert "method must be a string" in reply_of(reply)[2][1]  # type: ignore[index]
    assert server.in_flight == 0


def test_a_method_nested_deep_is_refused_with_a_short_message() -> None:
    server = RpcConnection()
    method: object = "m"
    for _ in range(90):
        method = [method]
    reply, _ = events(server, msgpack.packb([0, 1, method, []]))
    message = reply_of(reply)[2][1]  # type: ignore[index]
    assert len(message) < 400


# --- the in-flight limit -------------------------------------------------------------


def test_requests_past_the_in_flight_limit_wait_until_one_is_answered() -> None:
    server = RpcConnection(max_in_flight=2)
    data = b"".join(encode_request(i, "m", []) for i in range(1, 5))
    got = events(server, data)
    assert [type(e) for e in got] == [Request, Request, type(PAUSED)]
    assert server.in_flight == 2
    assert server.next_event() is PAUSED  # still: nothing was answered
    first = got[0]
    assert type(first) is Request
    server.respond(first, None, None)
    third = server.next_event()
    assert type(third) is Request and third.msgid == 3
    assert server.next_event() is PAUSED


def test_a_reply_that_cannot_be_encoded_leaves_the_request_owed() -> None:
    server = RpcConnection(max_in_flight=1)
    (request, _) = events(server, encode_request(1, "m", []))
    assert type(request) is Request
    with pytest.raises(TypeError):
        server.respond(request, None, object())
    assert server.in_flight == 1
    server.respond(request, [ErrorCode.INTERNAL, "internal error"], None)
    assert server.in_flight == 0


# --- limits on what one message may decode to ----------------------------------------


def nested(depth: int) -> object:
    value: object = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_params_nested_within_the_depth_limit_are_decoded() -> None:
    server = RpcConnection(guarded=True)
    # The request array and the params array are two levels.
    (request, _) = events(server, msgpack.packb([0, 1, "m", [nested(MAX_DEPTH - 2)]]))
    assert type(request) is Request


@pytest.mark.parametrize("depth", [MAX_DEPTH - 1, 990, 1020])
def test_params_nested_past_the_depth_limit_are_refused_with_invalid_params(depth: int) -> None:
    server = RpcConnection(guarded=True)
    # [0, 1, "m", [<nested>]]
    reply, need = events(server, b"\x94\x00\x01\xa1m\x91" + nested_bytes(depth))
    _, msgid, error, result = reply_of(reply)
    assert (msgid, result) == (1, None)
    assert error == [ErrorCode.INVALID_PARAMS, f"message nested deeper than {MAX_DEPTH} levels of arrays and maps"]
    # The stream goes on.
    assert need is NEED_DATA
    (after, _) = events(server, encode_request(2, "ping", []))
    assert type(after) is Request and after.msgid == 2


def test_a_message_with_too_many_values_is_refused_without_being_decoded() -> None:
    server = RpcConnection(guarded=True)
    data = msgpack.packb([0, 70000, "m", [[None] * MAX_VALUES]])
    reply, _ = events(server, data)
    too_many = f"message holds more than {MAX_VALUES} values"
    assert reply_of(reply)[1:] == [70000, [ErrorCode.INVALID_PARAMS, too_many], None]


def test_many_values_in_one_string_are_one_value() -> None:
    server = RpcConnection(guarded=True)
    (request, _) = events(server, encode_request(1, "m", [{"prompt": "x" * (MAX_VALUES * 2)}]))
    assert type(request) is Request and len(request.params[0]["prompt"]) == MAX_VALUES * 2  # type: ignore[index]


def test_a_notification_over_the_limits_breaks_the_stream() -> None:
    server = RpcConnection(guarded=True)
    server.receive_data(msgpack.packb([2, "n", [nested(200)]]))
    with pytest.raises(ProtocolError, match="nested deeper"):
        server.next_event()


def test_an_unguarded_end_decodes_what_its_daemon_sends_however_many_values() -> None:
    client = RpcConnection()
    call, _ = client.call("session.messages", [])
    (answered, _) = events(client, encode_response(call.msgid, None, [{"i": i} for i in range(MAX_VALUES)]))
    assert answered is call and len(call.outcome()) == MAX_VALUES


@pytest.mark.parametrize("key", [[1, 2], {"a": 1}], ids=["array", "map"])
def test_a_map_key_that_is_an_array_or_a_map_still_decodes_as_a_request(key: object) -> None:
    server = RpcConnection(guarded=True)
    # msgpack-python cannot pack an unhashable key; build `{key: 1}` by hand.
    data = b"\x94\x00\x05\xa1m\x91\x81" + msgpack.packb(key) + b"\x01"
    (request, _) = events(server, data)
    assert type(request) is Request and request.msgid == 5
    ((got_key, got_value),) = request.params[0].items()  # type: ignore[index]
    assert got_key == key and got_value == 1
    assert type(got_key).__name__ == type(key).__name__


# --- the daemon-wide input budget ----------------------------------------------------


def test_unfinished_messages_are_charged_to_the_shared_budget_and_released_on_close() -> None:
    budget = InputBudget(1000)
    a, b = RpcConnection(budget=budget), RpcConnection(budget=budget)
    partial = encode_request(1, "m", ["x" * 2000])
    assert events(a, partial[:600]) == [NEED_DATA]
    assert budget.used == 600
    with pytest.raises(InputBudgetExceeded, match="1000-byte input budget"):
        events(b, partial[:500])
    b.close("over budget")
    assert budget.used == 600
    a.close("done")
    assert budget.used == 0


def test_a_finished_message_gives_its_bytes_back_to_the_budget() -> None:
    budget = InputBudget(10_000)
    conn = RpcConnection(budget=budget)
    data = encode_request(1, "m", ["x" * 3000])
    events(conn, data[:2000])
    assert budget.used == 2000
    (request, _) = events(conn, data[2000:] + data[:10])
    assert type(request) is Request
    assert budget.used == 10


def test_complete_messages_larger_than_the_budget_in_one_read_are_not_refused() -> None:
    budget = InputBudget(100)
    conn = RpcConnection(budget=budget)
    got = events(conn, b"".join(encode_request(i, "m", ["y" * 50]) for i in range(10)))
    assert len([e for e in got if type(e) is Request]) == 10
    assert budget.used == 0


def test_the_size_limit_still_closes_at_one_byte_over() -> None:
    conn = RpcConnection(max_message_size=100)
    conn.receive_data(encode_request(1, "m", ["z" * 200]))
    with pytest.raises(ProtocolError, match="100-byte limit"):
        conn.next_event()


# --- a server answering as it reads ----------------------------------------------------


def test_answer_replies_inline_takes_requests_on_and_refuses_with_rpc_errors() -> None:
    server = RpcConnection(max_in_flight=8)
    taken: list[tuple[int, str]] = []

    def answer(msgid: int, method: str, params: object) -> object:
        if method == "slow":
            taken.append((msgid, method))
            return TAKEN
        if method == "bad":
            raise RpcError(ErrorCode.NOT_FOUND, "no such thing")
        if method == "odd":
            return object()  # not encodable
        return {"echo": params}

    data = b"".join(encode_request(i, m, []) for i, m in enumerate(["ping", "slow", "bad", "odd", "ping"], 1))
    server.receive_data(data)
    reply, need = server.next_events(answer)
    assert need is NEED_DATA and type(reply) is Reply
    unpacker = msgpack.Unpacker()
    unpacker.feed(reply.data)
    assert list(unpacker) == [
        [1, 1, None, {"echo": []}],
        [1, 3, [ErrorCode.NOT_FOUND, "no such thing"], None],
        [1, 4, [ErrorCode.INTERNAL, unpacker_error_text(reply.data)], None],
        [1, 5, None, {"echo": []}],
    ]
    assert taken == [(2, "slow")] and server.in_flight == 1
    assert len(server.unencodable) == 1 and "'odd'" in server.unencodable[0]


def unpacker_error_text(data: bytes) -> str:
    """The internal error's text in a batch of replies (it names the encoder's complaint)."""
    unpacker = msgpack.Unpacker()
    unpacker.feed(data)
    (text,) = [m[2][1] for m in unpacker if m[2] is not None and m[2][0] == ErrorCode.INTERNAL]
    assert text.startswith("internal error: cannot encode the result")
    return str(text)


def test_a_constant_reply_answers_empty_params_without_asking() -> None:
    server = RpcConnection(max_in_flight=8, constant_replies={"ping": {}, "version": [1, "x"]})
    asked: list[tuple[int, str, object]] = []

    def answer(msgid: int, method: str, params: object) -> object:
        asked.append((msgid, method, params))
        return {"asked": True}

    requests: list[tuple[int, str, list[object]]] = [
        (1, "ping", []),
        (2**32 - 1, "ping", []),  # the widest msgid: packed on its own, joined to the constant
        (300, "version", []),
        (4, "ping", [{}]),  # params given: the method decides, as for any request
        (5, "other", []),
    ]
    server.receive_data(b"".join(encode_request(*r) for r in requests))
    reply, need = server.next_events(answer)
    assert need is NEED_DATA and type(reply) is Reply
    unpacker = msgpack.Unpacker()
    unpacker.feed(reply.data)
    assert list(unpacker) == [
        [1, 1, None, {}],
        [1, 2**32 - 1, None, {}],
        [1, 300, None, [1, "x"]],
        [1, 4, None, {"asked": True}],
        [1, 5, None, {"asked": True}],
    ]
    assert asked == [(4, "ping", [{}]), (5, "other", [])]
    assert server.in_flight == 0


def test_constant_replies_wait_their_turn_behind_the_in_flight_limit() -> None:
    server = RpcConnection(max_in_flight=1, constant_replies={"ping": {}})
    server.receive_data(encode_request(1, "slow", []) + encode_request(2, "ping", []))
    assert server.next_events(lambda msgid, method, params: TAKEN) == [PAUSED]
    assert server.in_flight == 1


@pytest.mark.parametrize("kind", [False, 0.0], ids=repr)
def test_a_message_whose_type_only_equals_0_is_not_a_request(kind: object) -> None:
    # The fast path tests the type by identity; a value equal to 0 but not the integer is no request.
    server = RpcConnection(constant_replies={"ping": {}})
    server.receive_data(msgpack.packb([kind, 1, "ping", []]))
    with pytest.raises(ProtocolError, match="unknown message type"):
        server.next_events(lambda msgid, method, params: {})
