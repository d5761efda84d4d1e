"""agentctl: the agentd client library (`agentctl.client`) and command line (`agentctl.cli`).

Import-light on purpose: `agentctl --version` must not pay for trio.
"""

from agentd import __version__

__all__ = ["__version__"]
