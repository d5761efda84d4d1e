"""`python -m bench [--quick] [--only SUITE,...] [--out FILE]`: run the benchmarks.

Suites: rpc, fanout, burst, first_prompt, memory, cli, scale, history, changes.

Prints one table (markdown, ready for the README's Performance section) and
writes every number to a JSON file (default `bench/results/latest.json`).
Timings are measured here, never asserted in the test suite: machines are noisy.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

from ._common import Row

SUITES = ("rpc", "fanout", "burst", "first_prompt", "memory", "cli", "scale", "history", "changes", "acp", "mcp")


def _suite(name: str) -> Any:
    return importlib.import_module(f"bench.{name}")


def _table(rows: list[Row]) -> str:
    lines = ["| section | measure | result | target | met |", "| --- | --- | --- | --- | --- |"]
    for row in rows:
        met = {True: "yes", False: "**no**", None: ""}[row.ok]
        lines.append(f"| {row.section} | {row.what.strip()} | {row.value} | {row.target} | {met} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs: a smoke test, not a measurement")
    parser.add_argument("--only", default=",".join(SUITES), help=f"comma-separated subset of {','.join(SUITES)}")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "latest.json")
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(chosen) - set(SUITES)
    if unknown:
        parser.error(f"unknown suite(s): {', '.join(sorted(unknown))}")

    report: dict[str, Any] = {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "quick": args.quick,
        "results": {},
    }
    rows: list[Row] = []
    for name in chosen:
        print(f"running {name}...", file=sys.stderr, flush=True)
        data, suite_rows = _suite(name).run(quick=args.quick)
        report["results"][name] = data
        rows.extend(suite_rows)
    report["rows"] = [row.as_dict() for row in rows]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(_table(rows))
    print(f"\n(all numbers: {args.out})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
