"""Quantizes the activations that MatMul, Gemm and residual additions read.

Inserted on each such float value ``v`` that is not already dequantized from integers::

    producer ──► v ──► Mul(2^shift) ──► QuantizeLinear ──► DequantizeLinear ──► Mul(2^-shift) ──► consumers

Scales are per channel along the last axis, constant over each block of channels, with block
scales powers of two apart (see ``bct_onnx.calibration``). A MatMul operand that reaches the
MatMul through layout-only ops (Reshape, Transpose, ...) is quantized where its last axis is
the widest static one, so the attention products Q·Kᵀ and P·V get one scale per head block of
the hidden axis rather than per dynamic sequence position. Values whose last axis is not
static get one scale for the whole tensor.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from bct_onnx.calibration import MAX_SHIFT, ActivationScales, CalibrationTarget, TargetKind
from bct_onnx.graph import NodeFactory, constant_array, producer
from bct_onnx.passes.base import GraphPass, PassContext, PassResult
from bct_onnx.passes.match_layer_norm import match_layer_norm

logger = logging.getLogger(__name__)

LAYOUT_OPS = ("Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten")


def activation_targets(graph: gs.Graph) -> list[CalibrationTarget]:
    """Return the float values this pass quantizes, with their scale layout."""
    targets: dict[str, CalibrationTarget] = {}
    for value in _quantized_values(graph):
        targets[value.name] = CalibrationTarget(value.name, _kind(value))
    return list(targets.values())


def _quantized_values(graph: gs.Graph) -> list[gs.Tensor]:
    values = []
    for node in graph.nodes:
        if node.op in ("MatMul", "Gemm"):
            operands = node.inputs[:2]
        elif node.op == "Add" and _feeds_layer_norm(node):
            operands = node.inputs
        else:
            continue
        for operand in operands:
            if constant_array(operand) is None and not _is_dequantized(operand):
                values.append(_widest_layout_source(operand))
    return values


def _feeds_layer_norm(add: gs.Node) -> bool:
    """Return True for a residual addition: an Add whose sum is normalized next."""
    return any(match_layer_norm(reader) or reader.op == "ReduceMean" for reader in add.outputs[0].outputs)


def _is_dequantized(value: gs.Tensor) -> bool:
    """Return True for a value that a DequantizeLinear (then per-channel Mul) gives, maybe reshaped."""
    node = producer(value)
    while node is not None and node.op in LAYOUT_OPS:
        node = producer(node.inputs[0])
    if node is not None and node.op == "Mul":  # the 2^-shift of per-channel scales
        node = producer(node.inputs[0])
    return node is not None and node.op == "DequantizeLinear"


def _widest_layout_source(value: gs.Tensor) -> gs.Tensor:
    """Walk back through single-reader layout ops; return the value with the widest static last axis."""
    best, best_width = value, _static_last_dim(value)
    node = producer(value)
    while node is not None and node.op in LAYOUT_OPS and len(node.inputs[0].outputs) == 1:
        value = node.inputs[0]
        width = _static_last_dim(value)
        if width > best_width:
            best, best_width = value, width
        node = producer(value)
    return best


def _static_last_dim(value: gs.Tensor) -> int:
    shape = getattr(value, "shape", None)
    if shape and isinstance(shape[-1], int):
        return shape[-1]
    return 0


def _kind(value: gs.Tensor) -> TargetKind:
    return TargetKind.CHANNELS if _static_last_dim(value) > 1 else TargetKind.TENSOR


class QuantizeActivations(GraphPass):
    """Inserts QuantizeLinear/DequantizeLinear with calibrated block scales on activations."""

    name = "quantize_activations"

    def run(self, context: PassContext) -> PassResult:
        if context.config.activation_bits is None:
            return PassResult(self.name, 0, {})
        factory = NodeFactory(context.graph, self.name)
        skipped: Counter[str] = Counter()
        done: set[str] = set()
        for value in _quantized_values(context.graph):
            if value.name in done:
                continue
            scales = context.activation_scales.get(value.name)
            if scales is None:
                skipped["not calibrated"] += 1
                continue
            insert_fake_quantization(factory, value, scales, context.config.activation_bits)
            done.add(value.name)
        context.created_by.update(factory.created_by)
        return PassResult(self.name, len(done), dict(skipped))


@dataclass(frozen=True)
class ScaleInput:
    """The scales of a QuantizeLinear/DequantizeLinear pair.

    ``scale`` is one float32 scalar: the tensor's scale, or with per-channel scales their base.
    Channel ``c`` then has scale ``base * 2**-shift[c]``, applied as a multiplication by
    ``2**shift`` before quantizing (``to_base``) and by ``2**-shift`` after dequantizing
    (``from_base``). Both are exact in float, so the codes and values are those of a per-channel
    QuantizeLinear/DequantizeLinear, which ONNX Runtime 1.32 runs about 50 times slower along the
    last axis.
    """

    scale: gs.Tensor
    to_base: gs.Tensor | None = None
    from_base: gs.Tensor | None = None


def insert_fake_quantization(factory: NodeFactory, value: gs.Tensor, scales: ActivationScales, bits: int) -> None:
    """Route every reader of ``value`` through QuantizeLinear → DequantizeLinear."""
    readers = list(value.outputs)
    scale = scale_input(factory, value.name, scales)
    quantized = quantize(factory, value, scale, bits)
    dequantized = dequantize(factory, value.name, quantized, scale)
    for reader in readers:
        for index, item in enumerate(reader.inputs):
            if item is value:
                reader.inputs[index] = dequantized


def scale_input(factory: NodeFactory, anchor: str, scales: ActivationScales) -> ScaleInput:
    """Return the scale inputs of ``scales``: a scalar, and per-channel powers of two if needed.

    The shifts are stored as one uint8 per channel and looked up in tables of the MAX_SHIFT + 1
    possible powers of two, which costs a quarter of a float32 vector on disk. ONNX Runtime folds
    the lookups into constants when the session starts.
    """
    if scales.shift.size == 1:
        return ScaleInput(factory.constant(anchor, "scale", np.array(scales.scale[0], np.float32)))
    base = factory.constant(anchor, "scale", np.array(scales.base_scale, np.float32))
    shift = factory.constant(anchor, "scale_shift", scales.shift.astype(np.uint8))
    index = factory.node("Cast", anchor, [shift], attrs={"to": onnx.TensorProto.INT64})
    powers = np.arange(MAX_SHIFT + 1, dtype=np.float64)
    up = factory.constant(anchor, "shift_up", np.exp2(powers).astype(np.float32))
    down = factory.constant(anchor, "shift_down", np.exp2(-powers).astype(np.float32))
    return ScaleInput(base, factory.node("Gather", anchor, [up, index]), factory.node("Gather", anchor, [down, index]))


def quantize(factory: NodeFactory, value: gs.Tensor, scale: ScaleInput, bits: int) -> gs.Tensor:
    """Return the int8 codes of ``value`` (clipped to ``bits`` bits) as a new value.

    The zero point is left out: with ``output_dtype`` INT8 it defaults to 0.
    """
    if scale.to_base is not None:
        value = factory.node("Mul", value.name, [value, scale.to_base])
    attrs = {"output_dtype": onnx.TensorProto.INT8}
    codes = factory.node("QuantizeLinear", value.name, [value, scale.scale], attrs=attrs)
    if bits < 8:
        low = factory.constant(value.name, "code_min", np.array(-(1 << (bits - 1)), np.int8))
        high = factory.constant(value.name, "code_max", np.array((1 << (bits - 1)) - 1, np.int8))
        codes = factory.node("Clip", value.name, [codes, low, high])
    return codes


def dequantize(
    factory: NodeFactory, anchor: str, codes: gs.Tensor, scale: ScaleInput, *, output: gs.Variable | None = None
) -> gs.Tensor:
    """Return ``codes`` times their per-channel (or per-tensor) scale; the zero point is 0."""
    if scale.from_base is None:
        return factory.node("DequantizeLinear", anchor, [codes, scale.scale], output=output)
    values = factory.node("DequantizeLinear", anchor, [codes, scale.scale])
    return factory.node("Mul", anchor, [values, scale.from_base], output=output)
