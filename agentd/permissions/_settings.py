"""What the configuration says about permissions: `[permissions]` in config.toml."""

from __future__ import annotations

import attrs

__all__ = ["DEFAULT_PERMISSION_TIMEOUT", "PermissionSettings"]

# A request nobody answers resolves as "timeout" after this many seconds.
DEFAULT_PERMISSION_TIMEOUT = 300.0


@attrs.frozen
class PermissionSettings:
    # Rules (see `_rules`) that allow a call without asking, checked when the file is read.
    allow: tuple[str, ...] = ()
    timeout: float = DEFAULT_PERMISSION_TIMEOUT
