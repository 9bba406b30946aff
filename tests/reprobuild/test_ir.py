"""The IR: immutability, topological order, structural identity that ignores names."""

from __future__ import annotations

import numpy as np
import pytest

from reprobuild.core.errors import ModelError
from reprobuild.ir import NetworkDefinition, TensorInfo


def _network(prefix: str = "", order: tuple[int, ...] = (0, 1, 2)):  # type: ignore[no-untyped-def]
    net = NetworkDefinition()
    net.add_input(prefix + "x", (2, 4))
    net.add_constant(prefix + "w", np.arange(8, dtype=np.float32).reshape(4, 2))
    layers = [
        (prefix + "mm", "MatMul", [prefix + "x", prefix + "w"], TensorInfo(prefix + "h", (2, 2), "float32")),
        (prefix + "r1", "Relu", [prefix + "h"], TensorInfo(prefix + "a", (2, 2), "float32")),
        (prefix + "r2", "Relu", [prefix + "a"], TensorInfo(prefix + "y", (2, 2), "float32")),
    ]
    for i in order:
        name, op, ins, out = layers[i]
        net.add_layer(name, op, ins, [out])
    net.mark_output(prefix + "y")
    return net.finalize()


def test_layers_come_out_topologically_sorted_whatever_order_they_were_added() -> None:
    assert [layer.name for layer in _network(order=(2, 1, 0)).layers] == ["mm", "r1", "r2"]


def test_structural_hash_and_keys_ignore_names() -> None:
    a, b = _network(), _network(prefix="renamed_")
    assert a.structural_hash == b.structural_hash
    assert a.layer_keys() == b.layer_keys()


def test_layer_keys_are_unique_even_for_identical_layers() -> None:
    keys = _network().layer_keys()
    assert len(set(keys)) == len(keys)


def test_structural_hash_changes_with_weights() -> None:
    net = NetworkDefinition()
    net.add_input("x", (2, 4))
    net.add_constant("w", np.ones((4, 2), dtype=np.float32))
    net.add_layer("mm", "MatMul", ["x", "w"], [TensorInfo("y", (2, 2), "float32")])
    net.mark_output("y")
    assert net.finalize().structural_hash != _network().structural_hash


def test_constants_are_read_only() -> None:
    with pytest.raises(ValueError):
        _network().constants["w"][0, 0] = 1.0


def test_cycles_and_dangling_inputs_are_model_errors() -> None:
    net = NetworkDefinition()
    net.add_input("x", (2,))
    net.add_layer("r", "Relu", ["nowhere"], [TensorInfo("y", (2,), "float32")])
    net.mark_output("y")
    with pytest.raises(ModelError, match=r"'r'.*nowhere"):
        net.finalize()
