"""Measures activation ranges on calibration data, for the passes that quantize activations.

Runs before any rewrite, on the float graph, so every range is that of the original model.
The values to measure come from the passes that will use them, which keeps the targets and
their users in one place each.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import onnx_graphsurgeon as gs

from bct_onnx.calibration import Calibrator
from bct_onnx.errors import BctError
from bct_onnx.passes.base import GraphPass, PassContext, PassResult
from bct_onnx.passes.quantize_activations import activation_targets
from bct_onnx.passes.replace_integer_operators import integer_operator_targets

logger = logging.getLogger(__name__)


class CalibrateActivations(GraphPass):
    """Fills ``context.activation_scales`` from ``context.calibration_batches``."""

    name = "calibrate_activations"

    def __init__(self, progress: Callable[[int, int], None] | None = None) -> None:
        self._progress = progress

    def run(self, context: PassContext) -> PassResult:
        config = context.config
        if not config.needs_calibration:
            return PassResult(self.name, 0, {})
        if not context.calibration_batches:
            raise BctError(
                "quantizing activations needs calibration data: pass --calibration "
                "(a GLUE task, a text file or an .npz of input feeds), or use --recipe weights-only"
            )
        targets = {target.name: target for target in activation_targets(context.graph)}
        targets.update(
            {target.name: target for target in integer_operator_targets(context.graph, config.integer_operators)}
        )
        calibrator = Calibrator(
            list(targets.values()),
            block_size=config.activation_block_size,
            method=config.calibration_method,
            bits=config.activation_bits,
        )
        model = gs.export_onnx(context.graph.copy())
        context.activation_scales = calibrator.collect(model, context.calibration_batches, progress=self._progress)
        return PassResult(self.name, len(context.activation_scales), {})
