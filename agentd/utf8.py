"""Text that cannot go on the wire or into the store: both carry UTF-8 only.

Python hands a program the bytes that are not UTF-8 (in argv, a path, stdin
under some locales) as lone surrogates, which msgpack and SQLite refuse to
encode. They are caught where such input comes in, and named precisely.
Shared by agentd and agentctl; imports nothing.
"""

from __future__ import annotations

__all__ = ["describe_bad_bytes", "undecodable"]


def describe_bad_bytes(data: bytes, exc: UnicodeDecodeError) -> str:
    return f"byte 0x{data[exc.start]:02x} at offset {exc.start}"


def undecodable(text: str) -> str | None:
    """Where `text` holds bytes that were not UTF-8, or None when it is clean."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(text[exc.start])
        offset = len(text[: exc.start].encode("utf-8", "surrogatepass"))
        if 0xDC80 <= code <= 0xDCFF:
            # How Python carries a byte that was not UTF-8 (surrogateescape).
            return f"byte 0x{code - 0xDC00:02x} at offset {offset}"
        return f"character U+{code:04X} at offset {offset}"
    return None
