"""An example plugin: the op ``com.example::ScaledTanh``, ``y = alpha * tanh(beta * x)`` elementwise (LeCun's
scaled tanh has alpha=1.7159, beta=2/3), with two CPU tactics that the builder times like built-in ones.

Importing this module registers nothing. Register the plugin explicitly::

    from reprobuild.registry.plugins import registered
    from examples.plugins.scaled_tanh import PLUGIN

    with registered(PLUGIN):
        ...  # parse, build, load engines that use ScaledTanh

The tactics' family is the plugin's own (``com.example.scaled_tanh``): a plugin may not add to built-in families.
Their identity (``code_sha256``) covers this module's code they run, so editing a tactic without bumping its
``version`` makes every engine pinned to it refuse to load.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from reprobuild.kernels.backend import Backend
from reprobuild.kernels.tactic import Kernel, LayerSpec, Tactic
from reprobuild.ops import Attr, Attrs, OpDef, TensorType
from reprobuild.registry.plugins import Plugin

DOMAIN = "com.example"


class ScaledTanh(OpDef):
    """``alpha * tanh(beta * x)``: one input, one output of the same shape and dtype."""

    op, domain, versions = "ScaledTanh", DOMAIN, (1,)
    attributes = {"alpha": Attr("float", 1.0), "beta": Attr("float", 1.0)}
    dtypes = ("float32", "float64")

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        return [inputs[0]]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        x = inputs[0]
        alpha, beta = x.dtype.type(attrs["alpha"]), x.dtype.type(attrs["beta"])
        return [alpha * xp.tanh(beta * x)]


class _ScaledTanhTactic(Tactic):
    family, backend, source = "com.example.scaled_tanh", "cpu", "numpy"
    ops = (f"{DOMAIN}::ScaledTanh",)
    dtypes = ("float32",)

    @staticmethod
    def _scales(layer: LayerSpec) -> tuple[np.float32, np.float32]:
        return np.float32(layer.attr("alpha", 1.0)), np.float32(layer.attr("beta", 1.0))


class CpuTanh(_ScaledTanhTactic):
    """NumPy's tanh, in place in the output buffer."""

    name = "cpu_tanh"

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        alpha, beta = self._scales(layer)

        def run(inputs: Sequence[Any], outputs: Sequence[Any], workspace: Any) -> None:
            np.multiply(inputs[0], beta, out=outputs[0])
            np.tanh(outputs[0], out=outputs[0])
            outputs[0] *= alpha

        return run


class CpuExp(_ScaledTanhTactic):
    """tanh(y) = 1 - 2 / (exp(2y) + 1): one exp (exp overflowing to inf gives 1, as tanh does)."""

    name = "cpu_exp"

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        alpha, beta = self._scales(layer)
        two = np.float32(2.0)

        def run(inputs: Sequence[Any], outputs: Sequence[Any], workspace: Any) -> None:
            y = outputs[0]
            with np.errstate(over="ignore"):
                np.multiply(inputs[0], two * beta, out=y)
                np.exp(y, out=y)
            y += np.float32(1.0)
            np.divide(two, y, out=y)
            np.subtract(np.float32(1.0), y, out=y)
            y *= alpha

        return run


#: The plugin, unregistered: pass it to ``reprobuild.registry.plugins.registered`` or ``plugin_registry().register``.
PLUGIN = Plugin(ScaledTanh(), (CpuExp(), CpuTanh()))
