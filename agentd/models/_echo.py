"""`echo`: an offline model that streams the prompt back word by word."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import trio

from ._base import Finish, ModelRequest, StreamPart, TextDelta, Usage

__all__ = ["EchoModel"]

_WORD = re.compile(r"\s*\S+|\s+")


class EchoModel:
    name = "echo"
    uses_history = False

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamPart]:
        words = _WORD.findall(request.prompt)
        for word in words:
            # A checkpoint per word keeps a long echo cancellable.
            await trio.lowlevel.checkpoint()
            yield TextDelta(word)
        yield Finish("stop", Usage(prompt_tokens=len(words), completion_tokens=len(words)))
