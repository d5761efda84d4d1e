"""`scripted`: a model whose prompt is its script, for tests and integrations.

The prompt is a JSON object: `{"chunks": [str...], "delay_ms": int, "hang":
bool, "error": str|null, "stamp": bool, "repeat": int}` scripts one answer:
wait `delay_ms` before each chunk and stream it; then hang until cancelled, or
fail with `error`, or finish. With `stamp`, each chunk is sent as
`<CLOCK_MONOTONIC in ns>|<chunk>`, taken as the model yields it, so a client
on the same machine can measure delivery latency.

With `"steps": [step...]`, each step is one model turn and takes the same keys
plus `tool_calls: [{"name", "arguments", "id"?}]`: on its k-th call within a
run (counted from the run's user message) the model plays step k; a step with
tool calls streams its chunks, then asks for those calls. After the last step
it finishes without text. A script has either `steps` or the one answer's
keys at its top level, not both.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import attrs
import cattrs
import trio

from agentd.protocol import converter

from ._base import Finish, ModelError, ModelRequest, StreamPart, TextDelta, ToolCall

__all__ = ["Script", "ScriptedModel", "parse_script"]

_MAX_REPEAT = 1_000_000


@attrs.frozen
class ScriptedToolCall:
    name: str
    # A JSON object (sent as its JSON text) or a string sent as it is, valid JSON or not.
    arguments: dict[str, Any] | str = attrs.Factory(dict)
    id: str | None = None


@attrs.frozen
class Step:
    chunks: list[str] = attrs.Factory(list)
    delay_ms: int = 0
    hang: bool = False
    error: str | None = None
    stamp: bool = False
    # Each chunk this many times in a row, after its one delay: a burst of
    # deltas from a short prompt.
    repeat: int = 1
    tool_calls: list[ScriptedToolCall] = attrs.Factory(list)


@attrs.frozen
class Script(Step):
    steps: list[Step] | None = None


def _structure_arguments(value: object, _type: object) -> dict[str, Any] | str:
    if isinstance(value, (dict, str)):
        return value
    raise TypeError(f"expected an object or a string, got {type(value).__name__}")


converter.register_structure_hook(dict[str, Any] | str, _structure_arguments)


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
    if script.steps is not None and attrs.evolve(script, steps=None) != Script():
        raise ModelError("scripted model: bad script: with `steps`, put chunks, delay_ms and the rest in each step")
    for where, step in [("script", script), *((f"script.steps[{i}]", s) for i, s in enumerate(script.steps or ()))]:
        if step.delay_ms < 0:
            raise ModelError(f"scripted model: bad script: {where}.delay_ms must be >= 0")
        if not 1 <= step.repeat <= _MAX_REPEAT:
            raise ModelError(f"scripted model: bad script: {where}.repeat must be 1 to {_MAX_REPEAT}")
    return script


class ScriptedModel:
    name = "scripted"
    # It reads only its own run's turns, to count its steps.
    uses_history = False

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamPart]:
        script = parse_script(request.prompt)
        if script.steps is None:
            step: Step = script
        elif request.step <= len(script.steps):
            step = script.steps[request.step - 1]
        else:
            await trio.lowlevel.checkpoint()
            yield Finish("stop")
            return
        for chunk in step.chunks:
            if step.delay_ms:
                await trio.sleep(step.delay_ms / 1000)
            else:
                await trio.lowlevel.checkpoint()
            for i in range(step.repeat):
                if i:
                    await trio.lowlevel.checkpoint()
                yield TextDelta(f"{time.monotonic_ns()}|{chunk}" if step.stamp else chunk)
        if step.hang:
            await trio.sleep_forever()
        if step.error is not None:
            raise ModelError(step.error)
        if step.tool_calls:
            for i, call in enumerate(step.tool_calls):
                arguments = call.arguments if isinstance(call.arguments, str) else json.dumps(call.arguments)
                yield ToolCall(call.id or f"call_{request.step}_{i + 1}", call.name, arguments)
            yield Finish("tool_calls")
            return
        yield Finish("stop")
