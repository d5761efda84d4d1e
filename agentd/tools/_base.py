"""What a tool is, what it is given, and what it gives back.

A tool is a `ToolSpec`: its name, its description, an attrs class for its
parameters (the JSON Schema the model sees is generated from that class, in
`_schema`), its kind, and an async function that runs it. A tool refuses or
fails by raising `ToolError`: its message is the result the model sees, and
the run goes on. Anything else a tool raises is a bug, reported to the model
as an internal tool error, never the run's end.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal, Protocol

import attrs

__all__ = ["Changes", "ToolContext", "ToolError", "ToolKind", "ToolLimits", "ToolOutput", "ToolSpec"]


class ToolError(Exception):
    """A tool refused or failed; the message, for the model, names what was wrong."""


@attrs.frozen
class ToolOutput:
    # What the model is told.
    output: str
    # One short line for people ("120 lines", "exit 0", "3 matches").
    summary: str


# "read": changes nothing, so calls of one step run concurrently, and no
# permission is asked. "edit": changes files in the workspace, recorded for
# undo. "execute": runs a program; may do anything the user can.
ToolKind = Literal["read", "edit", "execute"]


class Changes(Protocol):
    """Where a run's file changes are recorded, so they can be listed and undone.

    Paths are relative to the workspace root, with "/" separators.
    """

    async def before_write(self, path: str) -> None:
        """Called before each write to `path`; the first call of a run keeps its content (or absence)."""
        ...

    async def after_write(self, path: str) -> None:
        """Called after each write to `path` (also a failed one): the content now there is the run's."""
        ...


@attrs.frozen
class ToolLimits:
    # view: bytes of a file read at most, and lines shown by default.
    view_max_bytes: int = 256 * 1024
    view_default_lines: int = 2000
    # Characters of one line shown before it is cut.
    max_line_chars: int = 2000
    # ls / glob / grep: entries or matches returned at most.
    max_entries: int = 1000
    ls_default_depth: int = 3
    # Characters of any tool's output at most (bash: of stdout and stderr each).
    max_output_chars: int = 30_000
    # bash: seconds before the command's process group is killed.
    bash_default_timeout: float = 120.0
    bash_max_timeout: float = 600.0
    # bash: seconds between SIGTERM and SIGKILL when its process group is killed.
    bash_kill_grace: float = 1.0
    # edit: bytes of a file it reads and rewrites at most.
    edit_max_bytes: int = 10 * 1024 * 1024


@attrs.frozen
class ToolContext:
    # The workspace's root directory, as the workspace resolved it (a real path).
    root: str
    changes: Changes
    limits: ToolLimits = ToolLimits()
    # bash's environment: the daemon's, less every variable holding a provider's
    # key (`Config.key_variables`). None: the daemon's own, for tests of tools alone.
    environment: Mapping[str, str] | None = None
    # Values no result may carry, with what to show instead (`Config.tool_secrets`).
    secrets: Mapping[str, str] = attrs.field(factory=dict)


@attrs.frozen
class ToolSpec:
    name: str
    description: str
    # An attrs class: the model's arguments are structured into it, and the
    # JSON Schema it is shown is made from it (field metadata "description").
    params: type
    kind: ToolKind
    run: Callable[[ToolContext, Any], Awaitable[ToolOutput]]
    # One line saying what a call does: "view README.md", "bash: git status".
    describe: Callable[[Any], str]
    # What permission rules match, besides the tool's name: bash's command
    # (a rule "bash:git status" allows commands that start with it); None for others.
    subject: Callable[[Any], str | None] = lambda _params: None
    # A tool from elsewhere (an MCP server) brings its JSON Schema: its arguments
    # are then the JSON object the model sent, as a dict, and `params` is dict.
    schema: Mapping[str, Any] | None = None
    # Where the tool comes from allows every call of it without asking (an MCP server's `allow`).
    preallowed: bool = False
