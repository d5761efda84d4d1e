"""The agent side of a run: the coordinator and the session agent's loop."""

from ._coordinator import DEFAULT_MAX_STEPS, Coordinator, SessionAgent
from ._prompt import system_prompt

__all__ = ["DEFAULT_MAX_STEPS", "Coordinator", "SessionAgent", "system_prompt"]
