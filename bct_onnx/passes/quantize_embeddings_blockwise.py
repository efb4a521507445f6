"""Replaces constant embedding tables read by Gather with blockwise low-bit tables.

Matched and rewritten (8-bit)::

    ids ──► Gather(axis=0) ◄── table (float constant, [V, H])

    ids ──► Gather ◄── codes (INT8, [V, H])  ──────────────► DequantizeLinear(axis=-1, block_size=B)
      └───► Gather ◄── scale rows ([V, ceil(H/B)]) ─────────►   ▲
                                                   (zero point rows, when asymmetric) ─┘

Only the looked-up rows are dequantized: the scales are gathered with the codes, so a lookup
costs O(tokens × H) and never touches the rest of the table. With ``ScaleFormat.UINT8`` the
gathered scale rows are 8-bit codes, dequantized by one float32 per block column.

ONNX Gather does not accept INT4, so a 4-bit table is stored as UINT8 with two codes per byte
(low nibble first) and unpacked after the lookup::

    packed rows ──► BitwiseAnd(15) ──► Unsqueeze(-1) ─┐
                └─► BitShift(4, RIGHT) ► Unsqueeze(-1) ┴► Concat(-1) ──► Reshape([..., H])

Symmetric 4-bit codes are stored offset by 8, so the unpacked UINT8 codes dequantize with a
zero point of 8.

Limitations: only ``axis=0`` lookups into 2-D tables; a 4-bit table needs an even H.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from bct_onnx.blockwise import ScaleFormat
from bct_onnx.config import CompressConfig
from bct_onnx.graph import NodeFactory, constant_array
from bct_onnx.passes.base import GraphPass, PassContext, PassResult
from bct_onnx.passes.quantize_weights_blockwise import FLOAT_TYPES, is_excluded
from bct_onnx.passes.quantized_values import (
    QuantizedWeight,
    cast_to,
    dequantize_scale_codes,
    make_report,
    quantize_along_axis,
    stored_scale_dtype,
)

logger = logging.getLogger(__name__)


def explain_embedding_skip(node: gs.Node, config: CompressConfig) -> str | None:
    """Return why a Gather's table stays in float, or None if it is compressed."""
    table = constant_array(node.inputs[0])
    if table is None:
        return "table is computed, not constant"
    if node.attrs.get("axis", 0) != 0:
        return "lookup is not along axis 0"
    if table.ndim != 2:
        return f"table has {table.ndim} dimensions, not 2"
    if table.dtype not in FLOAT_TYPES:
        return f"table type is {table.dtype}, not float32 or float16 (already quantized?)"
    if table.size == 0:
        return "table is empty"
    if embedding_bits(config) == 4 and table.shape[1] % 2:
        return "4-bit tables need an even row length"
    if is_excluded(config.exclude, node.name, node.inputs[0].name):
        return "excluded by a pattern"
    if embedding_bits(config) == 8 and not config.symmetric and _feeds_matmul(node):
        # ONNX Runtime 1.32 fuses such a DequantizeLinear into MatMulIntegerToFloat, which then
        # fails at run time because it accepts only one zero point for the whole input.
        return "asymmetric 8-bit lookups that feed a MatMul fail in ONNX Runtime"
    return None


def _feeds_matmul(node: gs.Node) -> bool:
    return any(reader.op in ("MatMul", "Gemm") for reader in node.outputs[0].outputs)


def embedding_bits(config: CompressConfig) -> int:
    """Return the bits per table value: ``embedding_bits``, or ``weight_bits`` when unset."""
    return config.embedding_bits if config.embedding_bits is not None else config.weight_bits


@dataclass(frozen=True)
class _TableConstants:
    """The initializers that replace one float table; shared by every Gather on that table."""

    codes: gs.Constant
    scale_rows: gs.Constant  # float scales, or uint8 scale codes with ScaleFormat.UINT8
    zero_point_rows: gs.Constant | None
    quantized: QuantizedWeight


class QuantizeEmbeddingsBlockwise(GraphPass):
    """Compresses every constant table looked up by Gather (word, position, token type)."""

    name = "quantize_embeddings_blockwise"

    def run(self, context: PassContext) -> PassResult:
        factory = NodeFactory(context.graph, self.name)
        tables: dict[str, _TableConstants] = {}
        skipped: Counter[str] = Counter()
        if not context.config.embeddings:
            return PassResult(self.name, 0, {})

        for node in list(context.graph.nodes):
            if node.op != "Gather":
                continue
            reason = explain_embedding_skip(node, context.config)
            if reason is not None:
                logger.debug("Gather %s left in float: %s", node.name, reason)
                skipped[reason] += 1
                continue
            table = node.inputs[0]
            if table.name not in tables:
                tables[table.name] = self._quantize_table(table, context, factory)
            self._rewrite_lookup(node, tables[table.name], context.config, factory)

        context.created_by.update(factory.created_by)
        return PassResult(self.name, len(tables), dict(skipped))

    def _quantize_table(
        self, table: gs.Constant, context: PassContext, factory: NodeFactory
    ) -> _TableConstants:
        config = context.config
        values = np.asarray(table.values)
        quantized = quantize_along_axis(values, 1, config, bits=embedding_bits(config), name=table.name)
        context.tensor_reports.append(make_report(table.name, "embedding", values, quantized, config))

        anchor = table.name
        if config.scale_format is ScaleFormat.UINT8:
            scale_rows = factory.constant(anchor, "scale_codes", quantized.scale_codes)
        else:
            scale_rows = factory.constant(anchor, "scale", quantized.scale.astype(stored_scale_dtype(config)))
        zero_point_rows = None
        if quantized.zero_point is not None:
            zero_point_rows = factory.constant(anchor, "zero_point", quantized.zero_point.astype(np.uint8))
        codes = factory.constant(anchor, "codes", _table_codes(quantized))
        return _TableConstants(codes, scale_rows, zero_point_rows, quantized)

    def _rewrite_lookup(
        self, node: gs.Node, table: _TableConstants, config: CompressConfig, factory: NodeFactory
    ) -> None:
        indices, output = node.inputs[1], node.outputs[0]
        anchor = node.name or output.name
        node.outputs.clear()

        codes = factory.node("Gather", anchor, [table.codes, indices])
        if table.quantized.bits == 4:
            codes = _unpack_nibbles(factory, anchor, codes, table.quantized.codes.shape[1])
        scale = factory.node("Gather", anchor, [table.scale_rows, indices])
        if config.scale_format is ScaleFormat.UINT8:
            scale = dequantize_scale_codes(factory, anchor, scale, table.quantized, axis=-1)
        else:
            scale = cast_to(factory, anchor, scale, stored_scale_dtype(config), table.quantized.dequantized.dtype)
        inputs = [codes, scale]
        if table.zero_point_rows is not None:
            inputs.append(factory.node("Gather", anchor, [table.zero_point_rows, indices]))
        elif table.quantized.bits == 4:
            inputs.append(_symmetric_nibble_zero_point(factory, anchor, scale))
        attrs = {"axis": -1, "block_size": config.block_size}
        factory.node("DequantizeLinear", anchor, inputs, attrs=attrs, output=output)


def _table_codes(quantized: QuantizedWeight) -> np.ndarray:
    """Return the table's codes as ONNX stores them: 8-bit as is, 4-bit as packed nibbles."""
    if quantized.bits == 8:
        return quantized.codes_for_onnx()
    nibbles = quantized.codes.astype(np.int16)
    if quantized.symmetric:
        nibbles = nibbles + 8  # int4 [-8, 7] -> [0, 15]; the zero point of 8 undoes it
    nibbles = nibbles.astype(np.uint8)
    return (nibbles[:, 0::2] | (nibbles[:, 1::2] << 4)).astype(np.uint8)


def _unpack_nibbles(factory: NodeFactory, anchor: str, packed: gs.Tensor, row_length: int) -> gs.Tensor:
    low = factory.node("BitwiseAnd", anchor, [packed, factory.constant(anchor, "low_mask", np.array(15, np.uint8))])
    shift = factory.constant(anchor, "nibble_shift", np.array(4, np.uint8))
    high = factory.node("BitShift", anchor, [packed, shift], attrs={"direction": "RIGHT"})
    last_axis = factory.constant(anchor, "last_axis", np.array([-1], np.int64))
    pairs = factory.node(
        "Concat",
        anchor,
        [factory.node("Unsqueeze", anchor, [low, last_axis]), factory.node("Unsqueeze", anchor, [high, last_axis])],
        attrs={"axis": -1},
    )
    # The unpacked shape is the packed one with its last dimension doubled: [..., H/2] -> [..., H].
    # H is written out rather than -1, which Reshape cannot resolve for an empty batch.
    packed_shape = factory.node("Shape", anchor, [packed])
    leading = factory.node(
        "Slice",
        anchor,
        [packed_shape, factory.constant(anchor, "slice_start", np.array([0], np.int64)), last_axis],
    )
    row = factory.constant(anchor, "row_length", np.array([row_length], np.int64))
    shape = factory.node("Concat", anchor, [leading, row], attrs={"axis": 0})
    return factory.node("Reshape", anchor, [pairs, shape])


def _symmetric_nibble_zero_point(factory: NodeFactory, anchor: str, scale: gs.Tensor) -> gs.Tensor:
    """Return a zero point of 8 with the gathered scale's shape, as blocked dequantization needs."""
    eight = factory.constant(anchor, "nibble_offset", np.array([8], np.uint8))
    return factory.node("Expand", anchor, [eight, factory.node("Shape", anchor, [scale])])
