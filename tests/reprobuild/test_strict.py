"""reprobuild.core.strict validates the engine header as pydantic's strict mode did, without pydantic: the same
documents are accepted (with the same values) and refused, checked against a pydantic twin of the header's layer
and tensor records; lists stop at their first bad entry; an object with more keys than fields gets one error."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from reprobuild.core.strict import Invalid
from reprobuild.engine.plan import EngineLayer, EngineTensor

SHA = "0" * 64


class _Twin(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class TwinTactic(_Twin):
    family: str
    name: str
    version: int = Field(ge=1, le=2**31 - 1)
    code_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    parameters: dict[str, int | str]


class TwinLayer(_Twin):
    name: str
    op: str
    attrs: dict[str, int | float | str | list[int] | list[float] | list[str]]
    inputs: list[str] = Field(max_length=10_000)
    outputs: list[str] = Field(max_length=10_000)
    tactic: TwinTactic
    workspace_bytes: int = Field(ge=0, le=2**62 - 1)


class TwinTensor(_Twin):
    name: str
    shape: list[int]
    dtype: str

    @model_validator(mode="after")
    def _rank(self) -> TwinTensor:
        if len(self.shape) > 16:
            raise ValueError("too many dimensions")
        return self


LAYER: dict[str, Any] = {"name": "fc", "op": "Gemm", "attrs": {"alpha": 1.0, "transB": 1, "pads": [0, 0]},
                         "inputs": ["x", "w"], "outputs": ["y"], "workspace_bytes": 0,
                         "tactic": {"family": "gemm", "name": "cpu_blas", "version": 1, "code_sha256": SHA,
                                    "parameters": {"tile": 16, "order": "nn"}}}


def _edit(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(LAYER)
    target = doc
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


_DELETE = object()
LAYER_CASES = {
    "as built": LAYER,
    "an int attribute": _edit(("attrs", "k"), 3),
    "a float attribute": _edit(("attrs", "k"), 2.5),
    "a bool attribute": _edit(("attrs", "k"), True),
    "an int list": _edit(("attrs", "k"), [1, 2]),
    "a mixed int/float list (floats)": _edit(("attrs", "k"), [1, 2.5]),
    "a list of bools": _edit(("attrs", "k"), [True]),
    "a mixed str/int list": _edit(("attrs", "k"), ["a", 1]),
    "a null attribute": _edit(("attrs", "k"), None),
    "a map attribute": _edit(("attrs", "k"), {"a": 1}),
    "an empty list": _edit(("attrs", "k"), []),
    "version 0": _edit(("tactic", "version"), 0),
    "version as a bool": _edit(("tactic", "version"), True),
    "version as a string": _edit(("tactic", "version"), "1"),
    "a short digest": _edit(("tactic", "code_sha256"), "abc"),
    "an upper-case digest": _edit(("tactic", "code_sha256"), "A" * 64),
    "a float parameter": _edit(("tactic", "parameters", "tile"), 1.5),
    "a missing field": _edit(("op",), _DELETE),
    "an unknown field, one missing": _edit(("op",), _DELETE) | {"opp": "Gemm"},
    "a tuple of inputs": _edit(("inputs",), ("x", "w")),
    "a bytes name": _edit(("name",), b"fc"),
    "negative workspace": _edit(("workspace_bytes",), -1),
    "too many inputs": _edit(("inputs",), ["x"] * 10_001),
    "an int key": _edit(("attrs",), {1: 2}),
}


def _outcome(model: Any, doc: dict[str, Any]) -> Any:
    try:
        value = model.model_validate(doc)
    except (ValidationError, Invalid):
        return "refused"
    return value.model_dump()


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_a_layer_is_accepted_or_refused_as_pydantic_strict_mode_does(case: str) -> None:
    doc = LAYER_CASES[case]
    assert _outcome(EngineLayer, doc) == _outcome(TwinLayer, doc)


@pytest.mark.parametrize("shape", [[1, 2], [], [1] * 16, [1] * 17, [1, True], (1, 2), [1.0]])
def test_a_tensor_is_accepted_or_refused_as_pydantic_strict_mode_does(shape: Any) -> None:
    doc = {"name": "t", "shape": shape, "dtype": "float32"}
    assert _outcome(EngineTensor, doc) == _outcome(TwinTensor, doc)


def test_lists_stop_at_their_first_bad_entry_and_every_missing_field_is_named() -> None:
    with pytest.raises(Invalid) as caught:
        EngineLayer.model_validate({**LAYER, "inputs": [1] * 1_000_000, "outputs": [2, 3], "tactic": {}})
    locations = [".".join(map(str, e["loc"])) for e in caught.value.errors()]
    assert locations == ["inputs.0", "outputs.0", "tactic.family", "tactic.name", "tactic.version",
                         "tactic.code_sha256", "tactic.parameters"]


def test_more_keys_than_fields_is_one_error_before_any_key_is_read() -> None:
    with pytest.raises(Invalid) as caught:
        EngineTensor.model_validate({f"k{i}": [{}] * 1000 for i in range(100_000)})
    (error,) = caught.value.errors()
    assert error["msg"].startswith("Value error, 100000 keys where a EngineTensor has at most 3 fields")


def test_cross_field_checks_are_errors_of_the_record() -> None:
    with pytest.raises(Invalid) as caught:
        EngineTensor.model_validate({"name": "input", "shape": [1] * 65, "dtype": "float32"})
    (error,) = caught.value.errors()
    assert error["loc"] == () and "tensor 'input' has 65 dimensions; an engine tensor has at most 16" in error["msg"]
