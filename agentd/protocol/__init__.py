"""What travels between agentd and its clients: wire types, event names, the converter."""

from . import _events as events
from ._convert import converter, structure_params, unstructure
from ._payloads import EVENT_PAYLOADS
from ._results import *  # noqa: F403
from ._results import __all__ as _results_all
from ._types import *  # noqa: F403
from ._types import __all__ as _types_all

__all__ = ["EVENT_PAYLOADS", "converter", "events", "structure_params", "unstructure", *_types_all, *_results_all]
