"""The system prompt: who the model is, where it works, and the workspace's own instructions."""

from __future__ import annotations

import datetime
import logging
import os
import platform
import stat

import trio

__all__ = ["INSTRUCTION_FILES", "MAX_INSTRUCTIONS_BYTES", "read_instructions", "system_prompt"]

log = logging.getLogger(__name__)

# The first of these at the workspace root is the project's instructions to agents.
INSTRUCTION_FILES = ("AGENTS.md", "CLAUDE.md")
# A bigger file is cut here, and the model told so: it is read into every model turn.
MAX_INSTRUCTIONS_BYTES = 64 * 1024


def _read_instructions_sync(root: str) -> tuple[str, str] | None:
    for name in INSTRUCTION_FILES:
        try:
            # O_NOFOLLOW: a link could point anywhere on the machine, and this
            # text goes to a model provider; the project's own file only.
            fd = os.open(os.path.join(root, name), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("workspace %s: %s not read: %s", root, name, exc)
            continue
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                continue
            data = os.read(fd, MAX_INSTRUCTIONS_BYTES + 1)
        finally:
            os.close(fd)
        text = data[:MAX_INSTRUCTIONS_BYTES].decode("utf-8", errors="replace")
        if len(data) > MAX_INSTRUCTIONS_BYTES:
            text += f"\n[{name} is longer than {MAX_INSTRUCTIONS_BYTES} bytes; the rest was left out]"
        return name, text
    return None


async def read_instructions(root: str) -> tuple[str, str] | None:
    """(file name, text) of the workspace's instructions, or None; read afresh for each run."""
    return await trio.to_thread.run_sync(_read_instructions_sync, root)


def system_prompt(workspace_path: str, instructions: tuple[str, str] | None = None) -> str:
    prompt = (
        "You are a coding agent working in a project directory.\n"
        f"Working directory: {workspace_path}\n"
        f"Date: {datetime.date.today().isoformat()}\n"
        f"OS: {platform.system()} {platform.release()}"
    )
    if instructions is not None:
        name, text = instructions
        prompt += f"\n\nThe project's instructions, from {name}:\n\n{text}"
    return prompt
