"""Blockwise quantization kernels: hand-computed scales, exact round trips, scale encoding."""

import numpy as np
import pytest

from bct_onnx.blockwise import Rounding, ScaleFormat, code_range, quantize_blocks


def test_code_range_by_bits():
    assert code_range(4, symmetric=True) == (-8, 7)
    assert code_range(4, symmetric=False) == (0, 15)
    assert code_range(8, symmetric=True) == (-128, 127)
    assert code_range(8, symmetric=False) == (0, 255)


def test_one_block_symmetric_scale():
    # max |x| = 1.4, so the scale is 1.4 / 7 = 0.2 and every value is a multiple of it.
    x = np.array([[0.2, -1.4, 0.6, 1.0]], np.float32)
    result = quantize_blocks(x, bits=4, block_size=4, rounding=Rounding.NEAREST)
    np.testing.assert_allclose(result.scale, [[0.2]], rtol=1e-6)
    np.testing.assert_array_equal(result.codes, [[1, -7, 3, 5]])
    assert result.zero_point is None


def test_two_blocks_get_own_scales():
    # Scales 7/7 and 1.75/7; -3.5 is a tie that rounds to the even code -4.
    x = np.array([[7.0, -3.5, 0.0, 1.0, 1.75, 0.0, -0.75, 0.25]], np.float32)
    result = quantize_blocks(x, bits=4, block_size=4, rounding=Rounding.NEAREST)
    np.testing.assert_allclose(result.scale, [[1.0, 0.25]], rtol=1e-6)
    np.testing.assert_array_equal(result.codes, [[7, -4, 0, 1, 7, 0, -3, 1]])


def test_one_block_asymmetric_scale_and_zero_point():
    # Range [-0.5, 1.0] over 15 steps: scale 0.1, and -0.5 maps to code 0 with zero point 5.
    x = np.array([[-0.5, 0.0, 0.3, 1.0]], np.float32)
    result = quantize_blocks(x, bits=4, block_size=4, symmetric=False, rounding=Rounding.NEAREST)
    np.testing.assert_allclose(result.scale, [[0.1]], rtol=1e-6)
    np.testing.assert_array_equal(result.zero_point, [[5]])
    np.testing.assert_array_equal(result.codes, [[0, 5, 8, 15]])


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("rounding", list(Rounding))
def test_representable_weights_round_trip_exactly(bits, rounding):
    rng = np.random.default_rng(1)
    q_min, q_max = code_range(bits, symmetric=True)
    codes = rng.integers(q_min + 1, q_max + 1, size=(6, 32))
    codes[:, ::8] = q_max  # every block reaches the largest code, which fixes its scale
    scales = np.float32(2.0) ** rng.integers(-6, 2, size=(6, 4))
    x = (codes * np.repeat(scales, 8, axis=1)).astype(np.float32)
    result = quantize_blocks(x, bits=bits, block_size=8, rounding=rounding)
    np.testing.assert_array_equal(result.dequantize(), x)
    np.testing.assert_array_equal(result.codes, codes)


def test_all_zero_block_stays_zero():
    x = np.zeros((2, 8), np.float32)
    result = quantize_blocks(x, bits=4, block_size=4)
    np.testing.assert_array_equal(result.dequantize(), x)
    assert np.all(np.isfinite(result.scale))


def test_mse_rounding_never_worse_than_nearest():
    rng = np.random.default_rng(2)
    x = rng.standard_t(df=3, size=(64, 128)).astype(np.float32)
    nearest = quantize_blocks(x, bits=4, block_size=32, rounding=Rounding.NEAREST)
    mse = quantize_blocks(x, bits=4, block_size=32, rounding=Rounding.MSE)
    error_nearest = np.square(nearest.dequantize() - x).reshape(64, 4, 32).sum(-1)
    error_mse = np.square(mse.dequantize() - x).reshape(64, 4, 32).sum(-1)
    assert np.all(error_mse <= error_nearest + 1e-6)
    assert error_mse.sum() < 0.9 * error_nearest.sum()


def test_uint8_scales_hand_computed():
    # Block scales 1.0 and 0.5 in column 0, 0.2 and 0.1 in column 1: the scales of scales are
    # the column maxima / 255, and codes round up so that no value is clipped.
    x = np.array([[7.0, 0.0, 1.4, 0.0], [3.5, 0.0, 0.7, 0.0]], np.float32)
    result = quantize_blocks(x, bits=4, block_size=2, rounding=Rounding.NEAREST, scale_format=ScaleFormat.UINT8)
    np.testing.assert_allclose(result.scale_of_scales, [1.0 / 255, 0.2 / 255], rtol=1e-6)
    np.testing.assert_array_equal(result.scale_codes, [[255, 255], [128, 128]])
    np.testing.assert_allclose(result.scale, result.scale_codes * result.scale_of_scales, rtol=1e-6)
    assert np.max(np.abs(result.dequantize() - x)) <= 0.5 * result.scale.max() + 1e-6


def test_uint8_scales_keep_error_close_to_float_scales():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((256, 256)).astype(np.float32)
    float_scales = quantize_blocks(x, bits=4, block_size=64)
    uint8_scales = quantize_blocks(x, bits=4, block_size=64, scale_format=ScaleFormat.UINT8)
    error_float = np.square(float_scales.dequantize() - x).mean()
    error_uint8 = np.square(uint8_scales.dequantize() - x).mean()
    assert error_uint8 < 1.05 * error_float


def test_float16_scales_are_float16_values():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 64)).astype(np.float32)
    result = quantize_blocks(x, bits=8, block_size=16, scale_format=ScaleFormat.FLOAT16)
    np.testing.assert_array_equal(result.scale, result.scale.astype(np.float16).astype(np.float32))


@pytest.mark.parametrize(
    ("shape", "block_size", "message"),
    [((4,), 2, "2-D"), ((2, 10), 4, "multiple of block size 4")],
)
def test_invalid_shapes_rejected(shape, block_size, message):
    with pytest.raises(ValueError, match=message):
        quantize_blocks(np.zeros(shape, np.float32), bits=4, block_size=block_size)
