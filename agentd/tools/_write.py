"""`write`: a file's whole content, created or replaced."""

from __future__ import annotations

import attrs
import trio

from . import _fs, _threads
from ._base import ToolContext, ToolOutput, ToolSpec

__all__ = ["WRITE", "WriteParams", "write_recorded"]


@attrs.frozen
class WriteParams:
    path: str = attrs.field(
        metadata={"description": "The file, relative to the workspace root; missing parent directories are made."}
    )
    content: str = attrs.field(metadata={"description": "The file's whole new content."})


async def write_recorded(ctx: ToolContext, target: _fs.Target, data: bytes, mode: int | None) -> None:
    """Replace the target's content, the change recorded before and after."""
    await ctx.changes.before_write(target.relpath)
    try:
        # Not abandoned on cancel: the recording must see the write done or not done.
        await _threads.run_sync(_fs.replace_file, target, data, mode)
    finally:
        with trio.CancelScope(shield=True):
            await ctx.changes.after_write(target.relpath)


def _prepare(root: str, path: str) -> tuple[_fs.Target, int | None]:
    target = _fs.resolve_target(root, path, create_dirs=True)
    try:
        return target, _fs.existing_mode(target)
    except BaseException:
        target.close()
        raise


async def _run(ctx: ToolContext, params: WriteParams) -> ToolOutput:
    target, mode = await _threads.run_sync(_prepare, ctx.root, params.path)
    try:
        data = params.content.encode("utf-8")
        await write_recorded(ctx, target, data, mode)
    finally:
        target.close()
    verb = "created" if mode is None else "overwrote"
    return ToolOutput(f"{verb} {target.relpath} ({len(data)} bytes)", f"{verb} {target.relpath}")


WRITE = ToolSpec(
    name="write",
    description=(
        "Write a file of the workspace: create it, or replace its whole content. To change part of a file, use edit."
    ),
    params=WriteParams,
    kind="edit",
    run=_run,
    describe=lambda p: f"write {p.path}",
)
