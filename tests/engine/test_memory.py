"""The memory planner: tensors that are alive at the same time never share bytes; aliases always do."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from reprobuild.engine.memory import LayerUse, plan_memory


def _lifetimes(layers: list[LayerUse], inputs: list[str], outputs: list[str]) -> dict[str, tuple[int, int]]:
    first = {t: -1 for t in inputs}
    last: dict[str, int] = {}
    for i, layer in enumerate(layers):
        for t in layer.inputs:
            last[t] = i
        for t in layer.outputs:
            first[t] = i
    for t in outputs:
        last[t] = len(layers)
    return {t: (first[t], last.get(t, first[t])) for t in first}


@st.composite
def chains(draw):  # type: ignore[no-untyped-def]
    """Random DAGs: each layer reads one or two earlier tensors and writes one new one."""
    n = draw(st.integers(1, 12))
    names = ["in"]
    sizes = {"in": draw(st.integers(1, 5000))}
    layers = []
    for i in range(n):
        reads = draw(st.lists(st.sampled_from(names), min_size=1, max_size=2, unique=True))
        out = f"t{i}"
        sizes[out] = draw(st.integers(1, 5000))
        layers.append(LayerUse(tuple(reads), (out,), False, draw(st.integers(0, 999))))
        names.append(out)
    outputs = draw(st.lists(st.sampled_from(names[1:]), min_size=1, max_size=3, unique=True))
    return sizes, layers, outputs


@settings(max_examples=200, deadline=None)
@given(chains())
def test_live_tensors_never_overlap(case) -> None:  # type: ignore[no-untyped-def]
    sizes, layers, outputs = case
    plan = plan_memory(sizes, layers, ["in"], outputs)
    life = _lifetimes(layers, ["in"], outputs)
    names = sorted(sizes)
    for i, a in enumerate(names):
        assert plan.offsets[a] % plan.alignment == 0
        assert plan.offsets[a] + sizes[a] <= plan.activation_bytes
        for b in names[i + 1:]:
            (fa, la), (fb, lb) = life[a], life[b]
            if fa <= lb and fb <= la:  # alive together
                assert (plan.offsets[a] + sizes[a] <= plan.offsets[b]
                        or plan.offsets[b] + sizes[b] <= plan.offsets[a]), (a, b, plan)
    assert plan.workspace_offset == plan.activation_bytes
    assert plan.workspace_bytes >= max(layer.workspace_bytes for layer in layers)
    assert plan_memory(sizes, layers, ["in"], outputs) == plan  # a pure function


def test_aliases_share_bytes_and_extend_lifetimes() -> None:
    sizes = {"x": 400, "r": 400, "y": 400, "z": 400}
    layers = [LayerUse(("x",), ("r",), aliases_input=True), LayerUse(("r",), ("y",)), LayerUse(("y",), ("z",))]
    plan = plan_memory(sizes, layers, ["x"], ["z"])
    assert plan.offsets["r"] == plan.offsets["x"]
    assert plan.offsets["y"] != plan.offsets["x"]
    assert plan.offsets["z"] == plan.offsets["x"]  # x/r are dead once y is written, so z may reuse them
    assert plan.unshared_bytes > plan.activation_bytes
