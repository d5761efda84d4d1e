"""Errors both clients raise."""

from agentd.rpc import ErrorCode, RpcError

__all__ = ["ConnectionLost", "ErrorCode", "RpcError"]


class ConnectionLost(Exception):
    """The daemon's connection ended before the answer came."""
