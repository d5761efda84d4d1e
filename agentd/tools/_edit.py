"""`edit`: replace an exact string in a file, once or everywhere."""

from __future__ import annotations

import attrs

from . import _fs, _threads
from ._base import ToolContext, ToolError, ToolLimits, ToolOutput, ToolSpec
from ._write import write_recorded

__all__ = ["EDIT", "EditParams"]


@attrs.frozen
class EditParams:
    path: str = attrs.field(metadata={"description": "The file, relative to the workspace root."})
    old_string: str = attrs.field(
        metadata={
            "description": (
                "The exact text to replace, whitespace included; it must occur once unless replace_all. "
                "Empty: create the file with new_string, when it does not exist yet."
            )
        }
    )
    new_string: str = attrs.field(metadata={"description": "The text to put in its place."})
    replace_all: bool = attrs.field(default=False, metadata={"description": "Replace every occurrence."})


def _prepare(root: str, params: EditParams, limits: ToolLimits) -> tuple[_fs.Target, int | None, bytes, int]:
    """The target, its mode, its new content and how many replacements make it."""
    target = _fs.resolve_target(root, params.path, create_dirs=params.old_string == "")
    try:
        mode = _fs.existing_mode(target)
        old = _fs.read_at(target, limits.edit_max_bytes)
        if params.old_string == "":
            if old is not None:
                raise ToolError(
                    f"{target.relpath} exists: an empty old_string creates a file only where there is none "
                    "(use write to replace a whole file)"
                )
            return target, None, params.new_string.encode("utf-8"), 0
        if old is None:
            raise ToolError(f"{params.path} does not exist")
        try:
            text = old.decode("utf-8")
        except UnicodeDecodeError:
            raise ToolError(f"{target.relpath} is not a text file (not UTF-8)") from None
        if params.old_string == params.new_string:
            raise ToolError("old_string and new_string are the same: nothing to change")
        count = text.count(params.old_string)
        if count == 0:
            raise ToolError(f"old_string not found in {target.relpath}")
        if count > 1 and not params.replace_all:
            raise ToolError(
                f"old_string occurs {count} times in {target.relpath}: pass replace_all, "
                "or more context to make it unique"
            )
        new = text.replace(params.old_string, params.new_string)
        return target, mode, new.encode("utf-8"), count
    except BaseException:
        target.close()
        raise


async def _run(ctx: ToolContext, params: EditParams) -> ToolOutput:
    target, mode, data, count = await _threads.run_sync(_prepare, ctx.root, params, ctx.limits)
    try:
        await write_recorded(ctx, target, data, mode)
    finally:
        target.close()
    if count == 0:
        return ToolOutput(f"created {target.relpath} ({len(data)} bytes)", f"created {target.relpath}")
    what = "1 replacement" if count == 1 else f"{count} replacements"
    return ToolOutput(f"edited {target.relpath}: {what}", f"edited {target.relpath} ({what})")


EDIT = ToolSpec(
    name="edit",
    description=(
        "Edit a file of the workspace: replace old_string, exactly as the file has it, with new_string. "
        "old_string must occur once (add surrounding lines to make it unique) unless replace_all is set. "
        "With an empty old_string, create a file that does not exist yet."
    ),
    params=EditParams,
    kind="edit",
    run=_run,
    describe=lambda p: f"edit {p.path}",
)
