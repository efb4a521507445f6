"""Finds layer normalization over the last axis, as one op or decomposed.

Alternatives:

* ``LayerNormalization`` with ``axis`` -1 (or rank - 1), anchored at that node;
* the decomposition that exporters before opset 17 write, anchored at its ``Div``::

      mean = ReduceMean(x)         d = Sub(x, mean)
      var  = ReduceMean(Pow(d, 2) or Mul(d, d))
      y    = Div(d, Sqrt(Add(var, epsilon)))  [· gamma]  [+ beta]

A match carries x, gamma and beta as arrays (ones and zeros when absent), epsilon, the output
value and the nodes to replace.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from bct_onnx.graph import constant_array
from bct_onnx.passes.matching import (
    NoMatch,
    is_scalar,
    other_input,
    produced_by,
    reduces_last_axis,
    sole_consumer,
    value_rank,
)

DEFAULT_EPSILON = 1e-5  # the LayerNormalization default


@dataclass(frozen=True)
class LayerNormMatch:
    """A layer normalization over the last axis: ``output = (x - mean) / std · gamma + beta``."""

    input: gs.Tensor
    gamma: np.ndarray
    beta: np.ndarray
    epsilon: float
    output: gs.Tensor
    nodes: tuple[gs.Node, ...]


def match_layer_norm(node: gs.Node) -> LayerNormMatch | NoMatch:
    """Return the layer normalization anchored at ``node``, or why there is none."""
    if node.op == "LayerNormalization":
        return _match_op(node)
    if node.op == "Div":
        return _match_decomposed(node)
    return NoMatch("not a LayerNorm anchor", node.name)


def _match_op(node: gs.Node) -> LayerNormMatch | NoMatch:
    x = node.inputs[0]
    rank = value_rank(x)
    axis = node.attrs.get("axis", -1)
    if axis != -1 and (rank is None or axis != rank - 1):
        return NoMatch(f"normalizes from axis {axis}, not only the last axis", node.name)
    gamma = constant_array(node.inputs[1]) if len(node.inputs) > 1 else None
    beta = constant_array(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2].name else None
    if gamma is None or (len(node.inputs) > 2 and node.inputs[2].name and beta is None):
        return NoMatch("scale or bias is not constant", node.name)
    if len(node.outputs) > 1 and any(output.outputs for output in node.outputs[1:]):
        return NoMatch("mean or inverse std output is used", node.name)
    beta = np.zeros_like(gamma) if beta is None else beta
    epsilon = float(node.attrs.get("epsilon", DEFAULT_EPSILON))
    return LayerNormMatch(x, gamma, beta, epsilon, node.outputs[0], (node,))


def _match_decomposed(div: gs.Node) -> LayerNormMatch | NoMatch:
    centered, std = div.inputs
    sub = produced_by(centered, "Sub")
    sqrt = produced_by(std, "Sqrt")
    if sub is None or sqrt is None:
        return NoMatch("Div is not (x - mean) / sqrt(...)", div.name)
    x, mean = sub.inputs
    mean_node = produced_by(mean, "ReduceMean")
    if mean_node is None or mean_node.inputs[0] is not x or not reduces_last_axis(mean_node, value_rank(x)):
        return NoMatch("Sub does not subtract the last-axis mean of x", sub.name)
    add_epsilon = produced_by(sqrt.inputs[0], "Add")
    variance = _variance_node(add_epsilon, centered) if add_epsilon is not None else None
    if variance is None:
        return NoMatch("Sqrt input is not mean((x - mean)^2) + epsilon", sqrt.name)
    epsilon = float(constant_array(other_input(add_epsilon, variance[-1].outputs[0])).reshape(-1)[0])
    nodes = [mean_node, sub, *variance, add_epsilon, sqrt, div]
    output, gamma, beta = _affine_tail(div, nodes)
    channels = _channels(x, gamma, beta)
    if channels is None:
        return NoMatch("the channel count is unknown", div.name)
    gamma = np.ones(channels, np.float32) if gamma is None else np.broadcast_to(gamma, (channels,)).astype(np.float32)
    beta = np.zeros(channels, np.float32) if beta is None else np.broadcast_to(beta, (channels,)).astype(np.float32)
    return LayerNormMatch(x, gamma, beta, epsilon, output, tuple(nodes))


def _variance_node(add_epsilon: gs.Node, centered: gs.Tensor) -> tuple[gs.Node, ...] | None:
    """Return (square, ReduceMean) when ``add_epsilon`` is ``mean(centered²) + constant``."""
    for value in add_epsilon.inputs:
        mean = produced_by(value, "ReduceMean")
        epsilon = other_input(add_epsilon, value)
        if mean is None or constant_array(epsilon) is None:
            continue
        square = produced_by(mean.inputs[0], ("Pow", "Mul"))
        if square is None or not reduces_last_axis(mean, value_rank(centered)):
            continue
        if square.op == "Pow" and square.inputs[0] is centered and is_scalar(square.inputs[1], 2.0):
            return (square, mean)
        if square.op == "Mul" and list(square.inputs) == [centered, centered]:
            return (square, mean)
    return None


def _affine_tail(div: gs.Node, nodes: list[gs.Node]) -> tuple[gs.Tensor, np.ndarray | None, np.ndarray | None]:
    """Extend the match over a constant ``· gamma`` and ``+ beta`` after the Div."""
    output, gamma, beta = div.outputs[0], None, None
    scale = sole_consumer(output, "Mul")
    if scale is not None and constant_array(other_input(scale, output)) is not None:
        gamma = constant_array(other_input(scale, output))
        nodes.append(scale)
        output = scale.outputs[0]
    shift = sole_consumer(output, "Add")
    if shift is not None and constant_array(other_input(shift, output)) is not None:
        beta = constant_array(other_input(shift, output))
        nodes.append(shift)
        output = shift.outputs[0]
    return output, gamma, beta


def _channels(x: gs.Tensor, gamma: np.ndarray | None, beta: np.ndarray | None) -> int | None:
    shape = getattr(x, "shape", None)
    if shape and isinstance(shape[-1], int):
        return shape[-1]
    for array in (gamma, beta):
        if array is not None and array.size > 1:
            return array.size
    return None
