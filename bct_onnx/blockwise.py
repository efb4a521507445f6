"""Blockwise quantization kernels in NumPy.

A 2-D array ``x`` of shape ``[rows, K]`` is cut along its last axis into blocks of
``block_size`` values. Each block ``b`` gets one scale ``s[b]`` (and, when asymmetric, one zero
point ``z[b]``) and its values become integer codes::

    q = clip(round(x / s) + z, q_min, q_max)        x_hat = (q - z) * s

Callers that quantize along another axis transpose first. The codes, scales and zero points come
back in the same ``[rows, K]`` / ``[rows, K // block_size]`` layout, which is the layout of an
ONNX ``DequantizeLinear`` with ``block_size`` along the last axis.

Scales are stored in one of three formats. ``FLOAT32`` and ``FLOAT16`` store one float per block.
``UINT8`` quantizes the scales themselves: each scale becomes an 8-bit code times a float32
second-level scale shared by all blocks at the same block index (one float per block column),
so a 4-bit weight at block size 64 costs 4 + 8/64 bits instead of 4 + 16/64.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

# Shrink factors tried by MSE-optimal clipping: the block's range is multiplied by each factor
# and the factor with the least squared error wins. Below 0.5 the clipped outliers always cost
# more than the finer grid saves on 4-bit blocks.
_CLIP_FACTORS = np.linspace(0.5, 1.0, 21, dtype=np.float32)

# Rows per chunk in the vectorised search, which keeps the temporary arrays near 100 MB
# for 64-value blocks.
_ROWS_PER_CHUNK = 2048


class ScaleFormat(enum.Enum):
    """Storage format of block scales in the output model."""

    FLOAT32 = "float32"
    FLOAT16 = "float16"
    UINT8 = "uint8"


class Rounding(enum.Enum):
    """Method that chooses block scales."""

    NEAREST = "nearest"  # scale from the block's full range (min-max)
    MSE = "mse"  # scale that minimises the block's squared error (clipping search)


@dataclass(frozen=True, kw_only=True)
class BlockQuantized:
    """The integer form of a ``[rows, K]`` array quantized in blocks along its last axis."""

    codes: np.ndarray  # int8 (signed) or uint8 (unsigned) codes, shape [rows, K]
    scale: np.ndarray  # float32 scale actually applied, shape [rows, K // block_size]
    zero_point: np.ndarray | None  # same shape as scale, None when symmetric
    scale_codes: np.ndarray | None  # uint8 codes of the scale for ScaleFormat.UINT8
    scale_of_scales: np.ndarray | None  # float32, shape [K // block_size], for ScaleFormat.UINT8
    bits: int
    block_size: int

    def dequantize(self) -> np.ndarray:
        """Return the float32 values that the codes stand for."""
        codes = self.codes.astype(np.float32)
        if self.zero_point is not None:
            codes -= np.repeat(self.zero_point.astype(np.float32), self.block_size, axis=-1)
        return codes * np.repeat(self.scale, self.block_size, axis=-1)


def code_range(bits: int, *, symmetric: bool) -> tuple[int, int]:
    """Return the smallest and largest integer code for ``bits`` bits."""
    if symmetric:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def quantize_blocks(
    x: np.ndarray,
    *,
    bits: int,
    block_size: int,
    symmetric: bool = True,
    rounding: Rounding = Rounding.MSE,
    scale_format: ScaleFormat = ScaleFormat.FLOAT32,
) -> BlockQuantized:
    """Quantize a ``[rows, K]`` float array in blocks of ``block_size`` along its last axis.

    Raises:
        ValueError: when ``x`` is not 2-D or ``K`` is not a multiple of ``block_size``.
    """
    rows, k = _checked_shape(x, block_size)
    blocks = x.astype(np.float32).reshape(rows, k // block_size, block_size)
    scale, zero_point = _choose_scales(blocks, bits, symmetric, rounding)
    scale_codes = scale_of_scales = None
    if scale_format is ScaleFormat.UINT8:
        scale_codes, scale_of_scales = _encode_scales(scale)
        scale = scale_codes.astype(np.float32) * scale_of_scales
        if not symmetric:
            zero_point = _zero_points(blocks.min(axis=-1), scale, bits)
    elif scale_format is ScaleFormat.FLOAT16:
        scale = scale.astype(np.float16).astype(np.float32)

    codes = _round_codes(blocks, scale, zero_point, bits, symmetric).reshape(rows, k)
    return BlockQuantized(
        codes=codes,
        scale=scale,
        zero_point=zero_point,
        scale_codes=scale_codes,
        scale_of_scales=scale_of_scales,
        bits=bits,
        block_size=block_size,
    )


def _checked_shape(x: np.ndarray, block_size: int) -> tuple[int, int]:
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D array, got shape {x.shape}")
    rows, k = x.shape
    if block_size <= 0 or k % block_size:
        raise ValueError(f"axis of length {k} is not a multiple of block size {block_size}")
    return rows, k


def _choose_scales(
    blocks: np.ndarray, bits: int, symmetric: bool, rounding: Rounding
) -> tuple[np.ndarray, np.ndarray | None]:
    """Pick one scale (and zero point) per block, searching clip factors for ``Rounding.MSE``."""
    factors = _CLIP_FACTORS if rounding is Rounding.MSE else np.ones(1, np.float32)
    scale = np.empty(blocks.shape[:2], np.float32)
    zero_point = None if symmetric else np.empty(blocks.shape[:2], np.uint8)
    for start in range(0, blocks.shape[0], _ROWS_PER_CHUNK):
        chunk = blocks[start : start + _ROWS_PER_CHUNK]
        best_scale, best_zero = _search_clip_factors(chunk, bits, symmetric, factors)
        scale[start : start + _ROWS_PER_CHUNK] = best_scale
        if zero_point is not None:
            zero_point[start : start + _ROWS_PER_CHUNK] = best_zero
    return scale, zero_point


def _search_clip_factors(
    blocks: np.ndarray, bits: int, symmetric: bool, factors: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None]:
    """Return, per block, the scale and zero point of the clip factor with least squared error."""
    q_min, q_max = code_range(bits, symmetric=symmetric)
    low = blocks.min(axis=-1)
    high = blocks.max(axis=-1)
    best_error = np.full(blocks.shape[:2], np.inf, np.float32)
    best_scale = np.zeros(blocks.shape[:2], np.float32)
    best_zero = None if symmetric else np.zeros(blocks.shape[:2], np.uint8)

    for factor in factors:
        if symmetric:
            scale = _safe_scale(factor * np.maximum(-low, high) / q_max)
            zero = None
        else:
            scale = _safe_scale(factor * (high - low) / (q_max - q_min))
            zero = _zero_points(factor * low, scale, bits)
        codes = _round_codes(blocks, scale, zero, bits, symmetric)
        error = _squared_error(blocks, codes, scale, zero)
        better = error < best_error
        best_error = np.where(better, error, best_error)
        best_scale = np.where(better, scale, best_scale)
        if best_zero is not None:
            best_zero = np.where(better, zero, best_zero)
    return best_scale, best_zero


def _safe_scale(scale: np.ndarray) -> np.ndarray:
    """Replace zero scales (all-zero blocks) by 1 so that division stays finite."""
    return np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)


def _zero_points(low: np.ndarray, scale: np.ndarray, bits: int) -> np.ndarray:
    """Return the unsigned zero point that maps ``low`` to code 0, clipped to the code range."""
    return np.clip(np.round(-low / scale), 0, (1 << bits) - 1).astype(np.uint8)


def _round_codes(
    blocks: np.ndarray, scale: np.ndarray, zero: np.ndarray | None, bits: int, symmetric: bool
) -> np.ndarray:
    q_min, q_max = code_range(bits, symmetric=symmetric)
    codes = np.round(blocks / scale[..., None])
    if zero is not None:
        codes += zero[..., None]
    return np.clip(codes, q_min, q_max).astype(np.int8 if symmetric else np.uint8)


def _squared_error(
    blocks: np.ndarray, codes: np.ndarray, scale: np.ndarray, zero: np.ndarray | None
) -> np.ndarray:
    values = codes.astype(np.float32)
    if zero is not None:
        values -= zero[..., None]
    return np.sum(np.square(values * scale[..., None] - blocks), axis=-1)


def _encode_scales(scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quantize ``[rows, blocks]`` scales to uint8 codes with one float32 scale per block column.

    Codes round up, never down: a block whose scale grows slightly keeps all its values inside
    the code range, while a shrunken scale would clip its largest value. Code 0 is never used.
    """
    scale_of_scales = (scale.max(axis=0) / 255.0).astype(np.float32)
    scale_of_scales = np.where(scale_of_scales > 0, scale_of_scales, np.float32(1.0))
    codes = np.clip(np.ceil(scale / scale_of_scales - 1e-4), 1, 255).astype(np.uint8)
    return codes, scale_of_scales.astype(np.float32)


def quantize_blocks_compensated(
    x: np.ndarray,
    input_covariance: np.ndarray,
    *,
    bits: int,
    block_size: int,
    symmetric: bool = True,
    rounding: Rounding = Rounding.MSE,
    scale_format: ScaleFormat = ScaleFormat.FLOAT32,
    damping: float = 0.01,
) -> BlockQuantized:
    """Quantize a ``[rows, K]`` weight like ``quantize_blocks``, feeding each column's error forward.

    This is GPTQ (Frantar et al., 2022) with one group per block. ``x`` multiplies inputs whose
    ``K x K`` second-moment matrix is ``input_covariance`` (``sum of v v^T`` over input vectors
    ``v``). Columns are rounded left to right, and the rounding error of each one is spread over
    the columns not rounded yet, in the proportions that least change ``x @ v`` on those inputs.
    A block's scale is chosen when its first column is reached, from the values updated so far.
    ``damping`` (a fraction of the mean diagonal) keeps the inverse well conditioned.

    Raises:
        ValueError: the shapes disagree, or ``K`` is not a multiple of ``block_size``.
    """
    rows, k = _checked_shape(x, block_size)
    if input_covariance.shape != (k, k):
        raise ValueError(f"input covariance of shape {input_covariance.shape} does not match {k} columns")

    weights = x.astype(np.float64)
    inverse_factor = _inverse_cholesky_factor(input_covariance, weights, damping)
    q_min, q_max = code_range(bits, symmetric=symmetric)
    codes = np.empty((rows, k), np.int8 if symmetric else np.uint8)
    groups = []
    for start in range(0, k, block_size):
        end = start + block_size
        group = weights[:, start:end]  # a view: compensation below updates ``weights``
        chosen = quantize_blocks(
            group.astype(np.float32), bits=bits, block_size=block_size, symmetric=symmetric,
            rounding=rounding, scale_format=scale_format,
        )
        groups.append(chosen)
        scale = chosen.scale[:, 0].astype(np.float64)
        zero = 0.0 if chosen.zero_point is None else chosen.zero_point[:, 0].astype(np.float64)
        errors = np.empty((rows, block_size))
        for offset in range(block_size):
            column = start + offset
            code = np.clip(np.round(group[:, offset] / scale) + zero, q_min, q_max)
            codes[:, column] = code
            error = (group[:, offset] - (code - zero) * scale) / inverse_factor[column, column]
            group[:, offset + 1 :] -= np.outer(error, inverse_factor[column, column + 1 : end])
            errors[:, offset] = error
        weights[:, end:] -= errors @ inverse_factor[start:end, end:]

    def joined(name: str) -> np.ndarray | None:
        parts = [getattr(group, name) for group in groups]
        return None if parts[0] is None else np.concatenate(parts, axis=-1)

    return BlockQuantized(
        codes=codes,
        scale=joined("scale"),
        zero_point=joined("zero_point"),
        scale_codes=joined("scale_codes"),
        scale_of_scales=joined("scale_of_scales"),
        bits=bits,
        block_size=block_size,
    )


def _inverse_cholesky_factor(input_covariance: np.ndarray, weights: np.ndarray, damping: float) -> np.ndarray:
    """Return the upper Cholesky factor ``U`` of the damped inverse covariance (``H^-1 = U^T U``).

    Inputs that were always zero carry no information about their columns, so those weights are
    set to zero (they never contribute) and their diagonal entries to one.
    """
    covariance = input_covariance.astype(np.float64)
    dead = np.diag(covariance) <= 0
    covariance[dead, dead] = 1.0
    weights[:, dead] = 0.0
    covariance[np.diag_indices_from(covariance)] += damping * np.mean(np.diag(covariance))
    return np.linalg.cholesky(np.linalg.inv(covariance)).T
