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
    options = {opt for action in run._actions for opt in action.option_strings if opt not in ("-h", "--help")}
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
        ["run", "-"],
        ["run", "-m", "echo", "-s", "ses_1", "-j", "-q", "hi"],
        ["run", "-c", "hi"],
        ["run", "-d", "hi"],
        ["run", "--detach", "--model", "scripted", "{}"],
        ["run", "--yolo", "hi"],
        ["run", "--allow", "bash:git status", "hi"],
        ["run", "--allow", "edit", "--allow", "bash:echo", "-q", "hi"],
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
        ["run", "-qj", "hi"],
        ["run", "-mecho", "hi"],
        ["run", "-s", "s", "-c", "hi"],
        ["run", "-m"],
    ],
)
def test_quick_parser_leaves_anything_unusual_to_argparse(argv: list[str]) -> None:
    assert parse_run_quickly(argv) is None


def test_every_subcommand_has_a_description_and_an_example() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        text = command.format_help()
        assert command.description and len(command.description) > 20, name
        assert "examples:\n  agentctl " + name in text, name


@pytest.mark.parametrize(
    ("command", "short", "long"),
    [
        ("run", "-m", "--model"),
        ("run", "-c", "--continue"),
        ("run", "-s", "--session"),
        ("run", "-q", "--quiet"),
        ("run", "-j", "--json"),
        ("sessions", "-j", "--json"),
        ("show", "-j", "--json"),
        ("status", "-j", "--json"),
        ("models", "-j", "--json"),
        ("cancel", "-s", "--session"),
        ("attach", "-j", "--json"),
    ],
)
def test_short_flags_mean_their_long_ones(command: str, short: str, long: str) -> None:
    parser = build_parser(only=command)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    action = next(a for a in sub.choices[command]._actions if long in a.option_strings)
    assert short in action.option_strings
