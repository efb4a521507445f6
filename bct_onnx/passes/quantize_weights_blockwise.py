"""Replaces constant MatMul and Gemm weights with blockwise low-bit codes and a DequantizeLinear.

Matched and rewritten::

    X ──► MatMul ◄── W (float constant, [K, N])

    X ──► MatMul ◄── DequantizeLinear(axis=0, block_size=B) ◄── W_q (INT4/INT8, [K, N])
                          ▲                                      scale ([ceil(K/B), N])
                          └── scale ◄── DequantizeLinear(axis=0) ◄── scale codes (UINT8)
                                                                      scale of scales ([ceil(K/B)])

Blocks run along the reduction axis K (axis 1 of a Gemm weight with ``transB=1``), so every block
is one slice of a dot product and its scale factors out of that slice's sum. The lower branch
exists only with ``ScaleFormat.UINT8``; otherwise the scale is a float16 or float32 constant.

Limitations: weights of more than two dimensions, and MatMuls whose constant is the first input,
are left in float.
"""

from __future__ import annotations

import fnmatch
import logging
from collections import Counter

import numpy as np
import onnx_graphsurgeon as gs

from bct_onnx.graph import NodeFactory, constant_array, producer
from bct_onnx.passes.base import GraphPass, PassContext, PassResult
from bct_onnx.passes.quantized_values import build_scale, make_report, quantize_along_axis

logger = logging.getLogger(__name__)

FLOAT_TYPES = (np.float32, np.float16)


def weight_reduction_axis(node: gs.Node) -> int | None:
    """Return the reduction axis of a MatMul or Gemm node's second input, None for other ops."""
    if node.op == "MatMul":
        return 0
    if node.op == "Gemm":
        return 1 if node.attrs.get("transB", 0) else 0
    return None


def explain_weight_skip(node: gs.Node, config_exclude: tuple[str, ...]) -> str | None:
    """Return why the weight of a MatMul or Gemm node stays in float, or None if it is compressed."""
    if len(node.inputs) < 2:
        return "no second input"
    weight = node.inputs[1]
    values = constant_array(weight)
    if values is None:
        source = producer(weight)
        if source is not None and source.op in ("DequantizeLinear", "Cast"):
            return f"second input comes from a {source.op} (already quantized?), not a float constant"
        return "second input is computed, not constant"
    if values.ndim != 2:
        return f"weight has {values.ndim} dimensions, not 2"
    if values.dtype not in FLOAT_TYPES:
        return f"weight type is {values.dtype}, not float32 or float16"
    if values.size == 0:
        return "weight is empty"
    if is_excluded(config_exclude, node.name, weight.name):
        return "excluded by a pattern"
    return None


def compensated_input(node: gs.Node) -> gs.Tensor | None:
    """Return the input that a MatMul/Gemm weight multiplies along its reduction axis, or None.

    None for a Gemm with ``transA=1``, whose input vectors do not run along its last axis.
    """
    if node.op == "Gemm" and node.attrs.get("transA", 0):
        return None
    return node.inputs[0]


def is_excluded(patterns: tuple[str, ...], *names: str) -> bool:
    """Return True when any fnmatch pattern matches any of ``names``."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns for name in names)


class QuantizeWeightsBlockwise(GraphPass):
    """Compresses every constant 2-D MatMul/Gemm weight to blockwise INT4 or INT8 codes."""

    name = "quantize_weights_blockwise"

    def run(self, context: PassContext) -> PassResult:
        config = context.config
        factory = NodeFactory(context.graph, self.name)
        dequantized: dict[str, gs.Tensor] = {}  # weight name -> its DequantizeLinear output
        skipped: Counter[str] = Counter()

        for node in list(context.graph.nodes):
            axis = weight_reduction_axis(node)
            if axis is None:
                continue
            reason = explain_weight_skip(node, config.exclude)
            if reason is not None:
                logger.debug("%s %s left in float: %s", node.op, node.name, reason)
                skipped[reason] += 1
                continue
            weight = node.inputs[1]
            if weight.name not in dequantized:
                dequantized[weight.name] = self._dequantize_weight(weight, node, axis, context, factory)
            node.inputs[1] = dequantized[weight.name]

        context.created_by.update(factory.created_by)
        return PassResult(self.name, len(dequantized), dict(skipped))

    def _dequantize_weight(
        self, weight: gs.Constant, node: gs.Node, axis: int, context: PassContext, factory: NodeFactory
    ) -> gs.Tensor:
        values = np.asarray(weight.values)
        source = compensated_input(node)
        moments = context.weight_input_moments.get(source.name) if source is not None else None
        quantized = quantize_along_axis(
            values, axis, context.config, bits=context.config.weight_bits, name=weight.name, input_covariance=moments
        )
        kind = node.op.lower()
        context.tensor_reports.append(make_report(weight.name, kind, values, quantized, context.config))

        anchor = weight.name
        codes = factory.constant(anchor, "codes", quantized.codes_for_onnx())
        scale = build_scale(factory, anchor, quantized, context.config)
        inputs = [codes, scale]
        if quantized.zero_point is not None:
            inputs.append(factory.constant(anchor, "zero_point", quantized.zero_point_for_onnx()))
        attrs = {"axis": axis, "block_size": quantized.block_size}
        return factory.node("DequantizeLinear", anchor, inputs, attrs=attrs)
