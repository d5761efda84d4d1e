"""Event type names and classes, as the protocol package exports them (the table is `agentd.event_types`)."""

from agentd.event_types import *  # noqa: F403
from agentd.event_types import __all__ as __all__  # noqa: PLE0605
