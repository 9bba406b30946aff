"""Indexing: Slice and Split (``_index_slice``), the gathers Gather, GatherElements, GatherND, Compress and
NonZero (``_index_gather``), and the scatters Scatter, ScatterElements, ScatterND and TensorScatter
(``_index_scatter``).

What decides an output shape (Slice's starts/ends/axes/steps, Split's sizes, Compress's condition) must be known
when the engine is built and becomes canonical attributes; index tensors stay run-time inputs. Scatters with
repeated indices apply their updates in index order, deterministically and without atomics.
"""

from __future__ import annotations

from reprobuild.layers._index_gather import Compress, Gather, GatherElements, GatherND
from reprobuild.layers._index_scatter import ScatterElements, ScatterND, TensorScatter
from reprobuild.layers._index_slice import Slice, Split

LAYERS = (Compress(), Gather(), GatherElements(), GatherND(), ScatterElements(), ScatterND(), Slice(), Split(),
          TensorScatter())
