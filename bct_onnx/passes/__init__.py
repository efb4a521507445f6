"""Graph passes of the BCT pipeline, in the order of ``default_pipeline``."""

from collections.abc import Callable

from bct_onnx.passes.base import GraphPass, PassContext, PassResult, run_pipeline
from bct_onnx.passes.calibrate_activations import CalibrateActivations
from bct_onnx.passes.fold_constants import FoldConstants
from bct_onnx.passes.measure_weight_inputs import MeasureWeightInputs
from bct_onnx.passes.quantize_activations import QuantizeActivations
from bct_onnx.passes.quantize_embeddings_blockwise import QuantizeEmbeddingsBlockwise
from bct_onnx.passes.quantize_weights_blockwise import QuantizeWeightsBlockwise
from bct_onnx.passes.replace_integer_operators import ReplaceIntegerOperators


def default_pipeline(progress: Callable[[int, int], None] | None = None) -> list[GraphPass]:
    """Return the passes that ``bct-onnx compress`` runs, in order.

    Calibration runs on the folded float graph, before anything is quantized. The integer
    operators go in before the activation quantizers, which then skip values that an integer
    operator already dequantizes.
    """
    return [
        FoldConstants(),
        CalibrateActivations(progress),
        MeasureWeightInputs(progress),
        QuantizeWeightsBlockwise(),
        QuantizeEmbeddingsBlockwise(),
        ReplaceIntegerOperators(),
        QuantizeActivations(),
    ]


__all__ = [
    "CalibrateActivations",
    "FoldConstants",
    "GraphPass",
    "MeasureWeightInputs",
    "PassContext",
    "PassResult",
    "QuantizeActivations",
    "QuantizeEmbeddingsBlockwise",
    "QuantizeWeightsBlockwise",
    "ReplaceIntegerOperators",
    "default_pipeline",
    "run_pipeline",
]
