"""config.toml, else the environment, decides which models a run can reach; every mistake is reported, with its line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agentd.mcp import DEFAULT_CALL_TIMEOUT, DEFAULT_MCP_WAIT, DEFAULT_STARTUP_TIMEOUT, McpServerConfig
from agentd.models import (
    AgentSettings,
    Config,
    ConfigError,
    ConfigFile,
    ConfigProblem,
    ModelConfig,
    ProviderConfig,
    ResolvedModel,
    UnknownModelError,
    config_path,
    load_config,
)

SECRET = "sk-live-9f8e7d6c5b4a-do-not-print"

FULL = """\
# agentd models
default_model = "fast"

[providers.openai]
type = "openai"
base_url = "https://api.openai.com/v1/"
api_key_env = "OPENAI_API_KEY"
headers = { "X-Title" = "agentd" }
max_retries = 5
idle_timeout = 30

[providers.anthropic]
type = "anthropic"
base_url = "https://api.anthropic.com"
api_key_env = "ANTHROPIC_API_KEY"
idle_timeout = 12.5

[providers."local.ollama"]
type = "openai"
base_url = "http://localhost:11434/v1"

[models.fast]
provider = "openai"
model = "gpt-4.1-mini"
context_window = 1047576
max_output_tokens = 32768

[models.claude]
provider = "anthropic"
model = "claude-sonnet-4-5"
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return str(path)


def problems_of(tmp_path: Path, text: str) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), environ={})
    return caught.value.problems


def only_problem(tmp_path: Path, text: str) -> ConfigProblem:
    problems = problems_of(tmp_path, text)
    assert len(problems) == 1, problems
    return problems[0]


# --- where the file is ---------------------------------------------------------------------------------


def test_config_path_is_under_xdg_config_home() -> None:
    assert config_path({"XDG_CONFIG_HOME": "/cfg"}) == "/cfg/agentd/config.toml"


def test_config_path_falls_back_to_dot_config() -> None:
    expected = os.path.join(os.path.expanduser("~"), ".config", "agentd", "config.toml")
    assert config_path({}) == expected
    assert config_path({"XDG_CONFIG_HOME": ""}) == expected


def test_load_config_reads_the_xdg_file_when_no_path_is_given(tmp_path: Path) -> None:
    (tmp_path / "agentd").mkdir()
    (tmp_path / "agentd" / "config.toml").write_text('default_model = "scripted"\n')
    config = load_config(environ={"XDG_CONFIG_HOME": str(tmp_path)})
    assert config.default_model == "scripted"
    assert config.source == str(tmp_path / "agentd" / "config.toml")


# --- a valid file ----------------------------------------------------------------------------------------


def test_full_file_loads_every_field(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    config = load_config(path, environ={})
    assert config == Config(
        providers={
            "openai": ProviderConfig(
                name="openai",
                type="openai",
                base_url="https://api.openai.com/v1",
                api_key_env="OPENAI_API_KEY",
                headers={"X-Title": "agentd"},
                max_retries=5,
                idle_timeout=30.0,
            ),
            "anthropic": ProviderConfig(
                name="anthropic",
                type="anthropic",
                base_url="https://api.anthropic.com",
                api_key_env="ANTHROPIC_API_KEY",
                headers={},
                max_retries=3,
                idle_timeout=12.5,
            ),
            "local.ollama": ProviderConfig(
                name="local.ollama",
                type="openai",
                base_url="http://localhost:11434/v1",
                api_key_env=None,
                headers={},
                max_retries=3,
                idle_timeout=60.0,
            ),
        },
        models={
            "fast": ModelConfig("fast", "openai", "gpt-4.1-mini", context_window=1047576, max_output_tokens=32768),
            "claude": ModelConfig("claude", "anthropic", "claude-sonnet-4-5", None, None),
        },
        default_model="fast",
        default_is_fallback=False,
        source=path,
    )
    assert isinstance(config.providers["openai"].idle_timeout, float)


def test_file_without_default_model_falls_back_to_echo_and_says_so(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL.replace('default_model = "fast"', "")), environ={})
    assert (config.default_model, config.default_is_fallback) == ("echo", True)


def test_choosing_echo_explicitly_is_not_a_fallback(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, 'default_model = "echo"\n'), environ={})
    assert (config.default_model, config.default_is_fallback) == ("echo", False)


def test_default_model_may_be_a_provider_model_name(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL.replace('"fast"', '"local.ollama/qwen2.5-coder:7b"', 1)), environ={})
    assert config.default_model == "local.ollama/qwen2.5-coder:7b"
    assert not config.default_is_fallback


def test_a_file_ignores_providers_the_environment_offers(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, 'default_model = "echo"\n'), environ={"OPENAI_API_KEY": SECRET})
    assert config.providers == {}


def test_dotted_keys_and_sub_tables_are_the_same_config(tmp_path: Path) -> None:
    text = """\
providers.openai.type = "openai"
providers.openai.base_url = "https://api.openai.com/v1"

[providers.openai.headers]
"OpenAI-Organization" = "org-1"

[models]
fast = { provider = "openai", model = "gpt-4.1-mini" }
"""
    config = load_config(write(tmp_path, text), environ={})
    assert config.providers["openai"].headers == {"OpenAI-Organization": "org-1"}
    assert config.models["fast"].model == "gpt-4.1-mini"


# --- every problem, with its line ---------------------------------------------------------------------


PROVIDER = """\
[providers.openai]
type = "openai"
base_url = "https://api.openai.com/v1"
"""


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        pytest.param("a = 1\nb = \n", 2, ["Invalid value"], id="toml-syntax"),
        pytest.param("[x]\na = 1\n[x]\n", 3, ["Cannot declare"], id="toml-table-twice"),
        pytest.param('default_model = "echo"\ndefault-model = "x"\n', 2, ["'default-model'"], id="unknown-top-level"),
        pytest.param(
            PROVIDER + "base_uri = 'x'\n",
            4,
            ["[providers.openai]", "'base_uri'", "'base_url'"],
            id="unknown-provider-key",
        ),
        pytest.param(
            PROVIDER + "[models.fast]\nprovider = 'openai'\nmodel = 'm'\ntemperature = 0.2\n",
            7,
            ["[models.fast]", "'temperature'"],
            id="unknown-model-key",
        ),
        pytest.param(
            PROVIDER + 'max_retries = "3"\n', 4, ["max_retries must be an integer, not a string"], id="retries-string"
        ),
        pytest.param(
            PROVIDER + "max_retries = true\n", 4, ["max_retries must be an integer, not a boolean"], id="retries-bool"
        ),
        pytest.param(PROVIDER + "max_retries = -1\n", 4, ["max_retries must be at least 0"], id="retries-negative"),
        pytest.param(PROVIDER + "idle_timeout = 0\n", 4, ["idle_timeout must be a positive number"], id="idle-zero"),
        pytest.param(PROVIDER + "idle_timeout = inf\n", 4, ["idle_timeout must be a positive number"], id="idle-inf"),
        pytest.param(PROVIDER + 'idle_timeout = "60s"\n', 4, ["idle_timeout", "not a string"], id="idle-string"),
        pytest.param(PROVIDER + "headers = { X-A = 1 }\n", 4, ["headers.X-A must be a string"], id="header-value"),
        pytest.param(PROVIDER + "headers = 'x'\n", 4, ["headers must be a table"], id="headers-string"),
        pytest.param(PROVIDER + "api_key_env = 7\n", 4, ["api_key_env must be a string"], id="key-env-int"),
        pytest.param(
            "\n[providers.openai]\nbase_url = 'https://x'\n", 2, ["[providers.openai] is missing type"], id="no-type"
        ),
        pytest.param("[providers.openai]\ntype = 'openai'\n", 1, ["is missing base_url"], id="no-base-url"),
        pytest.param("[providers.x]\n", 1, ["is missing type and base_url"], id="empty-provider"),
        pytest.param(
            "[providers.g]\ntype = 'gemini'\nbase_url = 'https://g'\n",
            2,
            ["type must be 'openai' or 'anthropic', not 'gemini'"],
            id="bad-type",
        ),
        pytest.param(PROVIDER.replace("https://", "ftp://"), 3, ["base_url must start with http"], id="bad-url"),
        pytest.param(
            PROVIDER.replace("https://api.openai.com/v1", "http://[::1/v1"),
            3,
            ["base_url is not a valid URL (Invalid IPv6 URL)"],
            id="url-bad-ipv6",
        ),
        pytest.param(
            PROVIDER.replace("https://api.openai.com/v1", "http://localhost:99999/v1"),
            3,
            ["base_url is not a valid URL (Port out of range 0-65535)"],
            id="url-port-out-of-range",
        ),
        pytest.param(
            PROVIDER.replace("https://api.openai.com/v1", "https:///v1"), 3, ["base_url has no host"], id="url-no-host"
        ),
        pytest.param(
            "[providers.a]\ntype = 'anthropic'\nbase_url = 'https://api.anthropic.com'\n",
            1,
            ["[providers.a] needs api_key_env"],
            id="anthropic-without-key-env",
        ),
        pytest.param(
            PROVIDER + "\n[models.fast]\nmodel = 'm'\n", 5, ["[models.fast] is missing provider"], id="no-provider"
        ),
        pytest.param(PROVIDER + "[models.fast]\nprovider = 'openai'\n", 4, ["is missing model"], id="no-model"),
        pytest.param(
            PROVIDER + "[models.fast]\nprovider = 'openai'\nmodel = ''\n",
            6,
            ["model must not be empty"],
            id="empty-model",
        ),
        pytest.param(
            PROVIDER + "[models.fast]\nprovider = 'openia'\nmodel = 'gpt-4.1'\n",
            5,
            ["provider 'openia' is not defined", "openai"],
            id="undefined-provider",
        ),
        pytest.param(
            PROVIDER + "[models.m]\nprovider = 'openai'\nmodel = 'x'\ncontext_window = 0\n",
            7,
            ["context_window must be at least 1"],
            id="zero-context",
        ),
        pytest.param(
            PROVIDER + "[models.m]\nprovider = 'openai'\nmodel = 'x'\ncontext_window = 8\nmax_output_tokens = 9\n",
            8,
            ["max_output_tokens (9) is larger than context_window (8)"],
            id="output-over-context",
        ),
        pytest.param(
            PROVIDER + "[models.echo]\nprovider = 'openai'\nmodel = 'x'\n",
            4,
            ["'echo' is a built-in"],
            id="alias-builtin",
        ),
        pytest.param(
            PROVIDER + "[models.'a/b']\nprovider = 'openai'\nmodel = 'x'\n", 4, ["not a usable alias"], id="alias-slash"
        ),
        pytest.param(
            '[providers."o/x"]\ntype = "openai"\nbase_url = "http://x"\n', 1, ["not a usable name"], id="provider-slash"
        ),
        pytest.param('\ndefault_model = "nope"\n', 2, ["default_model 'nope' names no model"], id="default-unknown"),
        pytest.param('default_model = "openia/gpt-4.1"\n' + PROVIDER, 1, ["names no model"], id="default-bad-provider"),
        pytest.param('default_model = "openai/"\n' + PROVIDER, 1, ["names no model"], id="default-empty-model"),
        pytest.param("default_model = 4\n", 1, ["default_model must be a string, not an integer"], id="default-int"),
        pytest.param("providers = 1\n", 1, ["providers must be a table"], id="providers-not-table"),
        pytest.param("[models]\nfast = 'gpt-4.1'\n", 2, ["models.fast must be a table"], id="model-not-table"),
    ],
)
def test_each_problem_is_reported_on_its_line(tmp_path: Path, text: str, line: int, words: list[str]) -> None:
    problem = only_problem(tmp_path, text)
    assert problem.line == line
    for word in words:
        assert word in problem.message


def test_problems_in_dotted_keys_are_found_on_their_line(tmp_path: Path) -> None:
    text = """\
default_model = "echo"
providers.openai.type = "openai"
providers . openai . base_url = 3
"""
    assert only_problem(tmp_path, text) == ConfigProblem(
        3, "[providers.openai] base_url must be a string, not an integer"
    )


def test_problems_in_quoted_table_names_are_found_on_their_line(tmp_path: Path) -> None:
    text = """\
[providers."my.proxy"]
type = "openai"
base_url = "https://proxy"

[ providers . 'other' ]
type = "openai"
base_url = "https://other"
max_retries = "3"
"""
    problem = only_problem(tmp_path, text)
    assert problem.line == 8
    assert problem.message.startswith("[providers.other] max_retries")


def test_a_problem_inside_an_inline_table_is_placed_on_its_line(tmp_path: Path) -> None:
    text = """\
[providers]
openai = { type = "openai", base_url = "https://api.openai.com/v1" }
broken = { type = "openai", max_retries = "3" }
"""
    problems = problems_of(tmp_path, text)
    assert [p.line for p in problems] == [3, 3]
    assert "missing base_url" in problems[0].message
    assert "max_retries" in problems[1].message


def test_a_problem_inside_a_top_level_inline_table_is_placed_on_its_line(tmp_path: Path) -> None:
    text = 'default_model = "echo"\nproviders = { openai = "https://api.openai.com/v1" }\n'
    assert only_problem(tmp_path, text) == ConfigProblem(2, "providers.openai must be a table, not a string")


def test_an_array_of_tables_where_a_table_belongs_is_a_problem_on_its_line(tmp_path: Path) -> None:
    text = '\n[[providers.openai]]\ntype = "openai"\n'
    assert only_problem(tmp_path, text) == ConfigProblem(2, "providers.openai must be a table, not an array")


def test_multiline_strings_do_not_confuse_line_numbers(tmp_path: Path) -> None:
    text = '''\
[providers.openai]
type = "openai"
base_url = "https://api.openai.com/v1"
headers = { X-Note = """
[models.fake]
max_retries = 1
""" }
max_retries = "3"
'''
    assert only_problem(tmp_path, text).line == 8


def test_a_syntax_error_at_the_end_of_the_document_has_no_line(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, 'a = """never closed\n')
    assert problem == ConfigProblem(None, "Unterminated string (at end of document)")


def test_every_problem_is_reported_together_in_line_order(tmp_path: Path) -> None:
    text = """\
default_model = "nowhere"
colour = "blue"

[providers.openai]
type = "gemini"
base_url = "https://api.openai.com/v1"
max_retries = "3"

[providers.claude]
type = "anthropic"
base_url = "https://api.anthropic.com"

[models.fast]
provider = "nobody"
model = "gpt-4.1-mini"
size = "large"
"""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert [p.line for p in caught.value.problems] == [1, 2, 5, 7, 9, 14, 16]
    lines = str(caught.value).splitlines()
    assert len(lines) == 7
    assert lines[0] == f"{path}:1: default_model 'nowhere' names no model: " + lines[0].split("names no model: ")[1]
    assert lines[1] == f"{path}:2: unknown top-level key 'colour'"
    assert all(line.startswith(f"{path}:") for line in lines)
    assert caught.value.path == path


def test_a_problem_without_a_line_names_only_the_path(tmp_path: Path) -> None:
    error = ConfigError([ConfigProblem(3, "three"), ConfigProblem(None, "somewhere")], "/c.toml")
    assert str(error) == "/c.toml:3: three\n/c.toml: somewhere"


def test_a_file_that_is_not_utf8_is_a_problem_on_its_line(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b'default_model = "echo"\n# caf\xe9\n')
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), environ={})
    assert caught.value.problems == [ConfigProblem(2, "the file is not UTF-8 text")]


def test_a_config_path_that_cannot_be_read_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(str(tmp_path), environ={})
    assert str(caught.value).startswith(f"{tmp_path}: cannot read the configuration")


# --- no file: the environment ---------------------------------------------------------------------------


def from_env(tmp_path: Path, environ: dict[str, str]) -> Config:
    return load_config(str(tmp_path / "absent.toml"), environ=environ)


def test_no_file_and_nothing_in_the_environment_is_the_echo_fallback(tmp_path: Path) -> None:
    config = from_env(tmp_path, {})
    assert config == Config({}, {}, "echo", default_is_fallback=True, source="environment")


def test_openai_key_gives_the_openai_provider_and_default(tmp_path: Path) -> None:
    config = from_env(tmp_path, {"OPENAI_API_KEY": SECRET})
    assert config.providers == {
        "openai": ProviderConfig("openai", "openai", "https://api.openai.com/v1", "OPENAI_API_KEY", {}, 3, 60.0)
    }
    assert (config.default_model, config.default_is_fallback) == ("openai/gpt-4.1", False)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        pytest.param(
            {"OPENAI_API_KEY": SECRET, "OPENAI_BASE_URL": "http://[::1"},
            "environment variable OPENAI_BASE_URL: the provider URL http://[::1 is not a valid URL (Invalid IPv6 URL)",
            id="openai",
        ),
        pytest.param(
            {"ANTHROPIC_API_KEY": SECRET, "ANTHROPIC_BASE_URL": "api.anthropic.com"},
            "environment variable ANTHROPIC_BASE_URL: the provider URL api.anthropic.com"
            " must start with http:// or https://",
            id="anthropic",
        ),
        pytest.param(
            {"OLLAMA_HOST": "gpu-box:99999"},
            "environment variable OLLAMA_HOST: the provider URL http://gpu-box:99999/v1"
            " is not a valid URL (Port out of range 0-65535)",
            id="ollama",
        ),
    ],
)
def test_a_provider_url_from_the_environment_that_does_not_parse_names_its_variable(
    tmp_path: Path, environ: dict[str, str], expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        from_env(tmp_path, environ)
    assert str(info.value) == expected
    assert SECRET not in str(info.value)


def test_openai_base_url_comes_from_the_environment(tmp_path: Path) -> None:
    config = from_env(tmp_path, {"OPENAI_API_KEY": SECRET, "OPENAI_BASE_URL": "https://proxy.example/v1/"})
    assert config.providers["openai"].base_url == "https://proxy.example/v1"


def test_only_openai_itself_is_sent_max_completion_tokens(tmp_path: Path) -> None:
    official = from_env(tmp_path, {"OPENAI_API_KEY": SECRET}).providers["openai"]
    assert official.max_tokens_field == "max_completion_tokens"
    proxied = from_env(tmp_path, {"OPENAI_API_KEY": SECRET, "OPENAI_BASE_URL": "https://proxy.example/v1"})
    assert proxied.providers["openai"].max_tokens_field == "max_tokens"
    ollama = from_env(tmp_path, {"OLLAMA_HOST": "127.0.0.1:11434"}).providers["ollama"]
    assert ollama.max_tokens_field == "max_tokens"
    anthropic = from_env(tmp_path, {"ANTHROPIC_API_KEY": SECRET}).providers["anthropic"]
    assert anthropic.max_tokens_field == "max_tokens"


def test_openai_base_url_without_a_key_is_no_provider(tmp_path: Path) -> None:
    assert from_env(tmp_path, {"OPENAI_BASE_URL": "https://proxy.example/v1", "OPENAI_API_KEY": ""}).providers == {}


def test_anthropic_key_gives_the_anthropic_provider_and_default(tmp_path: Path) -> None:
    config = from_env(tmp_path, {"ANTHROPIC_API_KEY": SECRET})
    assert config.providers == {
        "anthropic": ProviderConfig(
            "anthropic", "anthropic", "https://api.anthropic.com", "ANTHROPIC_API_KEY", {}, 3, 60.0
        )
    }
    assert (config.default_model, config.default_is_fallback) == ("anthropic/claude-sonnet-4-5", False)


def test_anthropic_base_url_comes_from_the_environment(tmp_path: Path) -> None:
    config = from_env(tmp_path, {"ANTHROPIC_API_KEY": SECRET, "ANTHROPIC_BASE_URL": "http://127.0.0.1:8080"})
    assert config.providers["anthropic"].base_url == "http://127.0.0.1:8080"


def test_openai_wins_the_default_when_both_keys_are_set(tmp_path: Path) -> None:
    config = from_env(tmp_path, {"OPENAI_API_KEY": SECRET, "ANTHROPIC_API_KEY": SECRET})
    assert list(config.providers) == ["openai", "anthropic"]
    assert config.default_model == "openai/gpt-4.1"


@pytest.mark.parametrize(
    ("host", "base_url"),
    [
        ("http://gpu-box:11434", "http://gpu-box:11434/v1"),
        ("https://ollama.example/", "https://ollama.example/v1"),
        ("127.0.0.1:11434", "http://127.0.0.1:11434/v1"),
        ("gpu-box", "http://gpu-box:11434/v1"),
        (":9000", "http://127.0.0.1:9000/v1"),
        ("[::1]", "http://[::1]:11434/v1"),
    ],
)
def test_ollama_host_gives_a_keyless_openai_type_provider(tmp_path: Path, host: str, base_url: str) -> None:
    config = from_env(tmp_path, {"OLLAMA_HOST": host})
    assert config.providers == {"ollama": ProviderConfig("ollama", "openai", base_url, None, {}, 3, 60.0)}


def test_ollama_alone_cannot_name_a_default(tmp_path: Path) -> None:
    config = from_env(tmp_path, {"OLLAMA_HOST": "localhost:11434"})
    assert (config.default_model, config.default_is_fallback) == ("echo", True)
    assert config.resolve("ollama/qwen2.5-coder").model == "qwen2.5-coder"


# --- resolving a name -----------------------------------------------------------------------------------


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return load_config(write(tmp_path, FULL), environ={})


def test_resolve_an_alias(config: Config) -> None:
    assert config.resolve("fast") == ResolvedModel(config.providers["openai"], "gpt-4.1-mini", "fast", 32768)


def test_resolve_none_is_the_default(config: Config) -> None:
    assert config.resolve(None) == config.resolve("fast")


def test_resolve_provider_slash_model_splits_at_the_first_slash(config: Config) -> None:
    resolved = config.resolve("local.ollama/hf.co/bartowski/Qwen2.5-Coder-GGUF")
    assert resolved == ResolvedModel(config.providers["local.ollama"], "hf.co/bartowski/Qwen2.5-Coder-GGUF", None, None)


def test_resolve_builtins_without_a_provider(config: Config) -> None:
    assert config.resolve("echo") == ResolvedModel(None, "echo", None, None)
    assert config.resolve("scripted") == ResolvedModel(None, "scripted", None, None)


def test_resolve_the_fallback_default_is_echo(tmp_path: Path) -> None:
    assert from_env(tmp_path, {}).resolve(None) == ResolvedModel(None, "echo")


@pytest.mark.parametrize("name", ["gpt-4.1", "nobody/gpt-4.1", "openai/", "openai"])
def test_resolve_unknown_lists_what_exists(config: Config, name: str) -> None:
    with pytest.raises(UnknownModelError) as caught:
        config.resolve(name)
    assert str(caught.value) == (
        f"unknown model {name!r} (available: echo, scripted; aliases: fast, claude;"
        " providers: openai/<model>, anthropic/<model>, local.ollama/<model>)"
    )


def test_resolve_unknown_without_config_reads_like_the_registry(tmp_path: Path) -> None:
    with pytest.raises(UnknownModelError, match=r"^unknown model 'gpt' \(available: echo, scripted\)$"):
        from_env(tmp_path, {}).resolve("gpt")


# --- keys -------------------------------------------------------------------------------------------------


def test_api_key_is_read_from_the_named_variable_at_call_time() -> None:
    provider = ProviderConfig("work", "openai", "https://api.openai.com/v1", "WORK_OPENAI_KEY")
    environ: dict[str, str] = {}
    with pytest.raises(ConfigError):
        provider.api_key(environ)
    environ["WORK_OPENAI_KEY"] = SECRET
    assert provider.api_key(environ) == SECRET
    environ["WORK_OPENAI_KEY"] = "rotated"
    assert provider.api_key(environ) == "rotated"


def test_api_key_error_names_provider_and_variable_but_no_value() -> None:
    provider = ProviderConfig("work", "anthropic", "https://api.anthropic.com", "WORK_KEY")
    with pytest.raises(ConfigError) as unset:
        provider.api_key({"OTHER_KEY": SECRET})
    assert str(unset.value).startswith(
        "provider 'work' needs an API key, but environment variable WORK_KEY is not set in agentd's environment;"
    )
    with pytest.raises(ConfigError) as empty:
        provider.api_key({"WORK_KEY": "", "OTHER_KEY": SECRET})
    assert str(empty.value).startswith(
        "provider 'work' needs an API key, but environment variable WORK_KEY is empty in agentd's environment;"
    )


def test_a_missing_key_says_the_daemon_keeps_the_environment_it_started_with() -> None:
    provider = ProviderConfig("work", "openai", "https://api.openai.com/v1", "WORK_KEY")
    with pytest.raises(ConfigError) as unset:
        provider.api_key({})
    assert "agentd keeps the environment it started with" in str(unset.value)
    assert "`agentctl stop`" in str(unset.value)


def test_a_missing_key_says_where_a_service_gets_its_environment() -> None:
    provider = ProviderConfig("work", "openai", "https://api.openai.com/v1", "WORK_KEY")
    with pytest.raises(ConfigError) as unset:
        provider.api_key({})
    message = str(unset.value)
    assert "~/.config/environment.d/" in message
    assert "systemctl --user import-environment" in message
    assert "`agentctl restart`" in message
    # The README section it names exists, under that title.
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert "Environment and API keys" in message
    assert "\n### Environment and API keys\n" in readme


def test_a_provider_without_api_key_env_sends_no_key() -> None:
    provider = ProviderConfig("ollama", "openai", "http://localhost:11434/v1")
    assert provider.api_key({"OPENAI_API_KEY": SECRET}) is None


def test_a_key_pasted_into_api_key_env_is_refused_without_being_repeated(tmp_path: Path) -> None:
    text = f'[providers.openai]\ntype = "openai"\nbase_url = "https://api.openai.com/v1"\napi_key_env = "{SECRET}"\n'
    problem = only_problem(tmp_path, text)
    assert problem.line == 4
    assert "must be the NAME of an environment variable" in problem.message
    assert SECRET not in problem.message


def test_a_key_written_as_api_key_is_refused_without_being_repeated(tmp_path: Path) -> None:
    text = f'[providers.openai]\ntype = "openai"\nbase_url = "https://api.openai.com/v1"\napi_key = "{SECRET}"\n'
    problem = only_problem(tmp_path, text)
    assert problem.line == 4
    assert "api_key_env names the environment variable" in problem.message
    assert SECRET not in problem.message


# --- describe ---------------------------------------------------------------------------------------------


def test_describe_lists_builtins_aliases_and_providers(config: Config) -> None:
    assert config.describe() == [
        {"name": "echo", "kind": "builtin", "provider": None, "model": "echo", "default": False},
        {"name": "scripted", "kind": "builtin", "provider": None, "model": "scripted", "default": False},
        {"name": "fast", "kind": "alias", "provider": "openai", "model": "gpt-4.1-mini", "default": True},
        {"name": "claude", "kind": "alias", "provider": "anthropic", "model": "claude-sonnet-4-5", "default": False},
        {"name": "openai/<model>", "kind": "provider", "provider": "openai", "model": None, "default": False},
        {"name": "anthropic/<model>", "kind": "provider", "provider": "anthropic", "model": None, "default": False},
        {
            "name": "local.ollama/<model>",
            "kind": "provider",
            "provider": "local.ollama",
            "model": None,
            "default": False,
        },
    ]


def test_describe_shows_a_provider_model_default_as_its_own_entry(tmp_path: Path) -> None:
    entries = from_env(tmp_path, {"OPENAI_API_KEY": SECRET}).describe()
    defaults = [entry for entry in entries if entry["default"]]
    assert defaults == [
        {"name": "openai/gpt-4.1", "kind": "model", "provider": "openai", "model": "gpt-4.1", "default": True}
    ]


def test_describe_marks_the_echo_fallback_as_default(tmp_path: Path) -> None:
    entries = from_env(tmp_path, {}).describe()
    assert [entry["name"] for entry in entries if entry["default"]] == ["echo"]


def test_no_key_value_appears_in_describe_reprs_or_errors(tmp_path: Path) -> None:
    environ = {"OPENAI_API_KEY": SECRET, "ANTHROPIC_API_KEY": SECRET, "OLLAMA_HOST": "localhost"}
    shown: list[str] = []

    from_environment = load_config(str(tmp_path / "absent.toml"), environ=environ)
    text = FULL.replace('headers = { "X-Title" = "agentd" }', f'headers = {{ "X-Proxy-Token" = "{SECRET}" }}')
    from_file = load_config(write(tmp_path, text), environ=environ)
    for config in (from_environment, from_file):
        shown += [repr(config.describe()), repr(config), str(config)]
        shown += [repr(config.resolve(None)), repr(config.resolve("echo"))]
        with pytest.raises(UnknownModelError) as unknown:
            config.resolve("missing")
        shown.append(str(unknown.value))
    with pytest.raises(ConfigError) as no_key:
        ProviderConfig("x", "openai", "https://x", "UNSET_KEY").api_key(environ)
    shown.append(str(no_key.value))
    with pytest.raises(ConfigError) as bad_file:
        load_config(write(tmp_path, f'[providers.p]\ntype = "openai"\napi_key_env = "{SECRET}"\n'), environ=environ)
    shown.append(str(bad_file.value))

    assert from_file.providers["openai"].headers == {"X-Proxy-Token": SECRET}  # kept, only never shown
    for text in shown:
        assert SECRET not in text


# --- choosing the default: AGENTD_MODEL and agentd --model ---------------------------------------------


def test_agentd_model_chooses_the_default_over_what_the_environment_offers(tmp_path: Path) -> None:
    config = from_env(tmp_path, {"OLLAMA_HOST": "gpu-box", "AGENTD_MODEL": "ollama/qwen2.5-coder"})
    assert (config.default_model, config.default_is_fallback) == ("ollama/qwen2.5-coder", False)
    assert config.resolve(None).model == "qwen2.5-coder"


def test_agentd_model_chooses_the_default_over_the_files(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL), environ={"AGENTD_MODEL": "claude"})
    assert config.resolve(None) == config.resolve("claude")


def test_the_model_flag_wins_over_agentd_model(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL), environ={"AGENTD_MODEL": "claude"}, default_model="scripted")
    assert (config.default_model, config.default_is_fallback) == ("scripted", False)


@pytest.mark.parametrize(
    ("environ", "flag", "origin"),
    [({"AGENTD_MODEL": "ollama/qwen"}, None, "AGENTD_MODEL"), ({}, "openai/gpt-4.1", "--model")],
)
def test_a_chosen_default_that_names_no_model_is_a_mistake_naming_where_it_came_from(
    tmp_path: Path, environ: dict[str, str], flag: str | None, origin: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(str(tmp_path / "absent.toml"), environ=environ, default_model=flag)
    assert str(caught.value).startswith(f"{origin} ")
    assert "names no model (available: echo, scripted)" in str(caught.value)


# --- the note before a run with the default ------------------------------------------------------------


def test_with_only_ollama_host_the_note_says_how_its_models_are_named_and_how_to_choose_one(tmp_path: Path) -> None:
    note = from_env(tmp_path, {"OLLAMA_HOST": "gpu-box"}).default_note("/c/agentd/config.toml")
    assert note is not None
    assert note.startswith("OLLAMA_HOST is set: models are named ollama/NAME; choose one with --model or AGENTD_MODEL")
    assert "no model is configured" not in note


def test_with_nothing_configured_the_note_names_the_variables_and_the_file(tmp_path: Path) -> None:
    note = from_env(tmp_path, {}).default_note("/c/agentd/config.toml")
    assert note is not None and note.startswith("no model is configured")
    assert "OPENAI_API_KEY" in note and "OLLAMA_HOST" in note and "/c/agentd/config.toml" in note


def test_a_file_without_default_model_says_so_rather_than_that_nothing_is_configured(tmp_path: Path) -> None:
    path = write(tmp_path, FULL.replace('default_model = "fast"', ""))
    note = load_config(path, environ={}).default_note(path)
    assert note is not None
    assert note.startswith(f"{path} sets no default_model: models are named openai/NAME, anthropic/NAME")
    assert "fast, claude" in note and "AGENTD_MODEL" in note


def test_a_chosen_default_has_no_note(tmp_path: Path) -> None:
    assert from_env(tmp_path, {"OPENAI_API_KEY": SECRET}).default_note("/c.toml") is None
    assert from_env(tmp_path, {"OLLAMA_HOST": "h", "AGENTD_MODEL": "ollama/m"}).default_note("/c.toml") is None


def test_an_environment_provider_missing_from_the_daemons_environment_says_it_keeps_its_start_environment(
    tmp_path: Path,
) -> None:
    with pytest.raises(UnknownModelError) as caught:
        from_env(tmp_path, {}).resolve("openai/gpt-4.1")
    message = str(caught.value)
    assert message.startswith("unknown model 'openai/gpt-4.1' (available: echo, scripted); provider 'openai'")
    assert "comes from OPENAI_API_KEY, which agentd's environment does not have" in message
    assert "`agentctl stop`" in message


# --- a daemon's configuration: mistakes do not stop it -----------------------------------------------------


def test_a_file_with_mistakes_at_start_leaves_only_the_builtins_and_no_default(tmp_path: Path) -> None:
    path = write(tmp_path, 'default_model = "p/m"\n[providers.p]\ntype = "x"\n')
    file = ConfigFile(path, environ={})
    assert file.config.providers == {} and file.config.models == {}
    assert file.config.default_model is None
    assert file.mistakes == [
        f"{path}:2: [providers.p] is missing base_url",
        f"{path}:3: [providers.p] type must be 'openai' or 'anthropic', not 'x'",
    ]
    assert file.config.resolve("echo").model == "echo"
    with pytest.raises(UnknownModelError, match="no default model is known"):
        file.config.resolve(None)
    note = file.mistakes_note()
    assert note is not None and note.endswith("\n" + "\n".join(file.mistakes))


def test_a_builtin_chosen_default_still_works_when_the_file_has_mistakes(tmp_path: Path) -> None:
    file = ConfigFile(write(tmp_path, "default_model = 4\n"), environ={"AGENTD_MODEL": "scripted"})
    assert file.config.default_model == "scripted"
    assert len(file.mistakes) == 1


def test_a_chosen_default_naming_no_model_keeps_the_rest_of_a_good_file(tmp_path: Path) -> None:
    file = ConfigFile(write(tmp_path, FULL), environ={"AGENTD_MODEL": "nope"})
    assert file.config.default_model is None
    assert file.config.resolve("fast").model == "gpt-4.1-mini"
    assert [line.split(" (available")[0] for line in file.mistakes] == ["AGENTD_MODEL 'nope' names no model"]


def test_an_environment_url_mistake_is_reported_and_the_builtins_still_run(tmp_path: Path) -> None:
    file = ConfigFile(str(tmp_path / "absent.toml"), environ={"OLLAMA_HOST": "gpu-box:99999"})
    assert file.config.providers == {}
    assert file.mistakes[0].startswith("environment variable OLLAMA_HOST:")
    assert file.config.resolve("echo").model == "echo"


def test_a_file_mended_under_a_running_daemon_is_used_without_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[models.fast]\nprovider = 'openai'\n")
    file = ConfigFile(str(path), environ={})
    assert file.config.models == {} and len(file.mistakes) == 2
    path.write_text(FULL)
    assert file.current().resolve(None).alias == "fast"
    assert (file.mistakes, file.mistakes_note()) == ([], None)


# --- MCP servers: [mcp.NAME] and [agent] mcp_wait ------------------------------------------------------

MCP = """\
[mcp.notes]
command = ["uvx", "mcp-server-sqlite", "--db-path", "notes.db"]
env = { NOTES_TOKEN = "t" }
allow = ["list_tables", "read_query"]
startup_timeout = 5
call_timeout = 2.5

[mcp.docs]
url = "https://docs.example.com/mcp"
headers = { Authorization = "Bearer b" }
enabled = false

[mcp.zz-first-in-no-order]
command = ["./server"]
allow = "*"
"""


def test_mcp_servers_are_read_in_the_files_order_with_their_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MCP), environ={})
    assert config.mcp == (
        McpServerConfig(
            name="notes",
            command=("uvx", "mcp-server-sqlite", "--db-path", "notes.db"),
            env={"NOTES_TOKEN": "t"},
            allow=("list_tables", "read_query"),
            startup_timeout=5.0,
            call_timeout=2.5,
            source="config",
        ),
        # Disabled, and still configured: `agentctl mcp` lists it as such.
        McpServerConfig(
            name="docs",
            url="https://docs.example.com/mcp",
            headers={"Authorization": "Bearer b"},
            enabled=False,
            startup_timeout=DEFAULT_STARTUP_TIMEOUT,
            call_timeout=DEFAULT_CALL_TIMEOUT,
        ),
        McpServerConfig(name="zz-first-in-no-order", command=("./server",), allow=("*",)),
    )
    assert [s.transport for s in config.mcp] == ["stdio", "http", "stdio"]
    assert isinstance(config.mcp[0].startup_timeout, float)


def test_no_mcp_tables_is_no_servers_and_the_default_wait(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, 'default_model = "echo"\n'), environ={})
    assert config.mcp == ()
    assert config.agent == AgentSettings(mcp_wait=DEFAULT_MCP_WAIT)


@pytest.mark.parametrize(("text", "wait"), [("mcp_wait = 0\n", 0.0), ("mcp_wait = 7.5\n", 7.5), ("", 2.0)])
def test_agent_mcp_wait_may_be_zero(tmp_path: Path, text: str, wait: float) -> None:
    assert load_config(write(tmp_path, "[agent]\n" + text), environ={}).agent.mcp_wait == wait


def test_an_allow_of_star_in_an_array_is_every_tool_too(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[mcp.s]\ncommand = ["s"]\nallow = ["*"]\n'), environ={})
    assert config.mcp[0].allow == ("*",)


def test_mcp_servers_written_as_dotted_keys_and_inline_tables_are_the_same(tmp_path: Path) -> None:
    text = '[mcp]\na.command = ["a", "--flag"]\nb = { url = "http://127.0.0.1:8000/mcp", enabled = false }\n'
    config = load_config(write(tmp_path, text), environ={})
    assert [(s.name, s.command, s.url, s.enabled) for s in config.mcp] == [
        ("a", ("a", "--flag"), None, True),
        ("b", (), "http://127.0.0.1:8000/mcp", False),
    ]


STDIO = '[mcp.s]\ncommand = ["server"]\n'
HTTP = '[mcp.h]\nurl = "https://h.example/mcp"\n'


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        pytest.param("mcp = 3\n", 1, "mcp must be a table of [mcp.NAME] tables, not an integer", id="mcp-not-table"),
        pytest.param("[mcp]\ns = 1\n", 2, "mcp.s must be a table, not an integer", id="server-not-table"),
        pytest.param(
            "\n[mcp.s]\nenabled = true\n",
            2,
            "[mcp.s] needs command (a program to start, spoken to on stdio) or url (streamable HTTP)",
            id="neither-command-nor-url",
        ),
        pytest.param(
            STDIO + 'url = "https://h"\n',
            3,
            "[mcp.s] has both command and url: a server is one or the other",
            id="both",
        ),
        pytest.param(
            '[mcp.s]\ncommand = "npx server"\n',
            2,
            "[mcp.s] command must be an array: the program, then its arguments, each a string; not a string",
            id="command-string",
        ),
        pytest.param(
            "[mcp.s]\ncommand = []\n",
            2,
            "[mcp.s] command must not be empty: the program, then its arguments",
            id="command-empty",
        ),
        pytest.param(
            '[mcp.s]\ncommand = ["", "x"]\n',
            2,
            "[mcp.s] command must start with the program, not an empty string",
            id="command-no-program",
        ),
        pytest.param(
            '[mcp.s]\ncommand = ["s", 3]\n', 2, "[mcp.s] command[1] must be a string, not an integer", id="command-int"
        ),
        pytest.param(
            '[mcp.h]\nurl = "ws://h"\n', 2, "[mcp.h] url must start with http:// or https://", id="url-scheme"
        ),
        pytest.param('[mcp.h]\nurl = "https:///mcp"\n', 2, "[mcp.h] url has no host", id="url-no-host"),
        pytest.param(
            HTTP + 'env = { A = "b" }\n',
            3,
            "[mcp.h] env is for a server started by command, not one at a url",
            id="env-on-http",
        ),
        pytest.param(
            STDIO + 'headers = { A = "b" }\n',
            3,
            "[mcp.s] headers are for a server at a url, not one started by command",
            id="headers-on-stdio",
        ),
        pytest.param(
            STDIO + 'env = { "MY VAR" = "v" }\n',
            3,
            '[mcp.s] env."MY VAR" is not a usable environment variable name (letters, digits and _,'
            " not starting with a digit)",
            id="env-bad-name",
        ),
        pytest.param(STDIO + "env = { A = 1 }\n", 3, "[mcp.s] env.A must be a string, not an integer", id="env-int"),
        pytest.param(STDIO + "env = []\n", 3, "[mcp.s] env must be a table, not an array", id="env-array"),
        pytest.param(
            HTTP + "headers = { A = true }\n", 3, "[mcp.h] headers.A must be a string, not a boolean", id="header-bool"
        ),
        pytest.param(
            STDIO + 'enabled = "no"\n', 3, "[mcp.s] enabled must be true or false, not a string", id="enabled"
        ),
        pytest.param(
            STDIO + 'allow = "list"\n',
            3,
            '[mcp.s] allow must be an array of the server\'s tool names, or "*" for all of them, not a string',
            id="allow-string",
        ),
        pytest.param(STDIO + 'allow = ["a", ""]\n', 3, "[mcp.s] allow[1] must not be empty", id="allow-empty-name"),
        pytest.param(
            STDIO + 'allow = ["mcp__s__read"]\n',
            3,
            "[mcp.s] allow[0] names the tool as the model sees it: give its MCP name, without mcp__SERVER__"
            " ('mcp__s__read')",
            id="allow-model-name",
        ),
        pytest.param(
            STDIO + "startup_timeout = 0\n",
            3,
            "[mcp.s] startup_timeout must be a positive number of seconds, not 0",
            id="startup-zero",
        ),
        pytest.param(
            STDIO + 'call_timeout = "1m"\n',
            3,
            "[mcp.s] call_timeout must be a number of seconds, not a string",
            id="call-string",
        ),
        pytest.param(
            STDIO + "comand = []\n", 3, "[mcp.s] has unknown key 'comand' (did you mean 'command'?)", id="unknown-key"
        ),
        pytest.param(
            STDIO + 'args = ["x"]\n',
            3,
            "[mcp.s] has unknown key 'args'; command holds the program, then its arguments",
            id="args-hint",
        ),
        pytest.param(
            STDIO + "disabled = true\n",
            3,
            "[mcp.s] has unknown key 'disabled'; enabled = false turns a server off",
            id="disabled-hint",
        ),
        pytest.param(
            '[mcp.a__b]\ncommand = ["s"]\n',
            1,
            "[mcp.a__b] MCP server name 'a__b' may hold only letters, digits, '_' and '-', must start with a letter"
            " or digit, and may not hold '__' or end with '_' (its tools are named mcp__NAME__TOOL)",
            id="name-double-underscore",
        ),
        pytest.param('[mcp."my server"]\ncommand = ["s"]\n', 1, '[mcp."my server"] MCP server name', id="name-space"),
        pytest.param(
            f'[mcp.{"n" * 33}]\ncommand = ["s"]\n',
            1,
            f"[mcp.{'n' * 33}] MCP server name '{'n' * 33}' is longer than 32 characters",
            id="name-too-long",
        ),
        pytest.param(
            "[agent]\nmcp_wait = -1\n", 2, "[agent] mcp_wait must be a number of seconds, 0 or more, not -1", id="wait"
        ),
        pytest.param(
            "[agent]\nmcp_wait = nan\n", 2, "[agent] mcp_wait must be a number of seconds, 0 or more, not nan", id="nan"
        ),
        pytest.param(
            '[agent]\nmcp_wait = "2"\n', 2, "[agent] mcp_wait must be a number of seconds, not a string", id="wait-str"
        ),
    ],
)
def test_each_mcp_problem_is_reported_on_its_line(tmp_path: Path, text: str, line: int, message: str) -> None:
    problem = only_problem(tmp_path, text)
    assert problem.line == line
    assert problem.message.startswith(message), problem.message


def test_every_mcp_problem_is_reported_together_in_line_order(tmp_path: Path) -> None:
    text = """\
[mcp.good]
command = ["server"]

[mcp.bad]
command = "server --flag"
url = "https://h.example/mcp"
enabled = 1

[mcp.worse]
headers = { A = "b" }
"""
    problems = problems_of(tmp_path, text)
    assert [(p.line, p.message.split(" ", 2)[1]) for p in problems] == [
        (5, "command"),
        (6, "has"),
        (7, "enabled"),
        (9, "needs"),
    ]


def test_no_env_or_header_value_appears_in_mcp_mistakes_or_reprs(tmp_path: Path) -> None:
    text = f"""\
[mcp.s]
command = "server --token {SECRET}"
env = {{ "not a name" = "{SECRET}", TOKEN = ["{SECRET}"] }}
headers = {{ Authorization = "Bearer {SECRET}" }}

[mcp.h]
url = "https://h.example/mcp"
headers = {{ Authorization = {{ value = "{SECRET}" }} }}
env = {{ TOKEN = "{SECRET}" }}
"""
    problems = problems_of(tmp_path, text)
    assert len(problems) == 6
    for problem in problems:
        assert SECRET not in problem.message
    good = f'[mcp.s]\ncommand = ["s"]\nenv = {{ TOKEN = "{SECRET}" }}\n[mcp.h]\nurl = "https://h"\n'
    good += f'headers = {{ Authorization = "{SECRET}" }}\n'
    config = load_config(write(tmp_path, good), environ={})
    assert config.mcp[0].env == {"TOKEN": SECRET} and config.mcp[1].headers == {"Authorization": SECRET}
    assert SECRET not in repr(config) and SECRET not in str(config.mcp)
