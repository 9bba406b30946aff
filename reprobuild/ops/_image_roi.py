"""The ONNX half of :mod:`reprobuild.layers._image_roi` (whose docstring says what the layers compute): the ONNX
versions each op implements, their attributes, and how a node becomes the canonical layer.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from reprobuild.layers._image_roi import box_geometry


def adaptive_grid(rois: np.ndarray, attrs: Any, work: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Per box, the sample points per bin along h and w for sampling_ratio=0 (0 for an empty box)."""
    _, _, bin_h, bin_w = box_geometry(np, rois, attrs, np.dtype(work).type)
    return (tuple(max(0, math.ceil(float(v))) for v in bin_h), tuple(max(0, math.ceil(float(v))) for v in bin_w))
