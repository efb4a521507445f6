"""Measures the inputs of every MatMul/Gemm weight, for rounding the weights with error compensation.

Runs on the float graph, like activation calibration, and fills ``context.weight_input_moments``:
per input value, the sum of ``v v^T`` over its vectors ``v``. The weight pass then rounds each
weight so that its products with these inputs change least (``quantize_blocks_compensated``).
Without calibration data, or with ``error_compensation`` off, the pass does nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import onnx_graphsurgeon as gs

from bct_onnx.calibration import input_second_moments
from bct_onnx.passes.base import GraphPass, PassContext, PassResult
from bct_onnx.passes.quantize_weights_blockwise import compensated_input, explain_weight_skip


class MeasureWeightInputs(GraphPass):
    """Fills ``context.weight_input_moments`` from ``context.calibration_batches``."""

    name = "measure_weight_inputs"

    def __init__(self, progress: Callable[[int, int], None] | None = None) -> None:
        self._progress = progress

    def run(self, context: PassContext) -> PassResult:
        if not (context.config.error_compensation and context.calibration_batches):
            return PassResult(self.name, 0, {})
        names = sorted({
            compensated_input(node).name
            for node in context.graph.nodes
            if node.op in ("MatMul", "Gemm")
            and explain_weight_skip(node, context.config.exclude) is None
            and compensated_input(node) is not None
        })
        if names:
            model = gs.export_onnx(context.graph.copy())
            context.weight_input_moments = input_second_moments(
                model, names, context.calibration_batches, progress=self._progress
            )
        return PassResult(self.name, len(names), {})
