"""Model names to models: the one place a run's model is resolved."""

from __future__ import annotations

from ._base import Model, UnknownModelError
from ._echo import EchoModel
from ._scripted import ScriptedModel

__all__ = ["DEFAULT_MODEL", "ModelRegistry"]

DEFAULT_MODEL = "echo"


class ModelRegistry:
    def __init__(self, models: list[Model] | None = None, default: str = DEFAULT_MODEL) -> None:
        self._models: dict[str, Model] = {}
        builtin: list[Model] = [EchoModel(), ScriptedModel()]
        for model in models if models is not None else builtin:
            self._models[model.name] = model
        self.default = default

    def names(self) -> list[str]:
        return sorted(self._models)

    def resolve(self, name: str | None) -> Model:
        key = name or self.default
        model = self._models.get(key)
        if model is None:
            raise UnknownModelError(f"unknown model {key!r} (available: {', '.join(self.names())})")
        return model
