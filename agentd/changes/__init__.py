"""Every file change a run's tools make, kept so it can be listed and undone."""

from ._diff import Action
from ._record import ChangeLimits, RunChanges
from ._requests import ChangeRequests

__all__ = ["Action", "ChangeLimits", "ChangeRequests", "RunChanges"]
