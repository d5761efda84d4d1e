"""What a run did to a file, in a word and as a unified diff."""

from __future__ import annotations

import difflib
from typing import Literal

from agentd.store import FileSnapshot

__all__ = ["Action", "action_of", "differs", "unified_diff"]

# What the run did to a file, before to after.
Action = Literal["created", "changed", "deleted"]


def differs(a: FileSnapshot, b: FileSnapshot) -> bool:
    return (a.size, a.sha256) != (b.size, b.sha256)


def action_of(before: FileSnapshot, after: FileSnapshot) -> Action | None:
    """None when the file is as it was (written with the same bytes, or created and removed again)."""
    if not differs(before, after):
        return None
    if not before.exists:
        return "created"
    if not after.exists:
        return "deleted"
    return "changed"


def _text(snapshot: FileSnapshot) -> str | None:
    """The file as text, if it is UTF-8 without NULs; "" for no file."""
    if not snapshot.exists:
        return ""
    assert snapshot.content is not None
    if b"\x00" in snapshot.content:
        return None
    try:
        return snapshot.content.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _size(snapshot: FileSnapshot) -> str:
    return "no file" if snapshot.size is None else f"{snapshot.size} bytes"


def unified_diff(path: str, before: FileSnapshot, after: FileSnapshot, max_bytes: int) -> str:
    """The change as a unified diff (`--- a/PATH`, `+++ b/PATH`, /dev/null for no file), as git prints it.

    A binary file, or one too large to diff or whose content was not kept, gets
    the two header lines and one line saying so.
    """
    old = f"a/{path}" if before.exists else "/dev/null"
    new = f"b/{path}" if after.exists else "/dev/null"
    header = f"--- {old}\n+++ {new}\n"
    sizes = f"({_size(before)} -> {_size(after)})"
    if before.content is None and before.exists:
        return header + f"content before the run was not kept: too large {sizes}\n"
    if after.content is None and after.exists:
        return header + f"file too large to diff {sizes}\n"
    if (before.size or 0) > max_bytes or (after.size or 0) > max_bytes:
        return header + f"file too large to diff {sizes}\n"
    a, b = _text(before), _text(after)
    if a is None or b is None:
        return header + f"binary file changed {sizes}\n"
    lines = difflib.unified_diff(a.splitlines(keepends=True), b.splitlines(keepends=True), old, new, n=3)
    out: list[str] = []
    for line in lines:
        if line.endswith("\n"):
            out.append(line)
        else:
            out.append(line + "\n\\ No newline at end of file\n")
    if not out:
        # An empty file created or removed: no line differs.
        return header
    return "".join(out)
