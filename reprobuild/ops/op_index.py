"""The ONNX half of :mod:`reprobuild.layers.op_index` (whose docstring says what the layers compute): the ONNX versions
each op implements, their attributes, and how a node becomes the canonical layer.
"""

from __future__ import annotations

from reprobuild.ops._index_gather import Compress, Gather, GatherElements, GatherND, NonZero
from reprobuild.ops._index_scatter import Scatter, ScatterElements, ScatterND, TensorScatter
from reprobuild.ops._index_slice import Slice, Split

OPS = (Compress(), Gather(), GatherElements(), GatherND(), NonZero(), Scatter(), ScatterElements(), ScatterND(),
       Slice(), Split(), TensorScatter())
