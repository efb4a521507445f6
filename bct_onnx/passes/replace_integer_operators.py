"""Replaces GELU, Softmax and LayerNorm with integer operators between calibrated quantizers.

Each matched subgraph ``x ──► [float op] ──► y`` becomes::

    x ──► QuantizeLinear ──► IntegerGelu / IntegerLayerNormalization ──► DequantizeLinear ──► y
    x ──► QuantizeLinear ──► IntegerSoftmax (UINT8, y = code / 255) ──► DequantizeLinear ──► y

The integer operators live in the ``ai.onnx.contrib`` domain. The model carries their ONNX
function bodies, so stock ONNX Runtime runs it, and ONNX Runtime uses the faster kernels of
``bct_onnx.integer_ops`` instead when their custom-op library is registered. GELU and
LayerNorm scale their input and output per channel (block scales powers of two apart); Softmax
scales its input per tensor, because the key axis it normalizes has no fixed length.

Limitations: the bias of ``BiasGelu``/``FastGelu`` is added in float before quantization, and
its input range is bounded by the calibrated range of x plus |bias|.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from bct_onnx import integer_ops
from bct_onnx.calibration import ActivationScales, CalibrationTarget, TargetKind, power_of_two_scales
from bct_onnx.config import IntegerOperator
from bct_onnx.graph import NodeFactory
from bct_onnx.passes.base import GraphPass, PassContext, PassResult
from bct_onnx.passes.match_gelu import GeluMatch, match_gelu
from bct_onnx.passes.match_layer_norm import LayerNormMatch, match_layer_norm
from bct_onnx.passes.match_softmax import SoftmaxMatch, match_softmax
from bct_onnx.passes.matching import NoMatch
from bct_onnx.passes.quantize_activations import dequantize, quantize, scale_input

logger = logging.getLogger(__name__)

# Fixed-point precision of IntegerLayerNormalization: the normalized value carries 16 fraction
# bits and gamma / output scale 16 more, the reference kernel's defaults.
FRACTION_BITS = 16
MULTIPLIER_BITS = 16

# Softmax outputs are probabilities stored as code / 255.
SOFTMAX_OUTPUT_SCALE = ActivationScales(base_scale=1.0 / 255.0, shift=np.zeros(1, np.int64))


@dataclass(frozen=True)
class _Rule:
    operator: IntegerOperator
    match: Callable[[gs.Node], object]


RULES = (
    _Rule(IntegerOperator.GELU, match_gelu),
    _Rule(IntegerOperator.SOFTMAX, match_softmax),
    _Rule(IntegerOperator.LAYER_NORM, match_layer_norm),
)


def find_matches(graph: gs.Graph, operators: frozenset[IntegerOperator]) -> list[object]:
    """Return every GELU, Softmax and LayerNorm match of the enabled ``operators``."""
    matches, claimed = [], set()
    for node in graph.nodes:
        for rule in RULES:
            if rule.operator not in operators:
                continue
            match = rule.match(node)
            if isinstance(match, NoMatch):
                continue
            if claimed.isdisjoint(id(member) for member in match.nodes):
                claimed.update(id(member) for member in match.nodes)
                matches.append(match)
            break
    return matches


def integer_operator_targets(graph: gs.Graph, operators: frozenset[IntegerOperator]) -> list[CalibrationTarget]:
    """Return the values whose ranges the integer operators need from calibration."""
    targets = []
    for match in find_matches(graph, operators):
        if isinstance(match, SoftmaxMatch):
            targets.append(CalibrationTarget(match.input.name, TargetKind.SOFTMAX_INPUT))
        else:
            targets.append(CalibrationTarget(match.input.name, TargetKind.CHANNELS))
            targets.append(CalibrationTarget(match.output.name, TargetKind.CHANNELS))
    return targets


class ReplaceIntegerOperators(GraphPass):
    """Rewrites every matched GELU, Softmax and LayerNorm into its integer operator."""

    name = "replace_integer_operators"

    def run(self, context: PassContext) -> PassResult:
        config = context.config
        if config.activation_bits is None or not config.integer_operators:
            return PassResult(self.name, 0, {})
        factory = NodeFactory(context.graph, self.name)
        counts: Counter[str] = Counter()
        skipped: Counter[str] = Counter()
        for match in find_matches(context.graph, config.integer_operators):
            reason = self._rewrite(match, context, factory)
            if reason is None:
                counts[type(match).__name__] += 1
            else:
                skipped[reason] += 1
        context.created_by.update(factory.created_by)
        context.functions.update(
            {op: integer_ops.function_proto(op) for op in integer_ops.OP_TYPES if _uses(context.graph, op)}
        )
        logger.info("integer operators: %s", dict(counts))
        return PassResult(self.name, sum(counts.values()), dict(skipped))

    def _rewrite(self, match: object, context: PassContext, factory: NodeFactory) -> str | None:
        scales = context.activation_scales
        names = [match.input.name] + ([] if isinstance(match, SoftmaxMatch) else [match.output.name])
        if any(name not in scales for name in names):
            return "not calibrated"
        for node in match.nodes:
            node.outputs.clear()
        if isinstance(match, GeluMatch):
            _rewrite_gelu(match, context, factory)
        elif isinstance(match, LayerNormMatch):
            _rewrite_layer_norm(match, context, factory)
        else:
            _rewrite_softmax(match, context, factory)
        return None


def _rewrite_gelu(match: GeluMatch, context: PassContext, factory: NodeFactory) -> None:
    anchor = match.output.name
    x, input_scales = match.input, context.activation_scales[match.input.name]
    if match.bias is not None:
        x = factory.node("Add", anchor, [x, match.bias])
        input_scales = _widen(input_scales, np.abs(np.asarray(match.bias.values, np.float32)))
    output_scales = context.activation_scales[match.output.name]
    codes = quantize(factory, x, scale_input(factory, anchor, input_scales), context.config.activation_bits)
    table, group = integer_ops.gelu_table(input_scales.scale, output_scales.scale)
    inputs = [codes, factory.constant(anchor, "gelu_table", table), compact_int64(factory, anchor, "gelu_group", group)]
    result = factory.node("IntegerGelu", anchor, inputs, domain=integer_ops.DOMAIN)
    dequantize(factory, anchor, result, scale_input(factory, anchor, output_scales), output=match.output)


def _rewrite_layer_norm(match: LayerNormMatch, context: PassContext, factory: NodeFactory) -> None:
    anchor = match.output.name
    input_scales = context.activation_scales[match.input.name]
    output_scales = context.activation_scales[match.output.name]
    codes = quantize(factory, match.input, scale_input(factory, anchor, input_scales), context.config.activation_bits)
    parameters = integer_ops.layer_norm_parameters(
        input_scales.shift, input_scales.base_scale, match.gamma, match.beta, output_scales.scale, match.epsilon
    )
    inputs = [
        codes,
        compact_int64(factory, anchor, "align", parameters.align),
        compact_int64(factory, anchor, "multiplier", parameters.multiplier),
        compact_int64(factory, anchor, "bias", parameters.bias),
        factory.constant(anchor, "epsilon_term", np.asarray(parameters.epsilon_term, np.int64)),
    ]
    # The onnxruntime-extensions kernel needs every attribute written out, defaults included.
    attrs = {"fraction_bits": FRACTION_BITS, "multiplier_bits": MULTIPLIER_BITS}
    result = factory.node("IntegerLayerNormalization", anchor, inputs, attrs=attrs, domain=integer_ops.DOMAIN)
    dequantize(factory, anchor, result, scale_input(factory, anchor, output_scales), output=match.output)


def _rewrite_softmax(match: SoftmaxMatch, context: PassContext, factory: NodeFactory) -> None:
    anchor = match.output.name
    input_scales = context.activation_scales[match.input.name]
    codes = quantize(factory, match.input, scale_input(factory, anchor, input_scales), context.config.activation_bits)
    table = factory.constant(anchor, "exp_table", integer_ops.softmax_table(float(input_scales.scale[0])))
    result = factory.node("IntegerSoftmax", anchor, [codes, table], domain=integer_ops.DOMAIN)
    dequantize(factory, anchor, result, scale_input(factory, anchor, SOFTMAX_OUTPUT_SCALE), output=match.output)


def compact_int64(factory: NodeFactory, anchor: str, suffix: str, values: np.ndarray) -> gs.Tensor:
    """Return int64 ``values`` stored in the narrowest integer type that can represent them, cast back.

    The operators take int64 inputs, but group indices, alignment factors and multipliers fit in
    8 to 32 bits; ONNX Runtime folds the Cast into a constant when the session starts.
    """
    for dtype in (np.uint8, np.int8, np.int16, np.int32):
        limits = np.iinfo(dtype)
        if values.size and limits.min <= values.min() and values.max() <= limits.max:
            stored = factory.constant(anchor, suffix, values.astype(dtype))
            return factory.node("Cast", anchor, [stored], attrs={"to": onnx.TensorProto.INT64})
    return factory.constant(anchor, suffix, values.astype(np.int64))


def _widen(scales: ActivationScales, extra: np.ndarray) -> ActivationScales:
    """Return scales whose ranges grow by ``extra`` per channel, kept powers of two apart."""
    q_max = 127.0
    widened = scales.scale + np.broadcast_to(extra, scales.scale.shape) / q_max
    return power_of_two_scales(widened, 1)


def _uses(graph: gs.Graph, op: str) -> bool:
    return any(node.op == op and node.domain == integer_ops.DOMAIN for node in graph.nodes)
