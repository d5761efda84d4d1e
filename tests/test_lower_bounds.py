"""CI's lowest-versions run reads its pins from pyproject.toml: every dependency must give one."""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def lowest_constraints() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lowest_constraints", ROOT / ".ci" / "lowest_constraints.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_dependency_is_pinned_to_its_lower_bound() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [r.split(">=")[0].strip() for r in project["dependencies"]]
    names += [r.split(">=")[0].strip() for extra in project["optional-dependencies"].values() for r in extra]
    pins = dict(lowest_constraints().lowest(ROOT / "pyproject.toml"))
    assert list(pins) == names


def test_the_bounds_the_code_needs() -> None:
    # cattrs.cols arrived in 24.1 (24.1.0's hook-factory annotation fails mypy);
    # move_on_after(shield=) in trio 0.27, which needs attrs 23.2; 0.32 for anyio's trio backend (the MCP SDK).
    pins = dict(lowest_constraints().lowest(ROOT / "pyproject.toml"))
    assert (pins["cattrs"], pins["trio"], pins["attrs"]) == ("24.1.1", "0.32.0", "23.2")


def test_a_requirement_without_a_lower_bound_is_refused(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "x"\ndependencies = ["trio"]\n')
    with pytest.raises(SystemExit, match="'trio' is not of the form 'name>=version'"):
        lowest_constraints().lowest(pyproject)


def test_installed_versions_are_compared_as_pip_compares_them() -> None:
    release = lowest_constraints()._release
    assert release("0.27") == release("0.27.0") and release("8") == release("8.0.0")
    assert release("24.1.1") != release("24.1")
