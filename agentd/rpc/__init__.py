"""MessagePack-RPC on an unframed byte stream, with no I/O (see `_codec`).

Kept free of attrs and cattrs so that `agentctl` can import it cheaply.
"""

from ._codec import (
    CLIENT_MAX_MESSAGE_SIZE,
    DEFAULT_MAX_MESSAGE_SIZE,
    MAX_MSGID,
    Message,
    Notification,
    ProtocolError,
    Request,
    Response,
    RpcCodec,
    encode_notification,
    encode_request,
    encode_response,
)
from ._errors import ErrorCode, RpcError

__all__ = [
    "CLIENT_MAX_MESSAGE_SIZE",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "MAX_MSGID",
    "ErrorCode",
    "Message",
    "Notification",
    "ProtocolError",
    "Request",
    "Response",
    "RpcCodec",
    "RpcError",
    "encode_notification",
    "encode_request",
    "encode_response",
]
