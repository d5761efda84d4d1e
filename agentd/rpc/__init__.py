"""MessagePack-RPC on an unframed byte stream, with no I/O (see `_codec`).

Kept free of attrs and cattrs so that `agentctl` can import it cheaply.
"""

from ._errors import ErrorCode, RpcError
from ._codec import (
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

__all__ = [
    "ErrorCode",
    "RpcError",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "MAX_MSGID",
    "Message",
    "Notification",
    "ProtocolError",
    "Request",
    "Response",
    "RpcCodec",
    "encode_notification",
    "encode_request",
    "encode_response",
]
