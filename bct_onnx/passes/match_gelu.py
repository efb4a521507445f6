"""Finds GELU in the forms exporters write it.

Alternatives, each anchored at one node:

* ``Gelu`` (ONNX opset 20, ``approximate`` "none" or "tanh");
* ``com.microsoft`` ``Gelu``, ``FastGelu`` (tanh form, optional bias) and ``BiasGelu``;
* the erf form ``x · 0.5 · (1 + Erf(x / √2))``, with ``Div(√2)`` or ``Mul(1/√2)`` and the two
  multiplications in any order, anchored at ``Erf``;
* the tanh form ``x · 0.5 · (1 + Tanh(√(2/π) · (x + 0.044715 · x³)))``, anchored at ``Tanh``.

A match carries the input ``x`` (and a bias to add first, for the fused contrib ops), the final
output value and every node the subgraph consists of.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import onnx_graphsurgeon as gs

from bct_onnx.passes.matching import NoMatch, is_scalar, other_input, produced_by, sole_consumer

MICROSOFT_DOMAIN = "com.microsoft"
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


@dataclass(frozen=True)
class GeluMatch:
    """A GELU subgraph: ``output = gelu(input + bias)``."""

    input: gs.Tensor
    bias: gs.Tensor | None
    output: gs.Tensor
    nodes: tuple[gs.Node, ...]
    approximation: str  # "none" (erf) or "tanh"


def match_gelu(node: gs.Node) -> GeluMatch | NoMatch:
    """Return the GELU subgraph anchored at ``node``, or why there is none."""
    if node.op == "Gelu" and node.domain in (None, "", "ai.onnx"):
        return GeluMatch(node.inputs[0], None, node.outputs[0], (node,), node.attrs.get("approximate", "none"))
    if node.domain == MICROSOFT_DOMAIN and node.op in ("Gelu", "FastGelu", "BiasGelu"):
        bias = node.inputs[1] if len(node.inputs) > 1 else None
        form = "tanh" if node.op == "FastGelu" else "none"
        return GeluMatch(node.inputs[0], bias, node.outputs[0], (node,), form)
    if node.op == "Erf":
        return _match_erf_form(node)
    if node.op == "Tanh":
        return _match_tanh_form(node)
    return NoMatch("not a GELU anchor", node.name)


def _match_erf_form(erf: gs.Node) -> GeluMatch | NoMatch:
    scaling = produced_by(erf.inputs[0], ("Div", "Mul"))
    if scaling is None:
        return NoMatch("Erf input is not x / sqrt(2)", erf.name)
    x = _scaled_input(scaling, math.sqrt(2.0))
    if x is None:
        return NoMatch("Erf input is not x / sqrt(2) or x * (1 / sqrt(2))", scaling.name)
    outer = _match_outer(erf, x)
    if isinstance(outer, NoMatch):
        return outer
    output, nodes = outer
    return GeluMatch(x, None, output, (scaling, erf, *nodes), "none")


def _match_tanh_form(tanh: gs.Node) -> GeluMatch | NoMatch:
    scale = produced_by(tanh.inputs[0], "Mul")
    if scale is None:
        return NoMatch("Tanh input is not a product", tanh.name)
    inner_sum = next(
        (value for value in scale.inputs
         if produced_by(value, "Add") is not None and is_scalar(other_input(scale, value), SQRT_2_OVER_PI)),
        None,
    )
    if inner_sum is None:
        return NoMatch("Tanh input is not sqrt(2/pi) * (x + 0.044715 x^3)", scale.name)
    add = produced_by(inner_sum, "Add")
    for x in add.inputs:
        cubic_term = other_input(add, x)
        cubic = _cubic_nodes(cubic_term, x) if cubic_term is not None else None
        if cubic is not None:
            outer = _match_outer(tanh, x)
            if isinstance(outer, NoMatch):
                return outer
            output, nodes = outer
            return GeluMatch(x, None, output, (*cubic, add, scale, tanh, *nodes), "tanh")
    return NoMatch("Tanh input is not sqrt(2/pi) * (x + 0.044715 x^3)", add.name)


def _scaled_input(node: gs.Node, sqrt_two: float) -> gs.Tensor | None:
    """Return x from ``Div(x, √2)`` or ``Mul(x, 1/√2)``."""
    if node.op == "Div" and is_scalar(node.inputs[1], sqrt_two):
        return node.inputs[0]
    if node.op == "Mul":
        for value in node.inputs:
            if is_scalar(other_input(node, value), 1.0 / sqrt_two):
                return value
    return None


def _cubic_nodes(value: gs.Tensor, x: gs.Tensor) -> tuple[gs.Node, ...] | None:
    """Return the nodes of ``0.044715 · x³`` (``Pow(x, 3)`` or ``x · x · x``), or None."""
    scale = produced_by(value, "Mul")
    if scale is None:
        return None
    for cube in scale.inputs:
        if not is_scalar(other_input(scale, cube), 0.044715):
            continue
        power = produced_by(cube, "Pow")
        if power is not None and power.inputs[0] is x and is_scalar(power.inputs[1], 3.0):
            return (power, scale)
        product = produced_by(cube, "Mul")
        square = produced_by(other_input(product, x), "Mul") if product is not None and x in product.inputs else None
        if square is not None and list(square.inputs) == [x, x]:
            return (square, product, scale)
    return None


def _match_outer(core: gs.Node, x: gs.Tensor) -> tuple[gs.Tensor, tuple[gs.Node, ...]] | NoMatch:
    """Match ``x · 0.5 · (1 + core(...))`` after the Erf or Tanh node, in any product order."""
    add = sole_consumer(core.outputs[0], "Add")
    if add is None or not is_scalar(other_input(add, core.outputs[0]), 1.0):
        return NoMatch("1 + erf/tanh(...) not found", core.name)
    first = sole_consumer(add.outputs[0], "Mul")
    if first is None:
        return NoMatch("(1 + erf/tanh(...)) is not multiplied", add.name)
    factor = other_input(first, add.outputs[0])
    if factor is x:  # (x · (1 + t)) · 0.5
        second = sole_consumer(first.outputs[0], "Mul")
        if second is not None and is_scalar(other_input(second, first.outputs[0]), 0.5):
            return second.outputs[0], (add, first, second)
    half = produced_by(factor, "Mul")
    if half is not None and x in half.inputs and is_scalar(other_input(half, x), 0.5):  # (x · 0.5) · (1 + t)
        return first.outputs[0], (add, half, first)
    if is_scalar(factor, 0.5):  # x · ((1 + t) · 0.5)
        second = sole_consumer(first.outputs[0], "Mul")
        if second is not None and other_input(second, first.outputs[0]) is x:
            return second.outputs[0], (add, first, second)
    return NoMatch("x * 0.5 * (1 + erf/tanh(...)) not found", first.name)
