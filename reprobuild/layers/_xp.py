"""What NumPy and CuPy do differently, behind one function each, for the ``compute`` of op definitions.

``compute(xp, attrs, *inputs)`` runs with ``xp`` = numpy on the CPU and cupy on a GPU. Most of the array API is
the same in both; the few functions that are not live here.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

_ERF = np.frompyfunc(math.erf, 1, 1)


def is_numpy(xp: Any) -> bool:
    return xp is np


def erf(xp: Any, x: Any) -> Any:
    """The error function, elementwise, in ``x``'s dtype. NumPy has none: the CPU uses the C library's ``erf``
    (``math.erf``, correctly rounded in double precision) element by element; CuPy uses CUDA's ``erf``."""
    if is_numpy(xp):
        return np.asarray(_ERF(np.asarray(x, dtype=np.float64)), dtype=np.float64).astype(x.dtype)
    from cupyx.scipy import special  # lazy: optional (the cuda extras); only CuPy arrays come here

    return special.erf(x)
