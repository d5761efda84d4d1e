"""agentd: a per-user daemon that hosts coding-agent workspaces, sessions and runs.

This module stays import-light: `agentctl` imports `agentd.paths` and `agentd.rpc`
at start-up and must not pay for the daemon.
"""

__version__ = "0.1.0"
PROTOCOL_VERSION = 1
