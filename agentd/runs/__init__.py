"""Runs: their lifecycle, their dispatch, and the one place their RunComplete is published."""

from ._dispatcher import Closing, Dispatcher, RunExecutor, describe_error
from ._index import RunIndex
from ._run import Run, RunState
from ._terminal import RunTerminal

__all__ = [
    "Closing",
    "Dispatcher",
    "Run",
    "RunExecutor",
    "RunIndex",
    "RunState",
    "RunTerminal",
    "describe_error",
]
