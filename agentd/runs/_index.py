"""Every run the daemon is still running, by run_id: what `run.wait` and `agent.send` consult."""

from __future__ import annotations

from ._run import Run

__all__ = ["RunIndex"]


class RunIndex:
    def __init__(self) -> None:
        self._live: dict[str, Run] = {}

    def __len__(self) -> int:
        return len(self._live)

    def unfinished(self) -> int:
        """Runs accepted and without a RunComplete (one whose record failed stays listed, finished)."""
        return sum(1 for run in self._live.values() if run.complete is None)

    def add(self, run: Run) -> None:
        self._live[run.id] = run

    def get(self, run_id: str) -> Run | None:
        return self._live.get(run_id)

    def forget(self, run: Run) -> None:
        """A finished run is answered from the store from now on."""
        if self._live.get(run.id) is run:
            del self._live[run.id]
