"""`write`: a file's whole content, created or replaced."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import attrs
import trio

from . import _fs, _threads
from ._base import ToolContext, ToolOutput, ToolSpec

__all__ = ["WRITE", "WriteParams", "prepare_recorded", "write_recorded"]

T = TypeVar("T")


@attrs.frozen
class WriteParams:
    path: str = attrs.field(
        metadata={"description": "The file, relative to the workspace root; missing parent directories are made."}
    )
    content: str = attrs.field(metadata={"description": "The file's whole new content."})


async def write_recorded(
    ctx: ToolContext, target: _fs.Target, data: bytes, mode: int | None, *, before_recorded: bool = False
) -> None:
    """Replace the target's content, the change recorded before (unless `before_recorded`) and after."""
    if not before_recorded:
        await ctx.changes.before_write(target.relpath)
    try:
        # Not abandoned on cancel: the recording must see the write done or not done.
        await _threads.run_sync(_fs.replace_file, target, data, mode)
    finally:
        with trio.CancelScope(shield=True):
            await ctx.changes.after_write(target.relpath)


async def prepare_recorded(ctx: ToolContext, prepare: Callable[[bool], T]) -> tuple[T, bool]:
    """`prepare(create_dirs)` on a thread, for a write that may have to make its directories.

    They are made only once the recording has seen them missing, so undoing
    the write removes them too; then the second value is True: the write's
    before is recorded already.
    """
    try:
        return await _threads.run_sync(prepare, False), False
    except _fs.MissingDirectory as missing:
        await ctx.changes.before_write(missing.relpath)
        return await _threads.run_sync(prepare, True), True


def _prepare(root: str, path: str, create_dirs: bool) -> tuple[_fs.Target, int | None]:
    target = _fs.resolve_target(root, path, create_dirs=create_dirs)
    try:
        return target, _fs.existing_mode(target)
    except BaseException:
        target.close()
        raise


async def _run(ctx: ToolContext, params: WriteParams) -> ToolOutput:
    (target, mode), recorded = await prepare_recorded(
        ctx, lambda create_dirs: _prepare(ctx.root, params.path, create_dirs)
    )
    try:
        data = params.content.encode("utf-8")
        await write_recorded(ctx, target, data, mode, before_recorded=recorded)
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
