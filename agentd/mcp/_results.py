"""An MCP tool's result as the model reads it: text, with images, audio and resources summarized as text.

No I/O. The providers agentd speaks to take text tool results, so what is not
text is described (its kind, type and size, a resource's URI) rather than
dropped: the model knows it was there. `structuredContent` is shown as JSON
when the result has no text of its own.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["result_text"]


def _size(data: str) -> str:
    # base64: about 3 bytes for 4 characters.
    count = len(data) * 3 // 4
    if count >= 1024 * 1024:
        return f"{count / (1024 * 1024):.1f} MiB"
    if count >= 1024:
        return f"{count / 1024:.1f} KiB"
    return f"{count} bytes"


def _block(block: Any) -> str:
    kind = getattr(block, "type", None)
    if kind == "text":
        return str(block.text)
    if kind == "image":
        return f"[image: {block.mime_type}, {_size(block.data)}; not shown to the model]"
    if kind == "audio":
        return f"[audio: {block.mime_type}, {_size(block.data)}; not shown to the model]"
    if kind == "resource":
        resource = block.resource
        mime = f", {resource.mime_type}" if getattr(resource, "mime_type", None) else ""
        if hasattr(resource, "text"):
            return f"[resource {resource.uri}{mime}]\n{resource.text}"
        return f"[resource {resource.uri}{mime}: binary, {_size(resource.blob)}; not shown to the model]"
    if kind == "resource_link":
        described = f" ({block.description})" if getattr(block, "description", None) else ""
        return f"[resource link: {block.name} {block.uri}{described}]"
    return f"[{kind or 'unknown'} content; not shown to the model]"


def result_text(result: Any) -> tuple[str, bool]:
    """(what the model reads, whether the tool reported an error) for a CallToolResult."""
    parts = [_block(block) for block in result.content or ()]
    text = "\n".join(part for part in parts if part)
    structured = getattr(result, "structured_content", None)
    if not text and structured is not None:
        text = json.dumps(structured, ensure_ascii=False, indent=1)
    return text, bool(result.is_error)
