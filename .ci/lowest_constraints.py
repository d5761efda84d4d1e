"""Print pip constraints pinning every dependency of pyproject.toml to its lower bound.

    python3 .ci/lowest_constraints.py > lowest.txt
    pip install -c lowest.txt -e '.[test]'
    python .ci/lowest_constraints.py --check    # in that environment: is each pin what is installed?

Each requirement must have a `>=` bound: the lowest version we say we support
is the one CI installs and tests, so a bound that is not true fails there.
"""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

_REQUIREMENT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*>=\s*([0-9][A-Za-z0-9.]*)\s*$")


def lowest(pyproject: Path) -> list[tuple[str, str]]:
    project = tomllib.loads(pyproject.read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements.extend(extra)
    pins = []
    for requirement in requirements:
        found = _REQUIREMENT.match(requirement)
        if found is None:
            raise SystemExit(f"{pyproject}: {requirement!r} is not of the form 'name>=version'")
        pins.append((found[1], found[2]))
    return pins


def _release(version: str) -> tuple[int, ...]:
    """`1.0` and `1.0.0` are one version to pip: compare the release numbers, zeros dropped."""
    numbers = [int(part) for part in re.findall(r"\d+", version.split("+")[0])]
    while numbers and numbers[-1] == 0:
        numbers.pop()
    return tuple(numbers)


def mismatches(pins: list[tuple[str, str]]) -> list[str]:
    """Each pin whose installed version is another, in the running environment."""
    wrong = []
    for name, version in pins:
        installed = metadata.version(name)
        if _release(installed) != _release(version):
            wrong.append(f"{name}: {installed} installed, {version} is the lower bound")
    return wrong


def main(argv: list[str]) -> int:
    pins = lowest(Path(__file__).resolve().parent.parent / "pyproject.toml")
    if argv == ["--check"]:
        wrong = mismatches(pins)
        for line in wrong:
            print(line, file=sys.stderr)
        return 1 if wrong else 0
    if argv:
        print(f"usage: {sys.argv[0]} [--check]", file=sys.stderr)
        return 2
    print("\n".join(f"{name}=={version}" for name, version in pins))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
