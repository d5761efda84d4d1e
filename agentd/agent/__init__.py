"""The agent side of a run: the coordinator and the session agent."""

from ._coordinator import Coordinator, SessionAgent, system_prompt

__all__ = ["Coordinator", "SessionAgent", "system_prompt"]
