"""How a value a peer sent is shown in a log line or an error message: bounded.

A peer decides how long its strings are and how deep its arrays go; a log line
or an error text that quotes one must not grow with it (16 MB in, a 100 MB log
line out) nor recurse with it. Control characters come out escaped, so a quoted
value cannot start a forged log line.
"""

from __future__ import annotations

import reprlib

__all__ = ["BRIEF_LENGTH", "brief", "clip", "clip_middle"]

# Enough to recognise a value by, short enough that a log line stays one line.
BRIEF_LENGTH = 300

_repr = reprlib.Repr()
_repr.maxlevel = 4
_repr.maxstring = BRIEF_LENGTH
_repr.maxother = BRIEF_LENGTH
_repr.maxlong = 60
for _name in ("maxlist", "maxdict", "maxtuple", "maxset", "maxfrozenset", "maxdeque", "maxarray"):
    setattr(_repr, _name, 8)


def brief(value: object, limit: int = BRIEF_LENGTH) -> str:
    """`repr(value)`, cut to about `limit` characters and four levels of nesting."""
    try:
        text = _repr.repr(value)
    except Exception as exc:  # a repr that fails must not take the error report with it
        text = f"<{type(value).__name__} (unprintable: {type(exc).__name__})>"
    return _cut(text, limit)


def clip(text: str, limit: int = BRIEF_LENGTH) -> str:
    """`text` cut to about `limit` characters, saying how much was left out."""
    return _cut(text, limit)


def clip_middle(text: str, limit: int) -> str:
    """`text` cut to about `limit` characters by leaving out its middle: for a message that quotes a value
    (in the middle) and says why at the end."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}… ({len(text) - 2 * half} characters left out) …{text[-half:]}"


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"
