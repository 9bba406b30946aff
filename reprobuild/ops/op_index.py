"""Indexing: Slice and Split (``_index_slice``), the gathers Gather, GatherElements, GatherND, Compress and
NonZero (``_index_gather``), and the scatters Scatter, ScatterElements, ScatterND and TensorScatter
(``_index_scatter``).

What decides an output shape (Slice's starts/ends/axes/steps, Split's sizes, Compress's condition) must be known
when the engine is built and becomes canonical attributes; index tensors stay run-time inputs. Scatters with
repeated indices apply their updates in index order, deterministically and without atomics.
"""

from __future__ import annotations

from reprobuild.ops._index_gather import Compress, Gather, GatherElements, GatherND, NonZero
from reprobuild.ops._index_scatter import Scatter, ScatterElements, ScatterND, TensorScatter
from reprobuild.ops._index_slice import Slice, Split

OPS = (Compress(), Gather(), GatherElements(), GatherND(), NonZero(), Scatter(), ScatterElements(), ScatterND(),
       Slice(), Split(), TensorScatter())
