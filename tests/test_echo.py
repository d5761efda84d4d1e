"""The `echo` model: the prompt back, in deltas the size a real model streams."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from support import Daemon, run_agentctl

from agentd.models import Finish, ModelRequest, TextDelta, Turn
from agentd.models._echo import CHUNK_MAX, CHUNK_TARGET, EchoModel, echo_chunks

# Generous: the run takes a few seconds; one delta per word took 7 minutes.
ECHO_14_MIB_BOUND = 60.0


async def echo(prompt: str) -> tuple[list[str], Finish]:
    parts = [part async for part in EchoModel().stream(ModelRequest("", (Turn("user", prompt),)))]
    *deltas, finish = parts
    assert all(isinstance(d, TextDelta) for d in deltas) and isinstance(finish, Finish)
    return [d.text for d in deltas if isinstance(d, TextDelta)], finish


@pytest.mark.parametrize(
    "prompt",
    ["", "a", "hello world", "  leading space", "x" * 200, "a b  c   " * 30, "word " * 100 + "  \n", "é" * 70 + " ok"],
)
async def test_the_deltas_joined_are_the_prompt_and_each_is_at_most_the_max(prompt: str) -> None:
    deltas, finish = await echo(prompt)
    assert "".join(deltas) == prompt
    assert all(0 < len(d) <= CHUNK_MAX for d in deltas)
    assert finish.reason == "stop"
    assert finish.usage.prompt_tokens == finish.usage.completion_tokens == len(prompt.split())


async def test_a_delta_holds_a_few_words_and_ends_where_a_word_ends() -> None:
    prompt = " ".join(f"w{i}" for i in range(1000))
    deltas = list(echo_chunks(prompt))
    assert all(CHUNK_TARGET <= len(d) <= CHUNK_MAX for d in deltas[:-1])
    # Every delta after the first starts with the space before its first word.
    assert all(d.startswith(" w") for d in deltas[1:])
    assert len(deltas) < len(prompt.split()) / 4


async def test_a_word_longer_than_the_max_is_cut() -> None:
    assert list(echo_chunks("y" * (2 * CHUNK_MAX + 1))) == ["y" * CHUNK_MAX, "y" * CHUNK_MAX, "y"]


async def test_run_echoes_a_14_mib_prompt_within_seconds(daemon: Daemon, project: Path, env: dict[str, str]) -> None:
    line = "lorem ipsum dolor sit amet, consectetur adipiscing elit.\n"
    prompt = (line * (14 * 2**20 // len(line) + 1))[: 14 * 2**20]
    with trio.fail_after(ECHO_14_MIB_BOUND):
        result = await run_agentctl(
            "run", "--model", "echo", env=env, cwd=project, stdin=prompt.encode(), timeout=ECHO_14_MIB_BOUND
        )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.decode().rstrip("\n") == prompt.rstrip("\n")
