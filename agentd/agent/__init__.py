"""The agent side of a run: the coordinator and the session agent's loop."""

from ._coordinator import Coordinator, SessionAgent
from ._prompt import system_prompt

__all__ = ["Coordinator", "SessionAgent", "system_prompt"]
