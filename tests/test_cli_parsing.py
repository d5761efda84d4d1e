"""agentctl's quick `run` parser reads exactly what argparse would, and leaves everything else to it."""

from __future__ import annotations

import argparse

import pytest

from agentctl.cli import RUN_OPTIONS, build_parser, parse_run_quickly


def argparse_run(argv: list[str]) -> dict[str, object]:
    return vars(build_parser(only="run").parse_args(argv))


def test_quick_parser_knows_every_option_of_run_and_no_other() -> None:
    parser = build_parser(only="run")
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    run = sub.choices["run"]
    options = {
        opt for action in run._actions for opt in action.option_strings if opt.startswith("--") and opt != "--help"
    }
    assert options == set(RUN_OPTIONS)
    for opt, (dest, takes_value) in RUN_OPTIONS.items():
        action = next(a for a in run._actions if opt in a.option_strings)
        assert action.dest == dest
        assert (action.nargs != 0) == takes_value


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "hello", "world"],
        ["run"],
        ["run", "--model", "echo", "hi"],
        ["--socket", "/s", "run", "hi"],
        ["run", "--socket", "/s", "--json", "--quiet", "--cwd", "/tmp", "hi", "there"],
        ["run", "--session", "ses_1", "hi"],
        ["run", "--continue", "hi"],
        ["run", "--model", "a", "--model", "b", "hi"],
        ["run", "-", "x"],
    ],
)
def test_quick_parser_agrees_with_argparse(argv: list[str]) -> None:
    quick = parse_run_quickly(argv)
    assert quick is not None
    assert vars(quick) == argparse_run(argv)


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--help"],
        ["run", "-h"],
        ["run", "--", "-rf"],
        ["run", "hi", "--json"],
        ["run", "--model=echo", "hi"],
        ["run", "--mod", "echo", "hi"],
        ["run", "--model"],
        ["run", "--model", "--json"],
        ["run", "--session", "s", "--continue", "hi"],
        ["status"],
        ["--version"],
        [],
        ["--json", "run", "hi"],
    ],
)
def test_quick_parser_leaves_anything_unusual_to_argparse(argv: list[str]) -> None:
    assert parse_run_quickly(argv) is None
