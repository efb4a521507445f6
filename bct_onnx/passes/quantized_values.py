"""Quantizing one constant along one axis, and building the ONNX values that dequantize it.

Shared by the weight and the embedding passes, which differ only in how the dequantized values
reach their consumers.
"""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np
import onnx_graphsurgeon as gs
from onnx.helper import np_dtype_to_tensor_dtype

from bct_onnx.blockwise import BlockQuantized, ScaleFormat, quantize_blocks, quantize_blocks_compensated
from bct_onnx.config import CompressConfig
from bct_onnx.errors import UnsupportedModelError
from bct_onnx.graph import NodeFactory
from bct_onnx.report import TensorReport, sqnr_db

_SCALE_BYTES = {ScaleFormat.FLOAT32: 4, ScaleFormat.FLOAT16: 2, ScaleFormat.UINT8: 1}


@dataclass(frozen=True, kw_only=True)
class QuantizedWeight:
    """A constant quantized in blocks along ``axis``, with every array in the constant's layout.

    ``codes``, ``zero_point`` and ``scale_codes`` hold small integers in int8 or uint8 arrays;
    ``codes_for_onnx`` and ``zero_point_for_onnx`` convert them to the ONNX storage type.
    """

    codes: np.ndarray
    scale: np.ndarray  # float32 scale actually applied (after scale quantization)
    zero_point: np.ndarray | None
    scale_codes: np.ndarray | None
    scale_of_scales: np.ndarray | None
    axis: int
    bits: int
    block_size: int
    symmetric: bool
    dequantized: np.ndarray

    def codes_for_onnx(self) -> np.ndarray:
        return _to_storage(self.codes, self.bits, self.symmetric)

    def zero_point_for_onnx(self) -> np.ndarray | None:
        if self.zero_point is None:
            return None
        return _to_storage(self.zero_point, self.bits, symmetric=False)


def quantize_along_axis(
    weight: np.ndarray,
    axis: int,
    config: CompressConfig,
    *,
    bits: int,
    name: str,
    input_covariance: np.ndarray | None = None,
) -> QuantizedWeight:
    """Quantize a 2-D float constant in blocks along ``axis`` (0 or 1).

    With ``input_covariance`` (the second moments of the inputs it multiplies, along ``axis``)
    rounding errors are compensated as ``quantize_blocks_compensated`` describes.

    A length that is not a multiple of the block size is zero-padded for the search and the
    padding is cut off again, which is what ONNX expects of a last, shorter block. An axis
    shorter than one block is one block of its own length.

    Raises:
        UnsupportedModelError: the constant contains NaN or infinity.
    """
    if not np.all(np.isfinite(weight)):
        raise UnsupportedModelError(f"weight {name!r} contains NaN or infinity, which cannot be quantized")
    rows_last = weight.T if axis == 0 else weight
    length = rows_last.shape[1]
    block_size = min(config.block_size, length)
    padded_length = -(-length // block_size) * block_size
    padded = np.zeros((rows_last.shape[0], padded_length), np.float32)
    padded[:, :length] = rows_last

    options = dict(bits=bits, block_size=block_size, symmetric=config.symmetric, rounding=config.rounding,
                   scale_format=config.scale_format)
    if input_covariance is None:
        blocks = quantize_blocks(padded, **options)
    else:
        covariance = np.zeros((padded_length, padded_length))
        covariance[:length, :length] = input_covariance  # padding inputs are dead: always zero
        blocks = quantize_blocks_compensated(padded, covariance, **options)
    return _to_weight_layout(blocks, weight, axis, length, config)


def _to_weight_layout(
    blocks: BlockQuantized, weight: np.ndarray, axis: int, length: int, config: CompressConfig
) -> QuantizedWeight:
    def layout(array: np.ndarray | None) -> np.ndarray | None:
        if array is None:
            return None
        return np.ascontiguousarray(array.T if axis == 0 else array)

    dequantized = blocks.dequantize()[:, :length]
    return QuantizedWeight(
        codes=layout(blocks.codes[:, :length]),
        scale=layout(blocks.scale),
        zero_point=layout(blocks.zero_point),
        scale_codes=layout(blocks.scale_codes),
        scale_of_scales=blocks.scale_of_scales,
        axis=axis,
        bits=blocks.bits,
        block_size=config.block_size,
        symmetric=config.symmetric,
        dequantized=layout(dequantized).astype(weight.dtype),
    )


def make_report(
    name: str, kind: str, weight: np.ndarray, quantized: QuantizedWeight, config: CompressConfig
) -> TensorReport:
    """Describe the size and error of one quantized constant."""
    block_count = quantized.scale.size
    scale_bytes = block_count * _SCALE_BYTES[config.scale_format]
    if quantized.scale_of_scales is not None:
        scale_bytes += quantized.scale_of_scales.size * weight.itemsize
    if quantized.zero_point is not None:
        scale_bytes += -(-block_count * quantized.bits // 8)
    code_bytes = -(-weight.size * quantized.bits // 8)
    return TensorReport(
        name=name,
        kind=kind,
        shape=tuple(int(dim) for dim in weight.shape),
        bits=quantized.bits,
        block_size=quantized.block_size,
        bytes_before=int(weight.nbytes),
        bytes_after=int(code_bytes + scale_bytes),
        scale_bytes=int(scale_bytes),
        sqnr_db=sqnr_db(weight, quantized.dequantized),
    )


def build_scale(
    factory: NodeFactory, anchor: str, quantized: QuantizedWeight, config: CompressConfig
) -> gs.Tensor:
    """Return the scale value of a ``DequantizeLinear`` on the whole constant, in its float type.

    For ``ScaleFormat.UINT8`` this is itself a ``DequantizeLinear`` of the 8-bit scale codes by
    one scale of scales per block index, which ONNX Runtime evaluates once per run.
    """
    dtype = quantized.dequantized.dtype
    if config.scale_format is ScaleFormat.UINT8:
        codes = factory.constant(anchor, "scale_codes", quantized.scale_codes)
        return dequantize_scale_codes(factory, anchor, codes, quantized, axis=quantized.axis)
    scale = factory.constant(anchor, "scale", quantized.scale.astype(stored_scale_dtype(config)))
    return cast_to(factory, anchor, scale, stored_scale_dtype(config), dtype)


def dequantize_scale_codes(
    factory: NodeFactory, anchor: str, codes: gs.Tensor, quantized: QuantizedWeight, *, axis: int
) -> gs.Tensor:
    """Return ``codes`` times the scale of scales along ``axis``, in the constant's float type."""
    dtype = quantized.dequantized.dtype
    scale_of_scales = factory.constant(anchor, "scale_of_scales", quantized.scale_of_scales.astype(dtype))
    return factory.node("DequantizeLinear", anchor, [codes, scale_of_scales], attrs={"axis": axis})


def stored_scale_dtype(config: CompressConfig) -> np.dtype:
    """Return the type that float block scales are stored in (not used for ScaleFormat.UINT8)."""
    return np.dtype(np.float16 if config.scale_format is ScaleFormat.FLOAT16 else np.float32)


def cast_to(factory: NodeFactory, anchor: str, value: gs.Tensor, dtype: np.dtype, wanted: np.dtype) -> gs.Tensor:
    """Return ``value`` (of type ``dtype``) cast to ``wanted``, or unchanged when they agree.

    Scales are cast before dequantization, not the dequantized result after it, because
    DequantizeLinear computes in its scale's type: float16 scales would round every output.
    """
    if np.dtype(dtype) == np.dtype(wanted):
        return value
    return factory.node("Cast", anchor, [value], attrs={"to": np_dtype_to_tensor_dtype(np.dtype(wanted))})


def _to_storage(values: np.ndarray, bits: int, symmetric: bool) -> np.ndarray:
    if bits == 4:
        return values.astype(ml_dtypes.int4 if symmetric else ml_dtypes.uint4)
    return values.astype(np.int8 if symmetric else np.uint8)
