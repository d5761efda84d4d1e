"""`grep`: the lines that match a regex, by ripgrep when it is installed, by Python otherwise.

ripgrep is started in the directory the confined walk opened, named by the
descriptor itself, so it cannot be sent elsewhere; a single file is read by
Python through its descriptor.

Both searches find the same lines in the same order (files by path, as
ripgrep's `--sort path` walks them; lines in file order) and hand them to one
formatter, so the model cannot tell which ran. What differs is the regex
dialect (Rust's or Python's, alike for everyday patterns) and, for ripgrep,
that .gitignore files above the workspace root count too.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterator
from functools import partial
from typing import Any

import attrs
import trio

from . import _fs, _threads
from ._base import ToolContext, ToolError, ToolLimits, ToolOutput, ToolSpec
from ._glob import matcher

__all__ = ["GREP", "GrepParams", "Match", "format_matches", "search_python", "search_rg"]

# Read from a file at a time by the Python search; a NUL in a block ends the
# file's search, as ripgrep stops at a binary file's first NUL.
_BLOCK = 64 * 1024
# One JSON line from ripgrep larger than this (a match in a huge line) is skipped.
_MAX_RG_LINE = 4 * 1024 * 1024
_RG_STDERR = 4096


@attrs.frozen
class GrepParams:
    pattern: str = attrs.field(metadata={"description": "The regular expression to look for in each line."})
    path: str = attrs.field(
        default=".",
        metadata={"description": "The directory (or one file) to search, relative to the workspace root."},
    )
    include: str | None = attrs.field(
        default=None,
        metadata={"description": "Only files matching this glob: `*.py` (a name at any depth), `src/*.ts`."},
    )
    case_insensitive: bool = attrs.field(default=False, metadata={"description": "Ignore case."})


@attrs.frozen
class Match:
    # Relative to the workspace root.
    path: str
    line: int
    text: str


def _line_text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace").removesuffix("\n").removesuffix("\r")


def _lines(fd: int) -> Iterator[tuple[int, bytes]]:
    with open(fd, "rb", closefd=True) as f:
        number = 0
        pending = b""
        while True:
            block = f.read(_BLOCK)
            if not block or b"\0" in block:
                break
            *whole, pending = (pending + block).split(b"\n")
            for line in whole:
                number += 1
                yield number, line
        if pending and not block:
            yield number + 1, pending


def search_python(root: str, params: GrepParams, limit: int) -> tuple[list[Match], bool]:
    """Up to `limit` matches, and whether there were more."""
    flags = re.IGNORECASE if params.case_insensitive else 0
    try:
        regex = re.compile(params.pattern, flags)
    except re.error as exc:
        raise ToolError(f"bad regex {params.pattern!r}: {exc}") from None
    include = matcher(params.include) if params.include is not None else None
    opened = _fs.open_path(root, params.path)
    found: list[Match] = []

    def search(fd: int, relpath: str) -> bool:
        for number, line in _lines(fd):
            text = _line_text(line)
            if regex.search(text):
                if len(found) == limit:
                    return True
                found.append(Match(relpath, number, text))
        return False

    try:
        if stat.S_ISREG(opened.stat.st_mode):
            return found, search(os.dup(opened.fd), opened.relpath)
        if not stat.S_ISDIR(opened.stat.st_mode):
            raise ToolError(f"{params.path} is not a file or a directory")
        base = "" if opened.relpath == "." else opened.relpath + "/"
        for entry in _fs.tree(opened.fd, opened.relpath, _fs.read_ignore_chain(root, opened.relpath)):
            # ripgrep does not follow symlinks while it walks; neither does this.
            if entry.kind != "file" or (include is not None and not include.match_file(entry.relpath[len(base) :])):
                continue
            try:
                fd = os.open(entry.name, _fs.OPEN_ANY, dir_fd=entry.dir_fd)
            except OSError:
                continue
            if search(fd, entry.relpath):
                return found, True
        return found, False
    finally:
        os.close(opened.fd)


def _open_dir(root: str, path: str) -> _fs.Opened | None:
    """The directory to search, open; None for a single file."""
    opened = _fs.open_path(root, path)
    if stat.S_ISDIR(opened.stat.st_mode):
        return opened
    os.close(opened.fd)
    if not stat.S_ISREG(opened.stat.st_mode):
        raise ToolError(f"{path} is not a file or a directory")
    return None


def _rg_text(value: dict[str, Any]) -> bytes:
    if "text" in value:
        return str(value["text"]).encode("utf-8")
    return base64.b64decode(value.get("bytes", ""))


async def search_rg(rg: str, root: str, params: GrepParams, limit: int) -> tuple[list[Match], bool]:
    """As search_python, by ripgrep at `rg`, for a directory (one file is searched by Python)."""
    opened = await _threads.run_sync(_open_dir, root, params.path)
    if opened is None:
        return await _threads.run_sync(search_python, root, params, limit, abandon_on_cancel=True)
    try:
        return await _rg_in(rg, opened, params, limit)
    finally:
        os.close(opened.fd)


async def _rg_in(rg: str, opened: _fs.Opened, params: GrepParams, limit: int) -> tuple[list[Match], bool]:
    argv = [rg, "--json", "--no-config", "--sort", "path", "--hidden", "--glob", "!.git"]
    # The .gitignore files the Python search honours, and only those kinds.
    argv += ["--no-require-git", "--no-ignore-global", "--no-ignore-exclude", "--no-ignore-dot"]
    if params.case_insensitive:
        argv.append("--ignore-case")
    if params.include is not None:
        matcher(params.include)  # the same refusals as the Python search
        argv += ["--glob", params.include]
    argv += ["--regexp", params.pattern]
    # ripgrep starts in the directory the confined walk opened, by its descriptor
    # (the child's own /proc/self/fd names it): a directory swapped for a symlink
    # since cannot send it elsewhere, and it follows no symlink below.
    cwd = f"/proc/self/fd/{opened.fd}"
    base = "" if opened.relpath == "." else opened.relpath + "/"
    found: list[Match] = []
    more = False
    errors = bytearray()

    async def read_errors(stream: trio.abc.ReceiveStream) -> None:
        async for chunk in stream:
            errors.extend(chunk[: max(0, _RG_STDERR - len(errors))])

    async def read_matches(stream: trio.abc.ReceiveStream) -> None:
        nonlocal more
        buffer = bytearray()
        skipping = False
        async for chunk in stream:
            buffer.extend(chunk)
            while (end := buffer.find(b"\n")) >= 0:
                line = bytes(buffer[:end])
                del buffer[: end + 1]
                if skipping:
                    skipping = False
                    continue
                record = json.loads(line)
                if record.get("type") != "match":
                    continue
                if len(found) == limit:
                    more = True
                    return
                data = record["data"]
                path = base + _rg_text(data["path"]).decode("utf-8", errors="replace").removeprefix("./")
                found.append(Match(path, int(data["line_number"]), _line_text(_rg_text(data["lines"]))))
            if len(buffer) > _MAX_RG_LINE:
                buffer.clear()
                skipping = True

    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            partial(
                trio.run_process,
                argv,
                cwd=cwd,
                pass_fds=(opened.fd,),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                check=False,
            )
        )
        assert process.stdout is not None and process.stderr is not None
        nursery.start_soon(read_errors, process.stderr)
        await read_matches(process.stdout)
        if more:
            nursery.cancel_scope.cancel()
    # 0: matches, 1: none, 2: an error (a bad regex; or an unreadable file, beside matches).
    if process.returncode == 2 and not found and not more:
        message = errors.decode("utf-8", errors="replace").strip()
        raise ToolError(f"grep failed: {message}" if message else "grep failed")
    return found, more


def format_matches(found: list[Match], more: bool, limits: ToolLimits) -> ToolOutput:
    if not found:
        return ToolOutput("no matches", "0 matches")
    rows: list[str] = []
    size = 0
    for match in found:
        text = match.text
        if len(text) > limits.max_line_chars:
            text = text[: limits.max_line_chars] + f" [line cut at {limits.max_line_chars} characters]"
        row = f"{match.path}:{match.line}:{text}"
        if rows and size + len(row) + 1 > limits.max_output_chars:
            more = True
            break
        rows.append(row)
        size += len(row) + 1
    files = len({match.path for match in found[: len(rows)]})
    out = "\n".join(rows)
    if more:
        out += f"\n[{len(rows)} matches shown, more not: narrow the pattern, the path or include]"
    return ToolOutput(out, f"{len(rows)} matches in {files} files" + (" (capped)" if more else ""))


async def _run(ctx: ToolContext, params: GrepParams) -> ToolOutput:
    rg = shutil.which("rg")
    if rg is not None:
        found, more = await search_rg(rg, ctx.root, params, ctx.limits.max_entries)
    else:
        found, more = await _threads.run_sync(
            search_python, ctx.root, params, ctx.limits.max_entries, abandon_on_cancel=True
        )
    return format_matches(found, more, ctx.limits)


GREP = ToolSpec(
    name="grep",
    description=(
        "Search the files of the workspace for a regular expression, line by line. Each match is "
        "`path:line:text`, files in path order. Files that .gitignore excludes, .git and binary files are skipped."
    ),
    params=GrepParams,
    kind="read",
    run=_run,
    describe=lambda p: f"grep {p.pattern}" + (f" in {p.path}" if p.path != "." else ""),
)
