"""Layer definitions, the runtime half of the ops: one module per op family (``op_*.py``, listed in
``_layer_list.py``), each layer's type inference, constant checks and NumPy/CuPy reference computation.

See :mod:`reprobuild.layers.base` for what a definition holds, :mod:`reprobuild.layers.families` for the family
base classes that make a new elementwise layer a few lines, and :mod:`reprobuild.ops` for how ONNX nodes become
layers. A runtime imports this package, never ``reprobuild.ops``.
"""

from __future__ import annotations

from reprobuild.layers.base import Attrs, LayerDef, OpError, TensorType
from reprobuild.layers.registry import all_layers, find_layer

__all__ = ["Attrs", "LayerDef", "OpError", "TensorType", "all_layers", "find_layer"]
