"""MessagePack-RPC on an unframed byte stream, with no I/O.

`RpcConnection` (`_connection`) is one end of a conversation: ids, pending
calls, routing, the in-flight and size limits; `RpcCodec` (`_codec`) frames and
decodes the stream under it. Kept free of attrs, cattrs and typing so that
`agentctl` can import it cheaply.
"""

from ._brief import BRIEF_LENGTH, brief, clip, clip_middle
from ._codec import (
    CLIENT_MAX_MESSAGE_SIZE,
    DEFAULT_MAX_MESSAGE_SIZE,
    MAX_DEPTH,
    MAX_MSGID,
    MAX_VALUES,
    Message,
    Notification,
    ProtocolError,
    Refusal,
    Request,
    Response,
    RpcCodec,
    encode_notification,
    encode_request,
    encode_response,
)
from ._connection import NEED_DATA, PAUSED, TAKEN, Call, InputBudget, InputBudgetExceeded, Reply, RpcConnection
from ._errors import ErrorCode, RpcError

__all__ = [
    "BRIEF_LENGTH",
    "CLIENT_MAX_MESSAGE_SIZE",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "MAX_DEPTH",
    "MAX_MSGID",
    "MAX_VALUES",
    "NEED_DATA",
    "PAUSED",
    "Call",
    "ErrorCode",
    "InputBudget",
    "InputBudgetExceeded",
    "Message",
    "Notification",
    "ProtocolError",
    "Refusal",
    "Reply",
    "Request",
    "Response",
    "RpcCodec",
    "RpcConnection",
    "RpcError",
    "TAKEN",
    "brief",
    "clip",
    "clip_middle",
    "encode_notification",
    "encode_request",
    "encode_response",
]
