"""Error codes carried in a response's error slot as `[code, message]`."""

from __future__ import annotations

__all__ = ["ErrorCode", "RpcError"]


class ErrorCode:
    """The codes, as plain ints: an IntEnum would import enum into every agentctl start."""

    INTERNAL = 0
    INVALID_PARAMS = 1
    NOT_FOUND = 2
    CONFLICT = 3
    SHUTTING_DOWN = 4
    UNKNOWN_METHOD = 5
    TIMEOUT = 6
    UNAVAILABLE = 7


_NAMES = {code: name.lower() for name, code in vars(ErrorCode).items() if name.isupper()}


class RpcError(Exception):
    """An error reply: raised by a handler in the daemon, or by a call in the client."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def to_wire(self) -> list[object]:
        return [int(self.code), self.message]

    @classmethod
    def from_wire(cls, error: object) -> RpcError:
        """Read a peer's error slot, tolerating peers that send a bare string or map."""
        if isinstance(error, list) and len(error) == 2 and isinstance(error[0], int):
            return cls(error[0], str(error[1]))
        return cls(ErrorCode.INTERNAL, str(error))

    def __str__(self) -> str:
        name = _NAMES.get(self.code, f"error {self.code}")
        return f"{name}: {self.message}"
