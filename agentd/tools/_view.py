"""`view`: a text file's lines, numbered as `cat -n` numbers them."""

from __future__ import annotations

import os
import stat
from typing import BinaryIO

import attrs

from . import _fs, _threads
from ._base import ToolContext, ToolError, ToolLimits, ToolOutput, ToolSpec

__all__ = ["VIEW", "ViewParams"]

# Bytes looked at for a NUL before any line is shown: what git and grep call binary.
_SNIFF_BYTES = 8192


@attrs.frozen
class ViewParams:
    path: str = attrs.field(metadata={"description": "The file, relative to the workspace root."})
    offset: int = attrs.field(
        default=1, metadata={"description": "The first line to show, counted from 1.", "minimum": 1}
    )
    limit: int | None = attrs.field(
        default=None,
        metadata={"description": "How many lines to show at most (default 2000).", "minimum": 1},
    )


def _read_line(f: BinaryIO, max_bytes: int) -> tuple[bytes, int]:
    """One line (its first `max_bytes` at most) and how many bytes of it were left unread and skipped."""
    line = f.readline(max_bytes)
    skipped = 0
    while line and not line.endswith(b"\n") and len(line) == max_bytes:
        rest = f.readline(64 * 1024)
        if not rest:
            break
        skipped += len(rest.rstrip(b"\n"))
        if rest.endswith(b"\n"):
            line += b"\n"
            break
    return line, skipped


def _decode(line: bytes, relpath: str, number: int) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A line cut at the byte cap may end inside a character; only that is forgiven.
        if exc.start >= len(line) - 3 and exc.reason == "unexpected end of data":
            return line[: exc.start].decode("utf-8")
        raise ToolError(f"{relpath} is not a text file: line {number} is not UTF-8") from None


def _view(root: str, params: ViewParams, limits: ToolLimits) -> ToolOutput:
    opened = _fs.open_path(root, params.path)
    relpath = opened.relpath
    if not stat.S_ISREG(opened.stat.st_mode):
        os.close(opened.fd)
        if stat.S_ISDIR(opened.stat.st_mode):
            raise ToolError(f"{params.path} is a directory: use ls to list it")
        raise ToolError(f"{params.path} is not a regular file")
    with open(opened.fd, "rb", closefd=True) as f:
        head = os.pread(f.fileno(), _SNIFF_BYTES, 0)
        if b"\0" in head:
            raise ToolError(f"{relpath} is a binary file: view shows text files only")
        if not head:
            return ToolOutput(f"{relpath} is empty", "empty file")
        limit = params.limit if params.limit is not None else limits.view_default_lines
        # A character is up to 4 bytes; reading more of a line than can be shown is waste.
        line_bytes = limits.max_line_chars * 4
        shown: list[str] = []
        shown_bytes = 0
        number = 0
        more = False
        cut_at_bytes = False
        while True:
            line, skipped = _read_line(f, line_bytes)
            if not line:
                break
            number += 1
            if number < params.offset:
                continue
            if len(shown) == limit:
                more = True
                break
            text = _decode(line, relpath, number).rstrip("\n").removesuffix("\r")
            if skipped or len(text) > limits.max_line_chars:
                text = text[: limits.max_line_chars] + f" [line cut at {limits.max_line_chars} characters]"
            row = f"{number:6}\t{text}"
            size = len(row.encode("utf-8")) + 1
            if shown and shown_bytes + size > limits.view_max_bytes:
                more = cut_at_bytes = True
                break
            shown.append(row)
            shown_bytes += size
    if number < params.offset:
        raise ToolError(f"offset {params.offset} is past the end of {relpath} ({number} lines)")
    last = params.offset + len(shown) - 1
    out = "\n".join(shown)
    if more:
        why = f"the output is capped at {limits.view_max_bytes} bytes" if cut_at_bytes else f"limit {limit}"
        out += f"\n[lines {params.offset}-{last} shown ({why}); more follow: view with offset={last + 1}]"
    return ToolOutput(out, f"lines {params.offset}-{last}" + (" of more" if more else ""))


async def _run(ctx: ToolContext, params: ViewParams) -> ToolOutput:
    return await _threads.run_sync(_view, ctx.root, params, ctx.limits, abandon_on_cancel=True)


VIEW = ToolSpec(
    name="view",
    description=(
        "Show a text file of the workspace with line numbers (as `cat -n`). Long files are shown in "
        "parts: `offset` is the first line, `limit` how many. Binary files and directories are refused."
    ),
    params=ViewParams,
    kind="read",
    run=_run,
    describe=lambda p: f"view {p.path}",
)
