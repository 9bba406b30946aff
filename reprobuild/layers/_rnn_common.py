"""What RNN, GRU and LSTM share: attributes, conversion to the canonical layer, shape rules, and the time loop.

Canonical attributes: ``direction``, ``hidden_size``, ``layout``, ``clip`` (0.0: none), the complete
``activations`` / ``activation_alpha`` / ``activation_beta`` lists (see ``_rnn_act``), ``optional`` (the names
of the optional inputs present, in input order: the layer's inputs are X, W, R and those) and ``outputs`` (the
names of the outputs the layer computes, in order: Y, Y_h, Y_c or a subset). A node that reads Y_h but leaves Y
unnamed (ONNX's usual form) becomes a layer that computes Y_h only.

The loop runs over the static sequence length; both directions advance together. ``sequence_lens`` may be a
run-time input: steps past a batch entry's length leave its state unchanged and write zeros to Y, and the reverse
direction reads each entry's valid steps backwards (an index map computed on the device, no host transfer). An
entry of length 0 gets zeros in Y_h and Y_c (onnxruntime's choice; ONNX does not say).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from reprobuild.core.dtypes import FLOATS
from reprobuild.layers._rnn_act import ACTIVATIONS, activation
from reprobuild.layers.base import Attrs, LayerDef, OpError, TensorType

_DIRECTIONS = {"forward": 1, "reverse": 1, "bidirectional": 2}


class Recurrent(LayerDef):
    """Base of RNN, GRU and LSTM: subclasses set ``gates``, ``default_activations``, ``optional_inputs`` and
    implement ``step``."""

    dtypes = FLOATS
    gates: ClassVar[int]
    default_activations: ClassVar[tuple[str, ...]]
    optional_inputs: ClassVar[tuple[str, ...]] = ("B", "sequence_lens", "initial_h")
    extra_attrs: ClassVar[tuple[str, ...]] = ()

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        x, w, r = inputs[0], inputs[1], inputs[2]
        dtype, hidden, gates = x.dtype, int(attrs["hidden_size"]), self.gates
        if attrs["direction"] not in _DIRECTIONS or attrs["layout"] not in (0, 1):
            raise OpError(f"direction {attrs['direction']!r} or layout {attrs['layout']!r} is not one of "
                          f"{sorted(_DIRECTIONS)} and 0 or 1")
        dirs = _DIRECTIONS[attrs["direction"]]
        per = dirs * len(self.default_activations)
        names = tuple(attrs["activations"])
        if any(len(tuple(attrs[k])) != per for k in ("activations", "activation_alpha", "activation_beta")) or \
                any(n not in ACTIVATIONS for n in names):
            raise OpError(f"activations, activation_alpha and activation_beta hold one entry each for the {per} "
                          f"activations of {dirs} direction(s), each one of {sorted(ACTIVATIONS)}; got "
                          f"{list(names)}")
        unknown = [o for o in attrs["outputs"] if o not in ("Y", "Y_h", "Y_c")] + \
            [o for o in attrs["optional"] if o not in self.optional_inputs]
        if unknown or len(attrs["optional"]) != len(inputs) - 3:
            raise OpError(f"outputs {list(attrs['outputs'])} and optional inputs {list(attrs['optional'])} must "
                          f"name this op's outputs and its {len(inputs) - 3} optional inputs")
        if x.rank != 3:
            raise OpError(f"X should have rank 3; got {list(x.shape)}")
        seq, batch = (x.shape[0], x.shape[1]) if attrs["layout"] == 0 else (x.shape[1], x.shape[0])
        expected = {"W": (dirs, gates * hidden, x.shape[2]), "R": (dirs, gates * hidden, hidden),
                    "B": (dirs, 2 * gates * hidden), "sequence_lens": (batch,),
                    "initial_h": (dirs, batch, hidden) if attrs["layout"] == 0 else (batch, dirs, hidden),
                    "P": (dirs, 3 * hidden)}
        expected["initial_c"] = expected["initial_h"]
        for name, t in zip(("W", "R", *attrs["optional"]), (w, r, *inputs[3:])):
            if t.shape != expected[name]:
                raise OpError(f"{name} has shape {list(t.shape)}; expected {list(expected[name])} "
                              f"(direction={attrs['direction']}, hidden_size={hidden}, layout={attrs['layout']})")
            want = ("int32", "int64") if name == "sequence_lens" else (dtype,)
            if t.dtype not in want:
                raise OpError(f"{name} has dtype {t.dtype}; expected {' or '.join(want)}")
        if seq < 1:
            raise OpError(f"X {list(x.shape)} has an empty sequence")
        shapes = {"Y": (seq, dirs, batch, hidden) if attrs["layout"] == 0 else (batch, seq, dirs, hidden),
                  "Y_h": expected["initial_h"], "Y_c": expected["initial_h"]}
        return [TensorType(shapes[o], dtype) for o in attrs["outputs"]]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        dtype = inputs[0].dtype
        work = xp.float64 if dtype == xp.float64 else xp.float32
        layout, hidden, gates = int(attrs["layout"]), int(attrs["hidden_size"]), self.gates
        dirs = _DIRECTIONS[attrs["direction"]]
        given = {k: v.astype(work) if k != "sequence_lens" else v for k, v in zip(attrs["optional"], inputs[3:])}
        x, w, r = (a.astype(work) for a in inputs[:3])
        if layout == 1:  # batch-major: computed time-major, transposed back at the end
            x = xp.swapaxes(x, 0, 1)
            given.update({k: xp.swapaxes(given[k], 0, 1) for k in ("initial_h", "initial_c") if k in given})
        seq, batch = x.shape[0], x.shape[1]
        zeros = xp.zeros((dirs, batch, hidden), dtype=work)
        b = given.get("B", xp.zeros((dirs, 2 * gates * hidden), dtype=work))
        lengths: Any = given.get("sequence_lens")
        mask, rev_index = time_mask(xp, lengths, seq, batch)

        # the input projection of every step at once, each direction reading its own order of the steps
        ordered = [x if self.direction_of(attrs, d) == "forward" else reversed_steps(xp, x, rev_index)
                   for d in range(dirs)]
        xw = xp.matmul(xp.stack(ordered), xp.swapaxes(w, 1, 2)[:, None]) + b[:, None, None, : gates * hidden]
        r_t, rb = xp.swapaxes(r, 1, 2), b[:, None, gates * hidden:]  # (D, H, G*H), (D, 1, G*H)
        acts = self.activations(xp, attrs, dirs)
        h, c = given.get("initial_h", zeros), given.get("initial_c", zeros)
        ys = []
        for t in range(seq):  # (D, B, H) states; a step past an entry's length keeps its state
            h_new, c_new = self.step(xp, xw[:, t], h, c, r_t, rb, attrs, acts, given)
            if c_new is None:
                c_new = c
            if mask is not None:
                m = mask[t][None, :, None]
                h_new, c_new = xp.where(m, h_new, h), xp.where(m, c_new, c)
            h, c = h_new, c_new
            if "Y" in attrs["outputs"]:
                ys.append(h if mask is None else xp.where(m, h, zeros))
        if mask is not None:  # an entry of length 0 ends with zero states, as onnxruntime has it
            started = (lengths > 0)[None, :, None]
            h, c = xp.where(started, h, zeros), xp.where(started, c, zeros)
        results = {"Y_h": h, "Y_c": c}
        if ys:
            y = xp.stack(ys)  # (T, D, B, H), each direction in its own step order
            results["Y"] = xp.stack([y[:, d] if self.direction_of(attrs, d) == "forward" else
                                     reversed_steps(xp, y[:, d], rev_index, mask) for d in range(dirs)], axis=1)
        if layout == 1:
            results = {k: xp.transpose(v, (2, 0, 1, 3)) if k == "Y" else xp.swapaxes(v, 0, 1)
                       for k, v in results.items()}
        return [xp.ascontiguousarray(results[o]).astype(dtype) for o in attrs["outputs"]]

    @staticmethod
    def direction_of(attrs: Attrs, d: int) -> str:
        if attrs["direction"] == "bidirectional":
            return ("forward", "reverse")[d]
        return str(attrs["direction"])

    def activations(self, xp: Any, attrs: Attrs, dirs: int) -> list[list[Callable[[Any], Any]]]:
        """acts[k][d]: the k-th activation (f, g, h) of direction d."""
        per = len(self.default_activations)
        names, alphas, betas = attrs["activations"], attrs["activation_alpha"], attrs["activation_beta"]
        return [[activation(xp, names[d * per + k], alphas[d * per + k], betas[d * per + k]) for d in range(dirs)]
                for k in range(per)]

    def step(self, xp: Any, xw: Any, h: Any, c: Any, r_t: Any, rb: Any, attrs: Attrs,
             acts: list[list[Callable[[Any], Any]]], given: dict[str, Any]) -> tuple[Any, Any]:
        """One time step: (new H, new C or None) from the step's input projection ``xw`` (D, B, G*H, with W's
        bias), the states, R^T (D, H, G*H), R's bias ``rb`` (D, 1, G*H) and the optional inputs ``given``."""
        raise NotImplementedError


def apply(xp: Any, fns: Sequence[Callable[[Any], Any]], x: Any, clip: float) -> Any:
    """``fns[d]`` applied to direction ``d`` of ``x`` (D, B, H), after clipping to [-clip, clip] when clip > 0."""
    if clip > 0:
        x = xp.clip(x, -clip, clip)
    if len(fns) == 1:
        return fns[0](x)
    return xp.stack([fn(x[d]) for d, fn in enumerate(fns)])


def time_mask(xp: Any, lengths: Any, seq: int, batch: int) -> tuple[Any, Any]:
    """(mask (T, B): step t is inside entry b's sequence; the reverse index map (T, B)), or (None, None) when
    there is no sequence_lens. Lengths outside [0, T] are clamped (onnxruntime rejects them)."""
    if lengths is None:
        return None, None
    steps = xp.asarray(np.arange(seq, dtype=np.int64))[:, None]
    lens = xp.clip(lengths.astype(xp.int64), 0, seq)[None, :]
    mask = steps < lens
    rev_index = xp.where(mask, lens - 1 - steps, steps)
    return mask, rev_index


def reversed_steps(xp: Any, x: Any, rev_index: Any, mask: Any = None) -> Any:
    """``x`` (T, B, ...) with each batch entry's valid steps in reverse order (all steps without lengths); with
    ``mask``, the steps past each entry's length are zeros."""
    if rev_index is None:
        return x[::-1]
    index = rev_index.reshape(rev_index.shape + (1,) * (x.ndim - 2))
    out = xp.take_along_axis(x, xp.broadcast_to(index, x.shape), axis=0)
    if mask is not None:
        out = xp.where(mask.reshape(index.shape), out, xp.zeros((), dtype=x.dtype))
    return out
