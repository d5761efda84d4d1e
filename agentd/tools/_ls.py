"""`ls`: a directory's tree, to a depth, .gitignore honoured."""

from __future__ import annotations

import os
import stat

import attrs

from . import _fs, _threads
from ._base import ToolContext, ToolError, ToolLimits, ToolOutput, ToolSpec

__all__ = ["LS", "LsParams"]


@attrs.frozen
class LsParams:
    path: str = attrs.field(
        default=".", metadata={"description": "The directory, relative to the workspace root (default: the root)."}
    )
    depth: int | None = attrs.field(
        default=None,
        metadata={"description": "Levels to list (default 3; 1: the directory's own entries).", "minimum": 1},
    )


def _ls(root: str, params: LsParams, limits: ToolLimits) -> ToolOutput:
    opened = _fs.open_path(root, params.path)
    try:
        if not stat.S_ISDIR(opened.stat.st_mode):
            raise ToolError(f"{params.path} is not a directory: use view to read a file")
        depth = params.depth if params.depth is not None else limits.ls_default_depth
        ignores = _fs.read_ignore_chain(root, opened.relpath)
        rows: list[str] = []
        capped = False
        unexpanded = False
        for entry in _fs.tree(opened.fd, opened.relpath, ignores, max_depth=depth):
            if len(rows) == limits.max_entries:
                capped = True
                break
            indent = "  " * (entry.depth - 1)
            if entry.kind == "dir":
                rows.append(f"{indent}{entry.name}/")
                unexpanded = unexpanded or entry.depth == depth
            elif entry.kind == "link":
                try:
                    target = os.readlink(entry.name, dir_fd=entry.dir_fd)
                except OSError:
                    target = "?"
                rows.append(f"{indent}{entry.name} -> {target}")
            else:
                rows.append(f"{indent}{entry.name}")
    finally:
        os.close(opened.fd)
    head = f"{opened.relpath}/" if opened.relpath != "." else "./"
    notes = []
    if capped:
        notes.append(f"[listing capped at {limits.max_entries} entries: ls a subdirectory to see more]")
    if unexpanded:
        notes.append(f"[directories at depth {depth} are not expanded: ls them, or pass a larger depth]")
    body = "\n".join(rows) if rows else "(empty)"
    summary = f"{len(rows)} entries" + (" (capped)" if capped else "")
    return ToolOutput("\n".join([head, body, *notes]), summary)


async def _run(ctx: ToolContext, params: LsParams) -> ToolOutput:
    return await _threads.run_sync(_ls, ctx.root, params, ctx.limits, abandon_on_cancel=True)


LS = ToolSpec(
    name="ls",
    description=(
        "List a directory of the workspace as a tree (directories end in `/`, symlinks show their target), "
        "to `depth` levels. Files that .gitignore excludes and .git are left out."
    ),
    params=LsParams,
    kind="read",
    run=_run,
    describe=lambda p: f"ls {p.path}",
)
