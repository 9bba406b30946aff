"""(being written)"""

from __future__ import annotations

OPS: tuple = ()
