"""Finds Softmax over the last axis, with or without the NaN guard some exporters add.

Alternatives, anchored at the ``Softmax`` node:

* ``Softmax(x, axis=-1)`` (or axis = rank - 1);
* ``Where(IsNaN(s), 0, s)`` around ``s = Softmax(x)``, which PyTorch's scaled-dot-product
  attention exports to turn the NaN of a fully masked row into zeros.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx_graphsurgeon as gs

from bct_onnx.graph import consumers
from bct_onnx.passes.matching import NoMatch, is_scalar, value_rank


@dataclass(frozen=True)
class SoftmaxMatch:
    """A Softmax over the last axis of ``input``."""

    input: gs.Tensor
    output: gs.Tensor
    nodes: tuple[gs.Node, ...]


def match_softmax(node: gs.Node) -> SoftmaxMatch | NoMatch:
    """Return the Softmax anchored at ``node``, or why there is none."""
    if node.op != "Softmax":
        return NoMatch("not a Softmax anchor", node.name)
    x = node.inputs[0]
    rank = value_rank(x)
    axis = node.attrs.get("axis", -1)
    if axis != -1 and (rank is None or axis != rank - 1):
        return NoMatch(f"Softmax over axis {axis}, not the last axis", node.name)
    guard = _nan_guard(node.outputs[0])
    if guard is not None:
        return SoftmaxMatch(x, guard[-1].outputs[0], (node, *guard))
    return SoftmaxMatch(x, node.outputs[0], (node,))


def _nan_guard(probabilities: gs.Tensor) -> tuple[gs.Node, gs.Node] | None:
    """Return (IsNaN, Where) when the only readers of ``probabilities`` form the NaN guard."""
    readers = consumers(probabilities)
    is_nan = next((reader for reader in readers if reader.op == "IsNaN"), None)
    where = next((reader for reader in readers if reader.op == "Where"), None)
    if len(readers) != 2 or is_nan is None or where is None:
        return None
    condition, fallback, kept = where.inputs
    if condition is not is_nan.outputs[0] or kept is not probabilities or not is_scalar(fallback, 0.0):
        return None
    return (is_nan, where)
