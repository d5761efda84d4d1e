"""SSEDecoder: the WHATWG event-stream rules, whatever the chunking of the bytes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agentd.models._sse import EventTooLarge, ServerSentEvent, SSEDecoder


def chunkings(raw: bytes) -> Iterator[list[bytes]]:
    """`raw` whole, cut in two at every byte boundary, and one byte at a time."""
    yield [raw]
    for cut in range(1, len(raw)):
        yield [raw[:cut], raw[cut:]]
    yield [raw[i : i + 1] for i in range(len(raw))]


def decode(pieces: list[bytes]) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    for piece in pieces:
        events += decoder.feed(piece)
    events += decoder.close()
    return events


def decode_every_way(raw: bytes) -> list[ServerSentEvent]:
    """The events of `raw`, after checking every chunking gives the same ones."""
    expected = decode([raw])
    for pieces in chunkings(raw):
        assert decode(pieces) == expected, pieces
    return expected


def datas(raw: bytes) -> list[str]:
    return [event.data for event in decode_every_way(raw)]


# --- events and fields ---------------------------------------------------------------


def test_blank_line_dispatches_a_message_event() -> None:
    assert decode_every_way(b"data: hello\n\n") == [ServerSentEvent("message", "hello", None, None)]


def test_consecutive_events_are_dispatched_in_order() -> None:
    assert datas(b"data: one\n\ndata: two\n\n\n\ndata: three\n\n") == ["one", "two", "three"]


def test_multiple_data_lines_are_joined_with_newlines() -> None:
    assert datas(b"data: first\ndata: second\ndata:\ndata: fourth\n\n") == ["first\nsecond\n\nfourth"]


def test_one_optional_space_after_the_colon_is_removed() -> None:
    assert datas(b"data:tight\n\ndata: one\n\ndata:  two\n\ndata: \n\n") == ["tight", "one", " two", ""]


def test_a_field_without_a_colon_has_an_empty_value() -> None:
    # The data buffer is "\n" — not empty — so the event is dispatched with data "".
    assert datas(b"data\n\n") == [""]
    assert datas(b"data\ndata\n\n") == ["\n"]


def test_only_the_first_colon_separates_field_and_value() -> None:
    assert datas(b'data: {"a": "b:c"}\n\n') == ['{"a": "b:c"}']


def test_event_field_sets_the_type_of_one_event() -> None:
    events = decode_every_way(b"event: add\ndata: 1\n\ndata: 2\n\nevent:\ndata: 3\n\n")
    assert [(e.event, e.data) for e in events] == [("add", "1"), ("message", "2"), ("message", "3")]


def test_event_without_data_is_not_dispatched() -> None:
    assert decode_every_way(b"event: ping\n\nid: 7\n\nretry: 10\n\n") == []


def test_event_type_of_an_undispatched_block_does_not_leak_into_the_next() -> None:
    assert decode_every_way(b"event: ping\n\ndata: x\n\n") == [ServerSentEvent("message", "x")]


def test_comment_lines_are_ignored() -> None:
    raw = b": this is a comment\ndata: a\n:\n: data: not data\ndata: b\n\n: keep-alive\n\n"
    assert datas(raw) == ["a\nb"]


def test_unknown_fields_are_ignored() -> None:
    assert datas(b"foo: bar\nData: x\ndata : y\ndata: z\n\n") == ["z"]


def test_id_persists_across_events_until_changed() -> None:
    raw = b"id: 1\ndata: a\n\ndata: b\n\nid: 2\ndata: c\n\nid\ndata: d\n\n"
    assert [(e.data, e.id) for e in decode_every_way(raw)] == [("a", "1"), ("b", "1"), ("c", "2"), ("d", "")]


def test_id_containing_nul_is_ignored() -> None:
    assert [e.id for e in decode_every_way(b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n")] == ["1", "1"]


def test_id_of_an_undispatched_block_still_sets_the_last_event_id() -> None:
    assert decode_every_way(b"id: 9\n\ndata: a\n\n") == [ServerSentEvent("message", "a", "9")]


def test_retry_is_taken_only_when_all_ascii_digits() -> None:
    assert [e.retry for e in decode_every_way(b"retry: 1500\ndata: a\n\n")] == [1500]
    for bad in [b"15a", b"-1", b"+1", b" 1", b"1.5", b"", "\u0661\u0662".encode(), b"1_000"]:
        assert [e.retry for e in decode_every_way(b"retry: " + bad + b"\ndata: a\n\n")] == [None], bad


def test_retry_rides_on_the_next_dispatched_event_only() -> None:
    raw = b"retry: 3000\n\ndata: a\n\ndata: b\n\n"
    assert [(e.data, e.retry) for e in decode_every_way(raw)] == [("a", 3000), ("b", None)]


# --- line endings --------------------------------------------------------------------


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_every_line_ending_is_accepted(eol: bytes) -> None:
    raw = b"event: e" + eol + b"data: a" + eol + b"data: b" + eol + eol + b"data: c" + eol + eol
    assert [(e.event, e.data) for e in decode_every_way(raw)] == [("e", "a\nb"), ("message", "c")]


def test_mixed_line_endings_in_one_stream() -> None:
    assert datas(b"data: a\r\ndata: b\rdata: c\n\r\ndata: d\r\r") == ["a\nb\nc", "d"]


def test_cr_at_the_end_of_a_chunk_and_lf_at_the_start_of_the_next_are_one_line_ending() -> None:
    # Were they two endings, the LF would be a blank line dispatching "a" alone.
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\ndata: b\r\n") == []
    assert decoder.feed(b"\r\n") == [ServerSentEvent("message", "a\nb")]


def test_cr_at_the_end_of_a_chunk_then_another_cr_is_a_blank_line() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\r") == [ServerSentEvent("message", "a")]


def test_cr_at_the_end_of_a_chunk_then_an_empty_feed_still_pairs_with_the_lf() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"") == []
    assert decoder.feed(b"\ndata: b\n\n") == [ServerSentEvent("message", "a\nb")]


def test_unicode_line_separators_do_not_end_lines() -> None:
    # str.splitlines would break on these; the event-stream grammar does not.
    text = "a\u2028b\u2029c\x0bd\x0ce\x1cf\x85g"
    assert datas(b"data: " + text.encode() + b"\n\n") == [text]


# --- encoding ------------------------------------------------------------------------


def test_a_leading_bom_is_dropped() -> None:
    assert decode_every_way(b"\xef\xbb\xbfdata: a\n\n") == [ServerSentEvent("message", "a")]


def test_only_the_first_bom_is_dropped() -> None:
    # The second BOM makes its line's field name "\ufeffdata": unknown, so ignored.
    assert datas(b"\xef\xbb\xbf\xef\xbb\xbfdata: a\n\n\xef\xbb\xbfdata: b\n\ndata: c\n\n") == ["c"]


def test_bytes_that_begin_like_a_bom_but_are_not_one_are_kept() -> None:
    assert datas(b"data: \xef\xbb\xbf\n\n") == ["\ufeff"]
    assert decode_every_way(b"\xef\xbbdata: a\n\n") == []  # field name "\ufffddata"


def test_a_multibyte_character_split_across_feeds_is_decoded() -> None:
    text = "h\u00e9llo \u20ac \U0001f600 \u65e5\u672c"
    raw = b"data: " + text.encode() + b"\n\n"
    assert datas(raw) == [text]  # every chunking, so every split inside every character


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    assert datas(b"data: a\xffb\xe2\x82\n\n") == ["a\ufffdb\ufffd"]


# --- end of stream -------------------------------------------------------------------


def test_an_event_missing_its_blank_line_at_close_is_discarded() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n\ndata: b\n") == [ServerSentEvent("message", "a")]
    assert decoder.close() == []


def test_an_unterminated_last_line_at_close_is_discarded() -> None:
    assert decode_every_way(b"data: a\n\ndata: b") == [ServerSentEvent("message", "a")]


def test_empty_input_gives_no_events() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"") == []
    assert decoder.feed(b"\n\n\r\n") == []
    assert decoder.close() == []


def test_a_long_line_fed_in_small_pieces_is_reassembled() -> None:
    payload = "x" * 100_000
    decoder = SSEDecoder()
    raw = b"data: " + payload.encode() + b"\n\n"
    events: list[ServerSentEvent] = []
    for start in range(0, len(raw), 7):
        events += decoder.feed(raw[start : start + 7])
    assert events == [ServerSentEvent("message", payload)]


def test_an_openai_style_stream_decodes_to_its_data_lines() -> None:
    raw = (
        b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[{"index":0,'
        b'"delta":{"content":"Hi"},"finish_reason":null}]}\n\n'
        b"data: [DONE]\n\n"
    )
    assert datas(raw) == [
        '{"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[{"index":0,'
        '"delta":{"content":"Hi"},"finish_reason":null}]}',
        "[DONE]",
    ]


# --- bounds: a stream that never ends a line or an event ----------------------------


def test_a_line_longer_than_the_limit_is_refused_even_across_feeds() -> None:
    decoder = SSEDecoder(max_event_bytes=100)
    assert decoder.feed(b"data: " + b"x" * 60) == []
    with pytest.raises(EventTooLarge, match="a line of more than 100 bytes"):
        decoder.feed(b"x" * 60)


def test_a_line_longer_than_the_limit_is_refused_when_a_line_ends_in_the_same_feed() -> None:
    decoder = SSEDecoder(max_event_bytes=100)
    with pytest.raises(EventTooLarge, match="a line of more than 100 bytes"):
        decoder.feed(b"data: a\n\ndata: " + b"x" * 120)


def test_an_event_of_many_data_lines_over_the_limit_is_refused() -> None:
    decoder = SSEDecoder(max_event_bytes=100)
    with pytest.raises(EventTooLarge, match="an event of more than 100 bytes of data"):
        decoder.feed(b"data: 0123456789012345678901234567890123456789\n" * 3)


def test_many_events_together_over_the_limit_are_fine() -> None:
    decoder = SSEDecoder(max_event_bytes=100)
    events = decoder.feed(b"data: 0123456789012345678901234567890123456789\n\n" * 10)
    assert len(events) == 10 and events[-1].data == "0123456789012345678901234567890123456789"
