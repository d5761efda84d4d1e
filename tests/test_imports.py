"""Each of agentd's packages imports first, in a fresh interpreter: no import cycle that the usual order hides."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

import agentd

PACKAGES = sorted(
    f"agentd.{module.name}" for module in pkgutil.iter_modules(agentd.__path__) if not module.name.startswith("_")
)


@pytest.mark.parametrize("name", PACKAGES)
def test_the_module_imports_first(name: str) -> None:
    done = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
