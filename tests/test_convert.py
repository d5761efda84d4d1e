"""structure_params: strict, non-coercing validation of a request's params into the wire types."""

from __future__ import annotations

import pytest

from agentd.errors import InvalidRequest
from agentd.protocol import structure_params
from agentd.protocol._types import (
    AgentSendParams,
    InitializeParams,
    McpServerSpec,
    MessageDelta,
    NoParams,
    RunWaitParams,
    ServerShutdownParams,
    SessionCreateParams,
    SessionMcpServersParams,
    WorkspaceRef,
)


def invalid(params: object, cls: type) -> str:
    """The InvalidRequest message structure_params answers `params` with."""
    with pytest.raises(InvalidRequest) as info:
        structure_params(params, cls)
    return str(info.value)


# --- the params array ----------------------------------------------------------------


@pytest.mark.parametrize("params", [{}, {"workspace_id": "w"}, "w", None, 3, ("w",)], ids=repr)
def test_params_that_are_not_an_array_are_refused(params: object) -> None:
    assert "params must be an array" in invalid(params, WorkspaceRef)


def test_params_array_with_two_elements_is_refused() -> None:
    assert "at most one map" in invalid([{"workspace_id": "w"}, {}], WorkspaceRef)


@pytest.mark.parametrize(("first", "named"), [("w", "str"), (None, "nil"), (["w"], "list"), (1, "int")], ids=repr)
def test_params_0_that_is_not_a_map_is_refused_and_its_type_named(first: object, named: str) -> None:
    message = invalid([first], WorkspaceRef)
    assert "params[0] must be a map" in message
    assert message.endswith(named)


def test_empty_params_array_means_no_named_arguments() -> None:
    assert structure_params([], NoParams) == NoParams()
    assert structure_params([], InitializeParams) == InitializeParams(None, None)
    assert "required field missing @ params.workspace_id" in invalid([], WorkspaceRef)


def test_bad_params_are_a_domain_error_the_server_edge_maps_to_code_1() -> None:
    from agentd.rpc import ErrorCode
    from agentd.server._methods import _rpc_error

    with pytest.raises(InvalidRequest) as info:
        structure_params([{}], WorkspaceRef)
    assert _rpc_error(info.value).to_wire() == [ErrorCode.INVALID_PARAMS, str(info.value)]


# --- fields ----------------------------------------------------------------------------


def test_well_formed_params_structure_into_the_type() -> None:
    got = structure_params([{"workspace_id": "w", "session_id": "s", "prompt": "hi"}], AgentSendParams)
    assert got == AgentSendParams(workspace_id="w", session_id="s", prompt="hi", run_id=None, model=None)


def test_missing_required_field_is_named() -> None:
    assert invalid([{}], WorkspaceRef) == "required field missing @ params.workspace_id"


def test_none_for_a_str_field_is_refused_not_coerced_to_the_string_none() -> None:
    message = invalid([{"workspace_id": None}], WorkspaceRef)
    assert "params.workspace_id" in message
    assert "nil" in message


def test_int_for_a_str_field_is_refused() -> None:
    message = invalid([{"workspace_id": 5}], WorkspaceRef)
    assert "params.workspace_id" in message and "int" in message


def test_bytes_for_a_str_field_is_refused() -> None:
    assert "params.workspace_id" in invalid([{"workspace_id": b"w"}], WorkspaceRef)


def test_int_for_an_optional_str_field_is_refused() -> None:
    message = invalid([{"workspace_id": "w", "title": 3}], SessionCreateParams)
    assert "params.title" in message


def test_none_for_an_optional_str_field_is_accepted() -> None:
    assert structure_params([{"workspace_id": "w", "title": None}], SessionCreateParams).title is None


@pytest.mark.parametrize("value", ["3", "1.5", [1]], ids=repr)
def test_non_number_for_a_float_field_is_refused(value: object) -> None:
    message = invalid([{"run_id": "r", "timeout": value}], RunWaitParams)
    assert "params.timeout" in message and "expected a number" in message


@pytest.mark.parametrize("value", ["1", True, 1.0, None], ids=repr)
def test_non_int_for_an_int_field_is_refused(value: object) -> None:
    # No method's params has an int field; an event payload type guards the same hook.
    fields = {"session_id": "s", "run_id": "r", "message_id": "m", "offset": value, "text": "t"}
    message = invalid([fields], MessageDelta)
    assert "params.offset" in message and "expected an integer" in message


def test_int_for_an_int_field_is_accepted() -> None:
    fields = {"session_id": "s", "run_id": "r", "message_id": "m", "offset": 4, "text": "t"}
    assert structure_params([fields], MessageDelta).offset == 4


def test_nan_for_a_float_field_is_refused() -> None:
    message = invalid([{"run_id": "r", "timeout": float("nan")}], RunWaitParams)
    assert "params.timeout" in message and "NaN" in message


def test_infinity_for_a_float_field_is_kept() -> None:
    assert structure_params([{"run_id": "r", "timeout": float("inf")}], RunWaitParams).timeout == float("inf")


@pytest.mark.parametrize("value", [True, False], ids=repr)
def test_bool_for_a_float_field_is_refused(value: bool) -> None:
    message = invalid([{"run_id": "r", "timeout": value}], RunWaitParams)
    assert "params.timeout" in message and "bool" in message


def test_int_for_a_float_field_is_accepted_as_float() -> None:
    got = structure_params([{"run_id": "r", "timeout": 3}], RunWaitParams)
    assert got.timeout == 3.0 and type(got.timeout) is float


def test_float_for_a_float_field_is_kept() -> None:
    assert structure_params([{"run_id": "r", "timeout": 0.25}], RunWaitParams).timeout == 0.25


@pytest.mark.parametrize("value", [1, 0, None, "true"], ids=repr)
def test_non_bool_for_a_bool_field_is_refused(value: object) -> None:
    assert "params.if_idle" in invalid([{"if_idle": value}], ServerShutdownParams)


def test_extra_unknown_field_is_refused_and_named() -> None:
    message = invalid([{"workspace_id": "w", "bogus": 1}], WorkspaceRef)
    assert "bogus" in message and "extra" in message


def test_any_field_given_to_a_method_without_params_is_refused() -> None:
    assert "x" in invalid([{"x": 1}], NoParams)


@pytest.mark.parametrize("key", [1, b"workspace_id", 2.5], ids=repr)
def test_non_string_key_is_invalid_params_not_an_internal_error(key: object) -> None:
    # The codec lets int and bytes keys through so that the dispatcher can answer
    # them with INVALID_PARAMS; they must not escape as some other exception.
    message = invalid([{"workspace_id": "w", key: 1}], WorkspaceRef)
    assert "params" in message


def test_mixed_string_and_non_string_extra_keys_are_invalid_params() -> None:
    invalid([{"workspace_id": "w", "bogus": 1, 2: 3}], WorkspaceRef)


def test_optional_fields_default_when_absent() -> None:
    got = structure_params([{"run_id": "r"}], RunWaitParams)
    assert got == RunWaitParams(run_id="r", timeout=None)
    assert structure_params([{}], ServerShutdownParams).if_idle is False
    assert structure_params([{"workspace_id": "w"}], SessionCreateParams).title is None


def test_several_bad_fields_are_all_named_in_one_message() -> None:
    message = invalid([{"workspace_id": 1, "session_id": None, "prompt": 3, "extra": 0}], AgentSendParams)
    for name in ("params.workspace_id", "params.session_id", "params.prompt", "extra"):
        assert name in message, message


def test_missing_and_wrong_fields_are_named_together() -> None:
    message = invalid([{"session_id": 7}], AgentSendParams)
    for name in ("params.workspace_id", "params.session_id", "params.prompt"):
        assert name in message, message


# --- records and maps inside params ----------------------------------------------------------


def _servers(servers: object) -> list[object]:
    return [{"workspace_id": "w", "session_id": "s", "servers": servers}]


@pytest.mark.parametrize(("spec", "named"), [("x", "str"), (None, "nil"), (3, "int"), ([], "list")], ids=repr)
def test_a_nested_record_that_is_not_a_map_is_named_with_its_type(spec: object, named: str) -> None:
    # cattrs read `.keys()` of it: "'str' object has no attribute 'keys'".
    assert invalid(_servers([spec]), SessionMcpServersParams) == f"expected a map, got {named} @ params.servers[0]"


@pytest.mark.parametrize("key", [1, b"name", None], ids=repr)
def test_a_non_string_key_in_a_nested_record_is_invalid_params_not_a_type_error(key: object) -> None:
    # cattrs' own report of the extra key joined it as a string, and raised TypeError: an internal error.
    message = invalid(_servers([{"name": "a", key: "x"}]), SessionMcpServersParams)
    assert message.startswith("keys must be strings, got ") and message.endswith("@ params.servers[0]")


def test_a_list_for_a_map_field_is_named() -> None:
    message = invalid(_servers([{"name": "a", "env": ["A=1"]}]), SessionMcpServersParams)
    assert message == "expected a map, got list @ params.servers[0].env"


def test_a_well_formed_nested_record_structures() -> None:
    got = structure_params(_servers([{"name": "a", "command": ["x"], "env": {"A": "1"}}]), SessionMcpServersParams)
    assert got.servers == [McpServerSpec(name="a", command=["x"], env={"A": "1"})]


# --- what the client sent, quoted back: bounded ------------------------------------------------


def test_a_long_extra_key_is_quoted_cut_short() -> None:
    message = invalid([{"workspace_id": "w", "k" * 100_000: 1}], WorkspaceRef)
    assert len(message) < 200 and "extra fields found (kkk" in message


def test_many_extra_keys_are_counted_not_all_listed() -> None:
    message = invalid([{"workspace_id": "w", **{f"x{i:03}": 1 for i in range(500)}}], WorkspaceRef)
    assert len(message) < 200 and "and 490 more" in message


def test_a_list_of_many_wrong_elements_gets_a_bounded_message() -> None:
    fields = {"workspace_id": "w", "session_id": "s", "prompt": "p", "allow": list(range(20_000))}
    message = invalid([fields], AgentSendParams)
    assert "params.allow[0]" in message and "and more" in message and len(message) < 1000
