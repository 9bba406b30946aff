"""reprobuild.kernels: the tactic library (one module per op family, CUDA sources beside it)."""

from __future__ import annotations

from reprobuild.kernels.tactic import Determinism, LayerSpec, Tactic, TacticRegistry, TensorSig

__all__ = ["Determinism", "LayerSpec", "Tactic", "TacticRegistry", "TensorSig"]
