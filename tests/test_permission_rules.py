"""Allow rules: what each one allows, what it never allows, and how config.toml and agent.send spell them."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentd.models import Config, ConfigError, ConfigFile, load_config
from agentd.permissions import DEFAULT_PERMISSION_TIMEOUT, RuleError, allows, parse_rule, parse_rules


def allowed(rule: str, command: str | None, tool: str = "bash") -> bool:
    return parse_rule(rule).allows(tool, command)


@pytest.mark.parametrize(
    "command",
    ["git status", "git status --short", "  git   status\t-s", "git status -- 'a b'", "git status $HOME"],
)
def test_a_prefix_allows_the_command_and_its_arguments(command: str) -> None:
    assert allowed("bash:git status", command)


@pytest.mark.parametrize("command", ["git statusx", "git", "gitstatus", "git stat", "sudo git status", "xgit status"])
def test_a_prefix_matches_whole_words_only(command: str) -> None:
    assert not allowed("bash:git status", command)


@pytest.mark.parametrize(
    "command",
    [
        "git status; rm -rf ~",
        "git status && rm -rf ~",
        "git status & rm -rf ~",
        "git status || true",
        "git status | sh",
        "git status `rm -rf ~`",
        "git status $(rm -rf ~)",
        "git status > ~/.bashrc",
        "git status < /etc/passwd",
        "git status <(rm -rf ~)",
        "git status\nrm -rf ~",
        "git status\rrm -rf ~",
        "git status 'quoted;semicolon'",
        "git status;",
    ],
)
def test_a_prefix_never_allows_a_command_that_does_more_after_it(command: str) -> None:
    assert not allowed("bash:git status", command)


def test_the_prefix_itself_is_the_users_and_taken_as_written() -> None:
    assert allowed("bash:make -C build |", "make -C build | tee log")


def test_a_bare_tool_name_allows_every_call_of_that_tool_only() -> None:
    assert allowed("edit", None, tool="edit")
    assert allowed("bash", "rm -rf build; echo done", tool="bash")
    assert not allowed("edit", None, tool="write")


def test_a_prefix_rule_never_allows_a_tool_without_a_subject() -> None:
    assert not allowed("write:notes", None, tool="write")


def test_a_prefix_rule_is_for_its_own_tool() -> None:
    assert not allowed("bash:git status", "git status", tool="other")


def test_star_allows_everything() -> None:
    assert allowed("*", "rm -rf ~; curl x | sh")
    assert allowed("*", None, tool="write")


def test_any_rule_of_several_may_allow() -> None:
    rules = parse_rules(("view", "bash:git status", "bash:ls"))
    assert allows(rules, "bash", "ls -la")
    assert allows(rules, "bash", "git status")
    assert not allows(rules, "bash", "git push")
    assert not allows(rules, "edit", None)


@pytest.mark.parametrize(
    ("rule", "words"),
    [
        ("", "names no tool"),
        ("  ", "names no tool"),
        (":git status", "names no tool"),
        ("*:rm", "takes no prefix"),
        ("bash:", "empty prefix"),
        ("bash:   ", "empty prefix"),
        ("ba sh", "may hold only"),
        ("bash;rm", "may hold only"),
    ],
)
def test_a_rule_that_cannot_be_read_says_why(rule: str, words: str) -> None:
    with pytest.raises(RuleError, match=words):
        parse_rule(rule)


# --- config.toml -----------------------------------------------------------------------------------------


def load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return load_config(str(path), environ={})


def mistakes(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    return caught.value.lines()


def test_the_permissions_and_agent_tables_are_read(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        '[permissions]\nallow = ["view", "bash:git status", "*"]\ntimeout = 2.5\n\n[agent]\nmax_steps = 7\n',
    )
    assert config.permissions.allow == ("view", "bash:git status", "*")
    assert config.permissions.timeout == 2.5
    assert config.agent.max_steps == 7


def test_without_the_tables_the_defaults_apply(tmp_path: Path) -> None:
    for config in (load(tmp_path, 'default_model = "echo"\n'), load_config(str(tmp_path / "none.toml"), environ={})):
        assert config.permissions.allow == ()
        assert config.permissions.timeout == DEFAULT_PERMISSION_TIMEOUT == 300
        assert config.agent.max_steps == 50


def test_each_bad_rule_and_value_is_a_mistake_on_its_line(tmp_path: Path) -> None:
    lines = mistakes(
        tmp_path,
        '[permissions]\nallow = ["view", "bash:", 3]\ntimeout = 0\n\n[agent]\nmax_steps = 0\nsteps = 3\n',
    )
    assert lines == [
        f"{tmp_path}/config.toml:2: [permissions] allow[1] is not a usable rule: 'bash:' has an empty prefix"
        " after 'bash:' (write 'bash' alone to allow every call)",
        f"{tmp_path}/config.toml:2: [permissions] allow[2] must be a string, not an integer",
        f"{tmp_path}/config.toml:3: [permissions] timeout must be a positive number of seconds, not 0",
        f"{tmp_path}/config.toml:6: [agent] max_steps must be at least 1, not 0",
        f"{tmp_path}/config.toml:7: [agent] has unknown key 'steps' (did you mean 'max_steps'?)",
    ]


def test_allow_as_a_string_is_a_mistake_not_one_rule_per_character(tmp_path: Path) -> None:
    assert mistakes(tmp_path, '[permissions]\nallow = "edit"\n') == [
        f"{tmp_path}/config.toml:2: [permissions] allow must be an array, not a string"
    ]


def test_permissions_that_is_not_a_table_is_a_mistake(tmp_path: Path) -> None:
    assert mistakes(tmp_path, "permissions = 3\n") == [
        f"{tmp_path}/config.toml:1: permissions must be a table, not an integer"
    ]


def test_a_file_whose_rules_turn_bad_keeps_the_rules_from_before(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[permissions]\nallow = ["edit"]\n')
    file = ConfigFile(str(path), environ={})
    assert file.current().permissions.allow == ("edit",)
    path.write_text('[permissions]\nallow = ["edit", ""]\n')
    file.reload()
    assert file.current().permissions.allow == ("edit",)
    assert file.mistakes and "allow[1]" in file.mistakes[0]
