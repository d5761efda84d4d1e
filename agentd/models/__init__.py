"""Models a run can use, the interface a provider implements, and their configuration."""

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
    ToolResult,
    Turn,
    UnknownModelError,
    Usage,
)
from ._config import (
    BUILTIN_MODELS,
    Config,
    ConfigError,
    ConfigProblem,
    ModelConfig,
    ProviderConfig,
    ResolvedModel,
)
from ._config_source import ConfigFile, config_path, load_config
from ._registry import DEFAULT_MODEL, ModelRegistry

__all__ = [
    "BUILTIN_MODELS",
    "DEFAULT_MODEL",
    "Config",
    "ConfigError",
    "ConfigFile",
    "ConfigProblem",
    "Finish",
    "Model",
    "ModelConfig",
    "ModelError",
    "ModelRegistry",
    "ModelRequest",
    "ProviderConfig",
    "ResolvedModel",
    "Retrying",
    "StreamPart",
    "TextDelta",
    "ToolCall",
    "ToolDefinition",
    "ToolResult",
    "Turn",
    "UnknownModelError",
    "Usage",
    "config_path",
    "load_config",
]
