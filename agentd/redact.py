"""Taking secrets out of text that leaves the daemon: one rule for provider errors and tool results."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["redact"]


def redact(text: str, secrets: Mapping[str, str]) -> str:
    """`text` with each secret value replaced by its label (`{"sk-...": "[API key]"}`)."""
    # Longest first: a header value may hold the key ("Bearer sk-..."), and should go whole.
    for value in sorted(secrets, key=len, reverse=True):
        if value in text:
            text = text.replace(value, secrets[value])
    return text
