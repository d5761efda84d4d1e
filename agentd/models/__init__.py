"""Models a run can use, and the interface a provider implements."""

from ._base import (
    Finish,
    Model,
    ModelError,
    ModelRequest,
    Retrying,
    StreamPart,
    TextDelta,
    ToolCall,
    ToolDefinition,
    Turn,
    UnknownModelError,
    Usage,
)
from ._registry import DEFAULT_MODEL, ModelRegistry

__all__ = [
    "DEFAULT_MODEL",
    "Finish",
    "Model",
    "ModelError",
    "ModelRegistry",
    "ModelRequest",
    "Retrying",
    "StreamPart",
    "TextDelta",
    "ToolCall",
    "ToolDefinition",
    "Turn",
    "UnknownModelError",
    "Usage",
]
