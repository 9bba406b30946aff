"""The ONNX half of :mod:`reprobuild.layers._norm_stats` (whose docstring says what the layers compute): the ONNX
versions each op implements, their attributes, and how a node becomes the canonical layer.
"""

from __future__ import annotations

import numpy as np

#: The default epsilon, 1e-5 as the float32 ONNX stores: an omitted and a given default agree.
EPSILON = float(np.float32(1e-5))
