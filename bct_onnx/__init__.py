"""bct-onnx: blockwise compression for transformers exported to ONNX."""

from bct_onnx.blockwise import Rounding, ScaleFormat
from bct_onnx.compress import CompressedModel, compress, compress_model
from bct_onnx.config import CompressConfig
from bct_onnx.errors import BctError
from bct_onnx.report import CompressionReport, TensorReport

__version__ = "0.1.0"

__all__ = [
    "BctError",
    "CompressConfig",
    "CompressedModel",
    "CompressionReport",
    "Rounding",
    "ScaleFormat",
    "TensorReport",
    "compress",
    "compress_model",
]
