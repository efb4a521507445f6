"""Graph passes of the BCT pipeline, in the order of ``DEFAULT_PIPELINE``."""

from bct_onnx.passes.base import GraphPass, PassContext, PassResult, run_pipeline
from bct_onnx.passes.fold_constants import FoldConstants
from bct_onnx.passes.quantize_embeddings_blockwise import QuantizeEmbeddingsBlockwise
from bct_onnx.passes.quantize_weights_blockwise import QuantizeWeightsBlockwise


def default_pipeline() -> list[GraphPass]:
    """Return the passes that ``bct-onnx compress`` runs, in order."""
    return [FoldConstants(), QuantizeWeightsBlockwise(), QuantizeEmbeddingsBlockwise()]


__all__ = [
    "FoldConstants",
    "GraphPass",
    "PassContext",
    "PassResult",
    "QuantizeEmbeddingsBlockwise",
    "QuantizeWeightsBlockwise",
    "default_pipeline",
    "run_pipeline",
]
