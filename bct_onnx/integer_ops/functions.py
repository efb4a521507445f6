"""ONNX function bodies of the integer operators, built from standard ONNX ops only.

A model that stores these FunctionProtos next to its ``ai.onnx.contrib`` nodes runs in stock
ONNX Runtime, which inlines the body. Each body performs exactly the steps of the NumPy kernel
of the same name in ``reference.py``, so both return the same bits.

Two facts about ONNX shape the bodies. Integer ``Div`` truncates toward zero in ONNX Runtime,
so a floor division of a possibly negative value is written as ``(a - Mod(a, b)) / b`` for
``b > 0`` (``Mod`` with ``fmod=0`` takes the divisor's sign). ``BitShift`` accepts only
unsigned types, so powers of two come from a constant table read with ``Gather``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from bct_onnx.integer_ops.reference import (
    CODES_PER_TABLE,
    DEFAULT_FRACTION_BITS,
    DEFAULT_MULTIPLIER_BITS,
    ISQRT_NEWTON_STEPS,
    NORMALIZED_VARIANCE_POWER_OF_FOUR,
    POWERS_OF_FOUR,
    POWERS_OF_TWO,
)

DOMAIN = "ai.onnx.contrib"
DOMAIN_VERSION = 1
OP_TYPES = ("IntegerGelu", "IntegerSoftmax", "IntegerLayerNormalization")

# ReduceMax takes its axes as an input from opset 18 on, and the bodies rely on that form.
MIN_OPSET = 18

AttributeValue = int | float | str | Mapping | onnx.TensorProto


class BodyBuilder:
    """Collects the nodes of one function body and gives each output a unique name."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []

    def add(self, op_type: str, inputs: list[str], attributes: Mapping[str, AttributeValue] | None = None) -> str:
        """Append one node and return the name of its only output."""
        output = f"{self.prefix}_{len(self.nodes)}_{op_type}"
        node = helper.make_node(op_type, inputs, [output], name=output, **dict(attributes or {}))
        self.nodes.append(node)
        return output

    def constant(self, value: np.ndarray) -> str:
        """Append a Constant node that produces ``value``."""
        return self.add("Constant", [], {"value": numpy_helper.from_array(np.asarray(value))})

    def attribute_constant(self, attribute: str) -> str:
        """Append a Constant node whose int64 scalar output is the function's attribute ``attribute``."""
        output = self.add("Constant", [])
        reference = onnx.AttributeProto()
        reference.name = "value_int"
        reference.ref_attr_name = attribute
        reference.type = onnx.AttributeProto.INT
        self.nodes[-1].attribute.append(reference)
        return output


def function_protos(opset: int = 21) -> list[onnx.FunctionProto]:
    """Build the function bodies of all three integer operators, importing the default domain at ``opset``.

    Pass the model's own default opset, so that the bodies and the graph use one version of
    each standard op. A model may also store only the bodies of the operators it uses.
    """
    return [function_proto(op_type, opset=opset) for op_type in OP_TYPES]


def function_proto(op_type: str, *, opset: int = 21) -> onnx.FunctionProto:
    """Build the function body of one integer operator (domain ``ai.onnx.contrib``)."""
    if op_type not in _BODY_BUILDERS:
        raise ValueError(f"unknown integer operator {op_type!r}; expected one of {', '.join(OP_TYPES)}")
    if not MIN_OPSET <= opset <= onnx.defs.onnx_opset_version():
        raise ValueError(
            f"opset {opset} is not supported; the integer operators need an opset in "
            f"[{MIN_OPSET}, {onnx.defs.onnx_opset_version()}]"
        )
    inputs, outputs, build_body, attributes = _BODY_BUILDERS[op_type]
    body = BodyBuilder(op_type)
    build_body(body, inputs, outputs)
    return helper.make_function(
        DOMAIN,
        op_type,
        inputs,
        outputs,
        body.nodes,
        [helper.make_opsetid("", opset)],
        attribute_protos=[helper.make_attribute(name, value) for name, value in attributes.items()],
        doc_string=f"Integer-only {op_type}; see bct_onnx.integer_ops.reference for the arithmetic.",
    )


def make_node(
    op_type: str,
    inputs: list[str],
    outputs: list[str],
    *,
    name: str | None = None,
    fraction_bits: int = DEFAULT_FRACTION_BITS,
    multiplier_bits: int = DEFAULT_MULTIPLIER_BITS,
) -> onnx.NodeProto:
    """Build a node of an integer operator in domain ``ai.onnx.contrib``.

    IntegerLayerNormalization nodes always get both attributes written out, because the
    onnxruntime-extensions Python kernel fails to load a node that leaves an attribute to its
    default. The other operators take no attributes.
    """
    if op_type not in OP_TYPES:
        raise ValueError(f"unknown integer operator {op_type!r}; expected one of {', '.join(OP_TYPES)}")
    attributes = {}
    if op_type == "IntegerLayerNormalization":
        attributes = {"fraction_bits": fraction_bits, "multiplier_bits": multiplier_bits}
    return helper.make_node(op_type, inputs, outputs, name=name, domain=DOMAIN, **attributes)


# ---------------------------------------------------------------- bodies


def _build_gelu(body: BodyBuilder, inputs: list[str], outputs: list[str]) -> None:
    x, table, group = inputs
    # Offsets per channel: group * 256 + 128, so int8 code -128 reads the group's first entry.
    offset = body.add("Add", [body.add("Mul", [group, body.constant(np.int64(CODES_PER_TABLE))]),
                              body.constant(np.int64(128))])
    index = body.add("Add", [body.add("Cast", [x], {"to": TensorProto.INT64}), offset])
    body.nodes.append(helper.make_node("Gather", [table, index], outputs, name=f"{body.prefix}_gather", axis=0))


def _build_softmax(body: BodyBuilder, inputs: list[str], outputs: list[str]) -> None:
    x, table = inputs
    last_axis = body.constant(np.array([-1], dtype=np.int64))
    codes = body.add("Cast", [x], {"to": TensorProto.INT32})
    row_max = body.add("ReduceMax", [codes, last_axis], {"keepdims": 1})
    exponent = body.add("Gather", [table, body.add("Sub", [row_max, codes])], {"axis": 0})
    total = body.add("ReduceSum", [exponent, last_axis], {"keepdims": 1})

    # Every operand is non-negative, so the truncating integer Div is a floor division.
    numerator = body.add("Add", [body.add("Mul", [exponent, body.constant(np.int32(255))]),
                                 body.add("Div", [total, body.constant(np.int32(2))])])
    quotient = body.add("Div", [numerator, total])
    body.nodes.append(
        helper.make_node("Cast", [quotient], outputs, name=f"{body.prefix}_cast", to=TensorProto.UINT8)
    )


def _build_layer_norm(body: BodyBuilder, inputs: list[str], outputs: list[str]) -> None:
    x, align, multiplier, bias, epsilon_term = inputs
    last_axis = body.constant(np.array([-1], dtype=np.int64))
    aligned = body.add("Mul", [body.add("Cast", [x], {"to": TensorProto.INT64}), align])
    channels = body.add("Shape", [x], {"start": -1})
    total = body.add("ReduceSum", [aligned, last_axis], {"keepdims": 1})
    deviation = body.add("Sub", [body.add("Mul", [aligned, channels]), total])

    # C * sum(a**2) - sum(a)**2 equals sum(d**2) // C exactly and needs 2 * log2(C) fewer bits.
    sum_of_squares = body.add("ReduceSum", [body.add("Mul", [aligned, aligned]), last_axis], {"keepdims": 1})
    variance = body.add("Sub", [body.add("Mul", [sum_of_squares, channels]), body.add("Mul", [total, total])])
    variance = body.add("Add", [variance, epsilon_term])

    headroom = body.add("Sub", [body.constant(np.int64(NORMALIZED_VARIANCE_POWER_OF_FOUR)),
                                append_count_powers_of_four(body, variance)])
    scaled_variance = body.add("Mul", [variance, _gather_power(body, POWERS_OF_FOUR, headroom)])
    sigma = append_integer_sqrt(body, scaled_variance)

    fraction_bits = body.attribute_constant("fraction_bits")
    shift = body.add("Add", [headroom, body.add("Add", [fraction_bits, body.constant(np.int64(1))])])
    shifted = body.add("Mul", [body.add("Abs", [deviation]), _gather_power(body, POWERS_OF_TWO, shift)])
    numerator = body.add("Add", [shifted, sigma])
    magnitude = body.add("Div", [numerator, body.add("Add", [sigma, sigma])])
    is_negative = body.add("Less", [deviation, body.constant(np.int64(0))])
    normalized = body.add("Where", [is_negative, body.add("Neg", [magnitude]), magnitude])
    _append_layer_norm_output(body, normalized, multiplier, bias, fraction_bits, outputs)


def _append_layer_norm_output(
    body: BodyBuilder, normalized: str, multiplier: str, bias: str, fraction_bits: str, outputs: list[str]
) -> None:
    total_bits = body.add("Add", [fraction_bits, body.attribute_constant("multiplier_bits")])
    half = _gather_power(body, POWERS_OF_TWO, body.add("Sub", [total_bits, body.constant(np.int64(1))]))
    divisor = _gather_power(body, POWERS_OF_TWO, total_bits)
    scaled = body.add("Add", [body.add("Add", [body.add("Mul", [normalized, multiplier]), bias]), half])

    # floor(scaled / divisor) for signed scaled: subtract the non-negative remainder, then the
    # truncating Div is exact.
    remainder = body.add("Mod", [scaled, divisor], {"fmod": 0})
    quotient = body.add("Div", [body.add("Sub", [scaled, remainder]), divisor])
    clipped = body.add("Clip", [quotient, body.constant(np.int64(-128)), body.constant(np.int64(127))])
    body.nodes.append(
        helper.make_node("Cast", [clipped], outputs, name=f"{body.prefix}_cast", to=TensorProto.INT8)
    )


def append_count_powers_of_four(body: BodyBuilder, value: str) -> str:
    """Append nodes that count, per element, the powers ``4**j <= value`` (j = 0..31).

    ``value`` must have a last axis of size 1, as a keepdims reduction produces, because the
    comparison broadcasts the 32 powers along that axis. The count keeps the shape of ``value``.
    """
    at_least = body.add("GreaterOrEqual", [value, body.constant(POWERS_OF_FOUR)])
    return body.add("ReduceSum", [body.add("Cast", [at_least], {"to": TensorProto.INT64}),
                                  body.constant(np.array([-1], dtype=np.int64))], {"keepdims": 1})


def append_integer_sqrt(body: BodyBuilder, value: str) -> str:
    """Append the nodes of ``reference.integer_sqrt`` for an int64 ``value`` with last axis 1."""
    root = _gather_power(body, POWERS_OF_TWO, append_count_powers_of_four(body, value))
    smallest_root = body.constant(np.int64(1))
    two = body.constant(np.int64(2))
    for _ in range(ISQRT_NEWTON_STEPS):
        # value and root are non-negative, so the truncating Div is a floor division.
        step = body.add("Div", [body.add("Add", [root, body.add("Div", [value, root])]), two])
        root = body.add("Max", [body.add("Min", [root, step]), smallest_root])
    return root


def _gather_power(body: BodyBuilder, powers: np.ndarray, exponent: str) -> str:
    return body.add("Gather", [body.constant(powers), exponent], {"axis": 0})


BodyBuilderFunction = Callable[[BodyBuilder, list[str], list[str]], None]

# op type -> (inputs, outputs, body builder, attribute defaults)
_BODY_BUILDERS: dict[str, tuple[list[str], list[str], BodyBuilderFunction, dict[str, int]]] = {
    "IntegerGelu": (["X", "table", "group"], ["Y"], _build_gelu, {}),
    "IntegerSoftmax": (["X", "table"], ["Y"], _build_softmax, {}),
    "IntegerLayerNormalization": (
        ["X", "align", "multiplier", "bias", "epsilon_term"],
        ["Y"],
        _build_layer_norm,
        {"fraction_bits": DEFAULT_FRACTION_BITS, "multiplier_bits": DEFAULT_MULTIPLIER_BITS},
    ),
}
