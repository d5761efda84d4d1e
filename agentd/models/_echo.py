"""`echo`: an offline model that streams the prompt back in chunks the size a real model's deltas are."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from typing import Final

import trio

from ._base import Finish, ModelRequest, StreamPart, TextDelta, Usage

__all__ = ["EchoModel", "echo_chunks"]

# A delta ends at the first word end past TARGET characters, and is cut at
# MAX within a word that long: a few words per delta, as providers stream.
# One word per delta made a 14 MiB prompt 7 million deltas.
CHUNK_TARGET: Final = 32
CHUNK_MAX: Final = 80
# Deltas yielded per trip through the scheduler. A provider's deltas come a
# network read at a time, several per read; one trip per delta made every
# delta cost a scheduler round and a socket write of its own.
DELTAS_PER_CHECKPOINT: Final = 16

# A word end: a non-space before, a space after (look-behind sees before `pos`).
_WORD_END = re.compile(r"(?<=\S)(?=\s)")


def echo_chunks(text: str) -> Iterator[str]:
    """`text` in pieces of CHUNK_TARGET to CHUNK_MAX characters, cut after a word where one ends in range.

    Each piece but the first starts with the whitespace before its first word;
    the pieces joined are `text`.
    """
    pos, size = 0, len(text)
    while pos < size:
        if size - pos <= CHUNK_MAX:
            yield text[pos:]
            return
        found = _WORD_END.search(text, pos + CHUNK_TARGET, pos + CHUNK_MAX + 1)
        end = found.start() if found is not None else pos + CHUNK_MAX
        yield text[pos:end]
        pos = end


class EchoModel:
    name = "echo"
    uses_history = False

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamPart]:
        words = 0
        in_word = False  # the previous chunk was cut inside a word
        for index, chunk in enumerate(echo_chunks(request.prompt)):
            if index % DELTAS_PER_CHECKPOINT == 0:
                # Keeps a long echo cancellable, and lets the writers run.
                await trio.lowlevel.checkpoint()
            yield TextDelta(chunk)
            words += len(chunk.split()) - (in_word and not chunk[0].isspace())
            in_word = not chunk[-1].isspace()
        yield Finish("stop", Usage(prompt_tokens=words, completion_tokens=words))
