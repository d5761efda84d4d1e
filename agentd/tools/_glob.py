"""`glob`: the files whose paths match a pattern, .gitignore honoured."""

from __future__ import annotations

import os
import stat

import attrs
import pathspec

from . import _fs, _threads
from ._base import ToolContext, ToolError, ToolLimits, ToolOutput, ToolSpec

__all__ = ["GLOB", "GlobParams", "matcher"]


@attrs.frozen
class GlobParams:
    pattern: str = attrs.field(
        metadata={
            "description": (
                "A glob, as .gitignore writes them: `*.py` (a name at any depth), `src/**/*.ts`, `docs/*.md` "
                "(a pattern with a `/` is relative to `path`)."
            )
        }
    )
    path: str = attrs.field(
        default=".", metadata={"description": "The directory to search in, relative to the workspace root."}
    )


def matcher(pattern: str) -> pathspec.GitIgnoreSpec:
    """The one reading of a glob, for glob's pattern and grep's include."""
    if not pattern.strip():
        raise ToolError("the pattern is empty")
    if pattern.startswith("!"):
        raise ToolError(f"a pattern cannot start with '!' (a .gitignore negation): {pattern}")
    return pathspec.GitIgnoreSpec.from_lines([pattern])


def _glob(root: str, params: GlobParams, limits: ToolLimits) -> ToolOutput:
    spec = matcher(params.pattern)
    opened = _fs.open_path(root, params.path)
    try:
        if not stat.S_ISDIR(opened.stat.st_mode):
            raise ToolError(f"{params.path} is not a directory")
        base = "" if opened.relpath == "." else opened.relpath + "/"
        found: list[str] = []
        capped = False
        for entry in _fs.tree(opened.fd, opened.relpath, _fs.read_ignore_chain(root, opened.relpath)):
            if entry.kind in ("dir", "other") or not spec.match_file(entry.relpath[len(base) :]):
                continue
            if len(found) == limits.max_entries:
                capped = True
                break
            found.append(entry.relpath)
    finally:
        os.close(opened.fd)
    if not found:
        return ToolOutput(f"no files match {params.pattern} in {opened.relpath}", "0 files")
    out = "\n".join(found)
    if capped:
        out += f"\n[capped at {limits.max_entries} files: narrow the pattern or the path]"
    return ToolOutput(out, f"{len(found)} files" + (" (capped)" if capped else ""))


async def _run(ctx: ToolContext, params: GlobParams) -> ToolOutput:
    return await _threads.run_sync(_glob, ctx.root, params, ctx.limits, abandon_on_cancel=True)


GLOB = ToolSpec(
    name="glob",
    description=(
        "Find files of the workspace by a path pattern. Paths are relative to the workspace root, sorted "
        "by path; files that .gitignore excludes and .git are left out."
    ),
    params=GlobParams,
    kind="read",
    run=_run,
    describe=lambda p: f"glob {p.pattern}" + (f" in {p.path}" if p.path != "." else ""),
)
