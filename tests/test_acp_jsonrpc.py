"""The ACP bridge's JSON-RPC core: framing, validation and the errors each bad line gets."""

from __future__ import annotations

import json
from typing import Any

from agentctl.acp._jsonrpc import (
    INVALID_REQUEST,
    PARSE_ERROR,
    Connection,
    Invalid,
    Notification,
    Request,
    Response,
)


def events(conn: Connection, data: bytes) -> list[Any]:
    conn.receive_data(data)
    out = []
    while (event := conn.next_event()) is not None:
        out.append(event)
    return out


def test_request_and_notification_split_across_reads() -> None:
    conn = Connection()
    assert events(conn, b'{"jsonrpc":"2.0","id":1,"method":"initialize","par') == []
    got = events(conn, b'ams":{"protocolVersion":1}}\n{"jsonrpc":"2.0","method":"session/cancel","params":{}}\n')
    assert got == [Request(1, "initialize", {"protocolVersion": 1}), Notification("session/cancel", {})]


def test_blank_lines_and_crlf_are_ignored() -> None:
    conn = Connection()
    assert events(conn, b'\n\r\n{"jsonrpc":"2.0","id":"a","method":"m"}\r\n') == [Request("a", "m", None)]


def test_malformed_json_is_a_parse_error_with_null_id() -> None:
    (bad,) = events(Connection(), b"{not json\n")
    assert isinstance(bad, Invalid) and bad.code == PARSE_ERROR and bad.id is None and bad.answer


def test_not_an_object_wrong_version_and_bad_id_are_invalid_requests() -> None:
    conn = Connection()
    got = events(
        conn,
        b'[1,2]\n{"jsonrpc":"1.0","id":3,"method":"m"}\n{"jsonrpc":"2.0","id":true,"method":"m"}\n'
        b'{"jsonrpc":"2.0","id":4,"method":5}\n{"jsonrpc":"2.0","id":5,"method":"m","params":7}\n',
    )
    assert [(e.code, e.id) for e in got] == [
        (INVALID_REQUEST, None),
        (INVALID_REQUEST, 3),
        (INVALID_REQUEST, None),
        (INVALID_REQUEST, 4),
        (INVALID_REQUEST, 5),
    ]
    assert "JSON object" in got[0].message and "jsonrpc" in got[1].message and "id" in got[2].message


def test_overlong_line_is_dropped_in_its_place_without_growing() -> None:
    conn = Connection(max_line=100)
    conn.receive_data(b'{"jsonrpc":"2.0","id":1,"method":"a"}\n' + b"x" * 150)
    assert len(conn._buffer) == 0  # dropped as it came, not kept until its newline
    conn.receive_data(b"y" * 10_000)
    got = events(conn, b'yy\n{"jsonrpc":"2.0","id":2,"method":"b"}\n')
    assert got[0] == Request(1, "a", None)
    assert isinstance(got[1], Invalid) and "longer than 100" in got[1].message
    assert got[2] == Request(2, "b", None)
    # An overlong line that arrives whole is dropped too.
    (bad,) = events(conn, b"z" * 200 + b"\n")
    assert isinstance(bad, Invalid)


def test_responses_match_our_requests_and_strays_get_no_answer() -> None:
    conn = Connection()
    msg_id, data = conn.request("session/request_permission", {"x": 1})
    assert json.loads(data) == {
        "jsonrpc": "2.0",
        "id": msg_id,
        "method": "session/request_permission",
        "params": {"x": 1},
    }
    got = events(conn, json.dumps({"jsonrpc": "2.0", "id": msg_id, "result": {"ok": True}}).encode() + b"\n")
    assert got == [Response(msg_id, result={"ok": True})]
    # The same id again, or one never sent: nobody waits for it, and replying to a response would loop.
    (stray,) = events(conn, json.dumps({"jsonrpc": "2.0", "id": msg_id, "result": None}).encode() + b"\n")
    assert isinstance(stray, Invalid) and not stray.answer
    other, _ = conn.request("m", {})
    got = events(
        conn, json.dumps({"jsonrpc": "2.0", "id": other, "error": {"code": -1, "message": "no"}}).encode() + b"\n"
    )
    assert got == [Response(other, error={"code": -1, "message": "no"})]


def test_outgoing_messages_are_single_lines() -> None:
    conn = Connection()
    data = conn.result(1, {"text": "a\nb\u2028c"})
    assert data.count(b"\n") == 1 and data.endswith(b"\n")
    assert json.loads(data) == {"jsonrpc": "2.0", "id": 1, "result": {"text": "a\nb\u2028c"}}
    assert json.loads(conn.error(None, PARSE_ERROR, "parse error")) == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": PARSE_ERROR, "message": "parse error"},
    }
    assert json.loads(conn.notify("session/update", {"a": 1})) == {
        "jsonrpc": "2.0",
        "method": "session/update",
        "params": {"a": 1},
    }
