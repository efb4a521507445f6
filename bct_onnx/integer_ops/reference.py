"""Integer kernels of IntegerGelu, IntegerSoftmax and IntegerLayerNormalization in NumPy.

These kernels define the operators: the ONNX function bodies in ``functions.py`` and the ONNX
Runtime custom-op kernels in ``custom_ops.py`` must return the same bits. Every step inside a
kernel is integer arithmetic (lookups, add, multiply, floor division, compare). Floats appear
only in the builders (``gelu_table``, ``softmax_table``, ``layer_norm_parameters``), which run
once when a graph is built and turn float scales into integer tables and multipliers.

Activations are int8 codes with one scale per channel (the last axis). Channel ``c`` stands
for ``q[..., c] * s * 2**-shift[c]`` with one float base scale ``s`` and an integer shift in
[0, 7], so the scales of any two channels differ by a power of two.

docs/operators.md derives the overflow bounds and error bounds quoted below.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

# |value| < 2**63 for int64 and < 2**31 for int32.
INT64_LIMIT = 1 << 63
INT32_LIMIT = 1 << 31

# One lookup-table entry per int8 code.
CODES_PER_TABLE = 256

# Largest per-channel shift: channel scales span at most 2**7, so aligned codes fit 15 bits.
MAX_SHIFT = 7

DEFAULT_SOFTMAX_TABLE_BITS = 15
# 255 * 2**22 < 2**30 keeps the softmax numerator below 2**31 whenever the sum fits.
MAX_SOFTMAX_TABLE_BITS = 22

DEFAULT_FRACTION_BITS = 16
DEFAULT_MULTIPLIER_BITS = 16
# The deviation is multiplied by 2**(P + fraction_bits + 1) with P up to 31, read from a table
# of powers of two that ends at 2**62, so fraction_bits <= 30. The same table holds
# 2**(fraction_bits + multiplier_bits) when multiplier_bits <= 30.
MAX_FRACTION_BITS = 30
MAX_MULTIPLIER_BITS = 30

# isqrt is exact for 0 <= v < 2**62. Six Newton steps suffice there: see integer_sqrt.
ISQRT_LIMIT = 1 << 62
ISQRT_NEWTON_STEPS = 6

# LayerNormalization scales the variance term into [2**60, 2**62) before the square root,
# so the root has 31 significant bits whatever the variance.
NORMALIZED_VARIANCE_POWER_OF_FOUR = 31

POWERS_OF_FOUR = np.array([4**j for j in range(32)], dtype=np.int64)  # 4**0 .. 4**31 = 2**62
POWERS_OF_TWO = np.array([2**j for j in range(63)], dtype=np.int64)  # 2**0 .. 2**62


class LayerNormParameters(NamedTuple):
    """The integer inputs of IntegerLayerNormalization for one LayerNormalization."""

    align: np.ndarray  # int64 [C], 2**(K - shift[c]) with K = max(shift)
    multiplier: np.ndarray  # int64 [C], round(gamma / output_scale * 2**multiplier_bits)
    bias: np.ndarray  # int64 [C], round(beta / output_scale * 2**(fraction_bits + multiplier_bits))
    epsilon_term: np.ndarray  # int64 scalar, round(C**2 * epsilon / finest_scale**2)


def round_half_away_from_zero(values: np.ndarray) -> np.ndarray:
    """Round float ``values`` to the nearest integer, ties away from zero (NumPy rounds ties to even)."""
    return np.sign(values) * np.floor(np.abs(values) + 0.5)


def gelu(x: np.ndarray) -> np.ndarray:
    """Compute the exact GELU ``0.5 * x * (1 + erf(x / sqrt(2)))`` in float64."""
    erf = np.vectorize(math.erf, otypes=[np.float64])
    x = np.asarray(x, dtype=np.float64)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


# ---------------------------------------------------------------- IntegerGelu


def gelu_table(input_scale: np.ndarray, output_scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Build the IntegerGelu lookup table and the channel-to-group map.

    Channels that share an (input scale, output scale) pair share one group of 256 entries:
    ``table[g * 256 + i] = clip(round(gelu((i - 128) * s_in[g]) / s_out[g]), -128, 127)``.

    Returns:
        ``(table, group)``: int8 ``[G * 256]`` and int64 ``[C]``.

    Raises:
        ValueError: the scales are not 1-D arrays of one length with positive finite values.
    """
    input_scale = _positive_scales(input_scale, "input_scale")
    output_scale = _positive_scales(output_scale, "output_scale")
    if input_scale.shape != output_scale.shape:
        raise ValueError(
            f"input_scale has shape {input_scale.shape} but output_scale has {output_scale.shape}; "
            "give one scale per channel in both"
        )

    pairs, group = np.unique(np.stack([input_scale, output_scale], axis=1), axis=0, return_inverse=True)
    codes = np.arange(-128, 128, dtype=np.float64)
    values = gelu(codes[None, :] * pairs[:, :1]) / pairs[:, 1:]
    table = np.clip(round_half_away_from_zero(values), -128, 127).astype(np.int8)
    return table.reshape(-1), group.reshape(-1).astype(np.int64)


def integer_gelu(x: np.ndarray, table: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Apply IntegerGelu: ``y[..., c] = table[group[c] * 256 + x[..., c] + 128]`` (int8)."""
    _require_dtype(x, np.int8, "x")
    _require_dtype(table, np.int8, "table")
    _require_dtype(group, np.int64, "group")
    if x.ndim == 0:
        raise ValueError("x must have at least one axis (the channels)")
    if table.ndim != 1 or table.size == 0 or table.size % CODES_PER_TABLE:
        raise ValueError(f"table must be 1-D with a multiple of 256 entries, got shape {table.shape}")
    if group.shape != (x.shape[-1],):
        raise ValueError(f"group must have shape [{x.shape[-1]}] (one entry per channel), got {group.shape}")
    groups = table.size // CODES_PER_TABLE
    if group.min() < 0 or group.max() >= groups:
        raise ValueError(f"group entries must be in [0, {groups - 1}] for a table of {groups} groups")

    index = group * CODES_PER_TABLE + x.astype(np.int64) + 128
    return table[index]


# ---------------------------------------------------------------- IntegerSoftmax


def softmax_table(input_scale: float, *, table_bits: int = DEFAULT_SOFTMAX_TABLE_BITS) -> np.ndarray:
    """Build the IntegerSoftmax table ``table[d] = round(2**table_bits * exp(-d * input_scale))``.

    ``d`` is the distance of a code below its row's maximum, so ``table[0] = 2**table_bits``.
    More table bits shrink the table's rounding error but lower the longest row that the int32
    sum can hold: see ``max_softmax_length``.

    Raises:
        ValueError: ``input_scale`` is not positive and finite, or ``table_bits`` is not in
            [1, 22].
    """
    if not (math.isfinite(input_scale) and input_scale > 0):
        raise ValueError(f"input_scale must be positive and finite, got {input_scale}")
    if not 1 <= table_bits <= MAX_SOFTMAX_TABLE_BITS:
        raise ValueError(f"table_bits must be in [1, {MAX_SOFTMAX_TABLE_BITS}], got {table_bits}")

    distance = np.arange(CODES_PER_TABLE, dtype=np.float64)
    return round_half_away_from_zero(np.exp(-distance * input_scale) * 2.0**table_bits).astype(np.int32)


def max_softmax_length(table: np.ndarray) -> int:
    """Return the longest softmax row whose int32 sum and numerator cannot overflow with ``table``.

    The row sum is at most ``N * max(table)`` and the numerator at most
    ``255 * max(table) + sum // 2``. Both must stay below 2**31, which allows 65535 entries
    with a 15-bit table.
    """
    largest = int(table.max())
    if largest < 1:
        raise ValueError("table must contain at least one positive entry")
    longest_for_sum = (INT32_LIMIT - 1) // largest
    # N * largest // 2 <= room holds exactly when N * largest <= 2 * room + 1.
    room = INT32_LIMIT - 1 - 255 * largest
    longest_for_numerator = (2 * room + 1) // largest if room >= 0 else 0
    return max(0, min(longest_for_sum, longest_for_numerator))


def integer_softmax(x: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Apply IntegerSoftmax over the last axis and return uint8 probabilities in units of 1/255.

    With ``d = max(x) - x`` and ``e = table[d]`` (int32): ``y = (255 * e + S // 2) // S`` where
    ``S = sum(e)``. Since ``0 <= e <= S``, ``y`` is in [0, 255] without clipping.

    Raises:
        ValueError: the table is not 256 non-negative int32 entries with ``table[0] >= 1``, or
            the row is empty or longer than ``max_softmax_length(table)``.
    """
    _require_dtype(x, np.int8, "x")
    _require_dtype(table, np.int32, "table")
    if table.shape != (CODES_PER_TABLE,) or table.min() < 0 or table[0] < 1:
        raise ValueError("table must contain 256 non-negative int32 entries with table[0] >= 1")
    length = x.shape[-1] if x.ndim else 0
    if not 1 <= length <= max_softmax_length(table):
        raise ValueError(
            f"softmax rows must have 1 to {max_softmax_length(table)} entries for this table "
            f"(int32 sums), got {length}; build the table with fewer table_bits"
        )

    codes = x.astype(np.int32)
    exponent = table[codes.max(axis=-1, keepdims=True) - codes]
    total = exponent.sum(axis=-1, keepdims=True, dtype=np.int32)
    return ((exponent * 255 + total // 2) // total).astype(np.uint8)


# ---------------------------------------------------------------- IntegerLayerNormalization


def layer_norm_parameters(
    shift: np.ndarray,
    input_scale: float,
    gamma: np.ndarray,
    beta: np.ndarray,
    output_scale: np.ndarray,
    epsilon: float,
    *,
    fraction_bits: int = DEFAULT_FRACTION_BITS,
    multiplier_bits: int = DEFAULT_MULTIPLIER_BITS,
) -> LayerNormParameters:
    """Turn a float LayerNormalization and the activation scales into IntegerLayerNormalization inputs.

    Args:
        shift: int [C], channel ``c`` has scale ``input_scale * 2**-shift[c]``, shift in [0, 7].
        input_scale: the float base scale ``s``.
        gamma, beta: float [C], the LayerNormalization scale and bias.
        output_scale: float [C] (or a scalar), the scale of the int8 output codes.
        epsilon: the LayerNormalization epsilon, added to the variance.
        fraction_bits, multiplier_bits: see ``integer_layer_norm``.

    Raises:
        ValueError: an input is out of range, or C and the parameters are so large that an int64
            intermediate could overflow (the message names the bound).
    """
    shift = np.asarray(shift)
    if shift.ndim != 1 or shift.size == 0 or not np.issubdtype(shift.dtype, np.integer):
        raise ValueError(f"shift must be a non-empty 1-D integer array, got {shift.dtype} {shift.shape}")
    if shift.min() < 0 or shift.max() > MAX_SHIFT:
        raise ValueError(f"shift entries must be in [0, {MAX_SHIFT}], got [{shift.min()}, {shift.max()}]")
    channels = shift.size
    gamma = _channel_vector(gamma, channels, "gamma")
    beta = _channel_vector(beta, channels, "beta")
    output_scale = _positive_scales(np.broadcast_to(output_scale, (channels,)), "output_scale")
    if not (math.isfinite(input_scale) and input_scale > 0):
        raise ValueError(f"input_scale must be positive and finite, got {input_scale}")
    if not (math.isfinite(epsilon) and epsilon >= 0):
        raise ValueError(f"epsilon must be non-negative and finite, got {epsilon}")
    _check_fixed_point_bits(fraction_bits, multiplier_bits)

    finest_shift = int(shift.max())
    finest_scale = input_scale * 2.0**-finest_shift
    parameters = LayerNormParameters(
        align=(np.int64(1) << (finest_shift - shift.astype(np.int64))),
        multiplier=_to_int64(gamma / output_scale * 2.0**multiplier_bits, "multiplier"),
        bias=_to_int64(beta / output_scale * 2.0 ** (fraction_bits + multiplier_bits), "bias"),
        epsilon_term=_to_int64(np.array(channels**2 * epsilon / finest_scale**2), "epsilon_term"),
    )
    check_layer_norm_bounds(parameters, channels, fraction_bits=fraction_bits, multiplier_bits=multiplier_bits)
    return parameters


def check_layer_norm_bounds(
    parameters: LayerNormParameters, channels: int, *, fraction_bits: int, multiplier_bits: int
) -> None:
    """Raise ValueError unless no int64 step of ``integer_layer_norm`` can overflow for int8 inputs.

    With ``A = max|align|`` the aligned codes satisfy ``|a| <= 128 * A``. docs/operators.md
    derives the bounds below, and Python integers check them without overflowing.
    """
    _check_fixed_point_bits(fraction_bits, multiplier_bits)
    largest_align = int(np.abs(parameters.align).max())
    epsilon_term = int(parameters.epsilon_term)
    if largest_align < 1 or epsilon_term < 0:
        raise ValueError("align entries must be non-zero and epsilon_term must be non-negative")

    sum_of_squares_term = channels * channels * (128 * largest_align) ** 2  # C * sum(a**2)
    variance_term = (channels * 255 * largest_align) ** 2 // 4 + epsilon_term  # C**2 * var + eps
    numerator = (math.isqrt(channels - 1) + 1) * 2 ** (fraction_bits + 32) + 2**31
    normalized = (math.isqrt(channels - 1) + 2) * 2**fraction_bits  # |n|
    output = (
        normalized * int(np.abs(parameters.multiplier).max())
        + int(np.abs(parameters.bias).max())
        + 2 ** (fraction_bits + multiplier_bits - 1)
    )
    limits = [
        ("C * sum(a**2)", sum_of_squares_term, INT64_LIMIT),
        ("C**2 * variance + epsilon_term", variance_term, ISQRT_LIMIT),
        ("rounding numerator of the normalized value", numerator, INT64_LIMIT),
        ("n * multiplier + bias", output, INT64_LIMIT),
    ]
    for name, bound, limit in limits:
        if bound >= limit:
            raise ValueError(
                f"{name} can reach {bound} >= 2**{limit.bit_length() - 1} with C={channels}, "
                f"max align={largest_align}, fraction_bits={fraction_bits}, multiplier_bits="
                f"{multiplier_bits}; use fewer channels, smaller shifts, smaller gamma/output_scale "
                "or fewer fixed-point bits"
            )


def integer_sqrt(v: np.ndarray) -> np.ndarray:
    """Compute ``max(floor(sqrt(v)), 1)`` of int64 ``0 <= v < 2**62`` with integer steps only.

    The start ``x0 = 2**e`` counts the powers of four ``4**j <= v`` (j = 0..31), so
    ``sqrt(v) < x0 <= 2 * sqrt(v)``. Each step ``x = max(min(x, (x + v // x) // 2), 1)`` then
    moves down towards ``floor(sqrt(v))`` and stays there. From a relative error of at most 1,
    Newton's relative error after five steps is below 1.1e-15, so ``x5 - sqrt(v) < 2**31 *
    1.1e-15 < 1`` and the sixth step lands on ``floor(sqrt(v))``. ``v = 0`` returns 1.
    """
    _require_dtype(v, np.int64, "v")
    if v.size and (v.min() < 0 or v.max() >= ISQRT_LIMIT):
        raise ValueError(f"integer_sqrt needs 0 <= v < 2**62, got values in [{v.min()}, {v.max()}]")

    exponent = count_powers_of_four(v)
    root = POWERS_OF_TWO[exponent]
    for _ in range(ISQRT_NEWTON_STEPS):
        root = np.maximum(np.minimum(root, (root + v // root) // 2), 1)
    return root


def count_powers_of_four(v: np.ndarray) -> np.ndarray:
    """Count, for each ``v``, the powers ``4**j`` (j = 0..31) that are ``<= v`` (int64)."""
    return np.sum(v[..., None] >= POWERS_OF_FOUR, axis=-1, dtype=np.int64)


def integer_layer_norm(
    x: np.ndarray,
    align: np.ndarray,
    multiplier: np.ndarray,
    bias: np.ndarray,
    epsilon_term: np.ndarray,
    *,
    fraction_bits: int = DEFAULT_FRACTION_BITS,
    multiplier_bits: int = DEFAULT_MULTIPLIER_BITS,
) -> np.ndarray:
    """Apply IntegerLayerNormalization over the last axis and return int8 codes.

    All steps are int64 (F = fraction_bits, G = multiplier_bits)::

        a = x * align                       d = C * a - sum(a)        (= C * (a - mean))
        v = C * sum(a**2) - sum(a)**2 + epsilon_term                  (= sum(d**2) // C + eps)
        P = 31 - #{j : 4**j <= v}           sigma = isqrt(v * 4**P)   (31-bit root)
        n = round_half_away(d * 2**(F + P) / sigma)                   (= d / sqrt(v) in F bits)
        y = clip(floor((n * multiplier + bias + 2**(F+G-1)) / 2**(F+G)), -128, 127)

    Raises:
        ValueError: dtypes or shapes do not match, or the parameters fail
            ``check_layer_norm_bounds``.
    """
    parameters = _validated_layer_norm_inputs(x, align, multiplier, bias, epsilon_term)
    channels = x.shape[-1]
    check_layer_norm_bounds(parameters, channels, fraction_bits=fraction_bits, multiplier_bits=multiplier_bits)

    aligned = x.astype(np.int64) * align
    total = aligned.sum(axis=-1, keepdims=True)
    deviation = channels * aligned - total
    variance = channels * (aligned * aligned).sum(axis=-1, keepdims=True) - total * total + epsilon_term

    headroom = NORMALIZED_VARIANCE_POWER_OF_FOUR - count_powers_of_four(variance)
    sigma = integer_sqrt(variance * POWERS_OF_FOUR[headroom])
    numerator = np.abs(deviation) * POWERS_OF_TWO[headroom + fraction_bits + 1] + sigma
    magnitude = numerator // (2 * sigma)
    normalized = np.where(deviation < 0, -magnitude, magnitude)

    total_bits = fraction_bits + multiplier_bits
    scaled = normalized * multiplier + bias + POWERS_OF_TWO[total_bits - 1]
    return np.clip(scaled // POWERS_OF_TWO[total_bits], -128, 127).astype(np.int8)


# ---------------------------------------------------------------- validation helpers


def _validated_layer_norm_inputs(
    x: np.ndarray, align: np.ndarray, multiplier: np.ndarray, bias: np.ndarray, epsilon_term: np.ndarray
) -> LayerNormParameters:
    _require_dtype(x, np.int8, "x")
    channels = x.shape[-1] if x.ndim else 0
    if channels < 1:
        raise ValueError(f"x must have at least one channel on its last axis, got shape {x.shape}")
    for name, value in (("align", align), ("multiplier", multiplier), ("bias", bias)):
        _require_dtype(value, np.int64, name)
        if value.shape != (channels,):
            raise ValueError(f"{name} must have shape [{channels}] (one entry per channel), got {value.shape}")
    _require_dtype(epsilon_term, np.int64, "epsilon_term")
    if epsilon_term.size != 1:
        raise ValueError(f"epsilon_term must be a scalar, got shape {epsilon_term.shape}")
    return LayerNormParameters(align, multiplier, bias, epsilon_term.reshape(()))


def _check_fixed_point_bits(fraction_bits: int, multiplier_bits: int) -> None:
    if not 1 <= fraction_bits <= MAX_FRACTION_BITS:
        raise ValueError(f"fraction_bits must be in [1, {MAX_FRACTION_BITS}], got {fraction_bits}")
    if not 1 <= multiplier_bits <= MAX_MULTIPLIER_BITS:
        raise ValueError(f"multiplier_bits must be in [1, {MAX_MULTIPLIER_BITS}], got {multiplier_bits}")


def _require_dtype(value: np.ndarray, dtype: type, name: str) -> None:
    if not isinstance(value, np.ndarray) or value.dtype != dtype:
        found = value.dtype if isinstance(value, np.ndarray) else type(value).__name__
        raise TypeError(f"{name} must be a NumPy array of {np.dtype(dtype).name}, got {found}")


def _positive_scales(scale: np.ndarray, name: str) -> np.ndarray:
    scale = np.asarray(scale, dtype=np.float64)
    if scale.ndim != 1 or scale.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array (one scale per channel), got shape {scale.shape}")
    if not np.all(np.isfinite(scale) & (scale > 0)):
        raise ValueError(f"{name} must contain positive finite values")
    return scale


def _channel_vector(value: np.ndarray, channels: int, name: str) -> np.ndarray:
    value = np.asarray(value, dtype=np.float64)
    if value.shape != (channels,) or not np.all(np.isfinite(value)):
        raise ValueError(f"{name} must contain {channels} finite values, got shape {value.shape}")
    return value


def _to_int64(value: np.ndarray, name: str) -> np.ndarray:
    """Round ``value`` half away from zero to int64, rejecting values that an int64 cannot hold."""
    rounded = round_half_away_from_zero(np.asarray(value, dtype=np.float64))
    if not np.all(np.abs(rounded) < 2.0**62):
        raise ValueError(f"{name} does not fit in int64 (|{name}| >= 2**62); the float parameters are too large")
    return np.asarray(rounded, dtype=np.int64)
