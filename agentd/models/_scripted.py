"""`scripted`: a model whose prompt is its script, for tests and integrations.

The prompt is a JSON object `{"chunks": [str...], "delay_ms": int, "hang": bool,
"error": str|null, "stamp": bool, "repeat": int}`: wait `delay_ms` before each chunk and stream
it; then hang until cancelled, or fail with `error`, or finish. With `stamp`,
each chunk is sent as `<CLOCK_MONOTONIC in ns>|<chunk>`, taken as the model
yields it, so a client on the same machine can measure delivery latency.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import attrs
import cattrs
import trio

from agentd.protocol import converter

from ._base import Finish, ModelError, ModelRequest, StreamPart, TextDelta

__all__ = ["Script", "ScriptedModel", "parse_script"]

_MAX_REPEAT = 1_000_000


@attrs.frozen
class Script:
    chunks: list[str] = attrs.Factory(list)
    delay_ms: int = 0
    hang: bool = False
    error: str | None = None
    stamp: bool = False
    # Each chunk this many times in a row, after its one delay: a burst of
    # deltas from a short prompt.
    repeat: int = 1


def parse_script(prompt: str) -> Script:
    try:
        raw = json.loads(prompt)
    except json.JSONDecodeError as exc:
        raise ModelError(f"scripted model: the prompt is not JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ModelError("scripted model: the prompt must be a JSON object")
    try:
        script = converter.structure(raw, Script)
    except Exception as exc:
        detail = "; ".join(cattrs.transform_error(exc, path="script"))
        raise ModelError(f"scripted model: bad script: {detail}") from None
    if script.delay_ms < 0:
        raise ModelError("scripted model: bad script: delay_ms must be >= 0")
    if not 1 <= script.repeat <= _MAX_REPEAT:
        raise ModelError(f"scripted model: bad script: repeat must be 1 to {_MAX_REPEAT}")
    return script


class ScriptedModel:
    name = "scripted"
    uses_history = False

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamPart]:
        script = parse_script(request.prompt)
        for chunk in script.chunks:
            if script.delay_ms:
                await trio.sleep(script.delay_ms / 1000)
            else:
                await trio.lowlevel.checkpoint()
            for i in range(script.repeat):
                if i:
                    await trio.lowlevel.checkpoint()
                yield TextDelta(f"{time.monotonic_ns()}|{chunk}" if script.stamp else chunk)
        if script.hang:
            await trio.sleep_forever()
        if script.error is not None:
            raise ModelError(script.error)
        yield Finish("stop")
