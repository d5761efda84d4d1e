"""What ACP is told about one of agentd's tool calls: its kind, title, locations and content. No I/O.

agentd's tools are known here by name and by their arguments (docs/protocol.md
§12); a tool this table does not know is `other`, with no locations, so a
daemon newer than its agentctl still shows its calls.
"""

from __future__ import annotations

import json
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


__all__ = [
    "call_content",
    "decode_arguments",
    "locations",
    "status",
    "title",
    "tool_kind",
]

# ACP's ToolKind by agentd tool name. agentd's own kinds (read/edit/execute)
# are about permissions; ACP tells searching apart from reading, for its icons.
_KINDS = {
    "view": "read",
    "ls": "read",
    "glob": "search",
    "grep": "search",
    "write": "edit",
    "edit": "edit",
    "bash": "execute",
}


def tool_kind(name: Any) -> str:
    return _KINDS.get(name, "other") if isinstance(name, str) else "other"


def decode_arguments(arguments: Any) -> dict[str, Any] | None:
    """A tool_call part's arguments (JSON text as the model gave it) as a map, or None if they are not one."""
    if isinstance(arguments, dict):
        return arguments
    if not isinstance(arguments, str):
        return None
    try:
        value = json.loads(arguments)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def title(name: str, args: dict[str, Any] | None) -> str:
    """The line agentd's tool.started would say ("view README.md", "bash: git status"), for a stored call."""
    args = args or {}
    if name == "bash" and isinstance(args.get("command"), str):
        return f"bash: {args['command']}"
    if name in ("glob", "grep") and isinstance(args.get("pattern"), str):
        where = args.get("path")
        return f"{name} {args['pattern']}" + (f" in {where}" if isinstance(where, str) and where != "." else "")
    if isinstance(args.get("path"), str):
        return f"{name} {args['path']}"
    if name == "ls":
        return "ls ."
    return name


def _absolute(root: str, path: str) -> str:
    # ACP wants absolute paths; agentd's are relative to the workspace root.
    return os.path.normpath(os.path.join(root, path))


def locations(name: str, args: dict[str, Any] | None, root: str) -> list[dict[str, Any]]:
    """The files (or directories) a call reads or changes, absolute, for an editor's follow-along."""
    if args is None or tool_kind(name) not in ("read", "search", "edit"):
        return []
    path = args.get("path", ".")
    if not isinstance(path, str):
        return []
    location: dict[str, Any] = {"path": _absolute(root, path)}
    offset = args.get("offset")
    if name == "view" and isinstance(offset, int) and not isinstance(offset, bool) and offset >= 1:
        location["line"] = offset
    return [location]


def status(tool_status: Any) -> str:
    """ACP's ToolCallStatus for agentd's: only `ok` completed; error, denied, timeout and cancelled failed."""
    return "completed" if tool_status == "ok" else "failed"


def _diff(name: str, args: dict[str, Any] | None, root: str) -> dict[str, Any] | None:
    if args is None or not isinstance(args.get("path"), str):
        return None
    path = _absolute(root, args["path"])
    if name == "edit":
        old, new = args.get("old_string"), args.get("new_string")
        if isinstance(old, str) and isinstance(new, str):
            # An empty old_string creates the file: a new file's diff has no old text.
            return {"type": "diff", "path": path, "oldText": old or None, "newText": new}
    if name == "write" and isinstance(args.get("content"), str):
        return {"type": "diff", "path": path, "oldText": None, "newText": args["content"]}
    return None


def call_content(
    name: str, args: dict[str, Any] | None, tool_status: Any, text: str, root: str
) -> list[dict[str, Any]]:
    """A finished call's content: the diff of an edit that was made, and its text (the output, or its summary)."""
    content: list[dict[str, Any]] = []
    diff = _diff(name, args, root) if tool_status == "ok" else None
    if diff is not None:
        content.append(diff)
    if text:
        content.append({"type": "content", "content": {"type": "text", "text": text}})
    return content
