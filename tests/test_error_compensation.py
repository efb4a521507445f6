"""Weight rounding with error compensation (GPTQ): the kernel, the input moments, the pass."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import float_input, int64_input, make_model, matmul_model, run_model
from onnx import helper

from bct_onnx import compress_model
from bct_onnx.blockwise import Rounding, ScaleFormat, quantize_blocks, quantize_blocks_compensated
from bct_onnx.calibration import input_second_moments
from bct_onnx.config import CompressConfig


def correlated_inputs(samples: int, k: int, seed: int = 0) -> np.ndarray:
    """Return [samples, k] inputs whose channels share a few common factors, as activations do.

    The factor loadings depend on ``k`` only, so every seed draws samples of one distribution.
    """
    loadings = np.random.default_rng(k).normal(size=(4, k))
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(samples, 4)) @ loadings + 0.3 * rng.normal(size=(samples, k))).astype(np.float32)


def output_error(inputs: np.ndarray, weight: np.ndarray, dequantized: np.ndarray) -> float:
    return float(np.mean((inputs @ weight - inputs @ dequantized) ** 2))


@pytest.mark.parametrize("scale_format", list(ScaleFormat))
def test_uncorrelated_inputs_give_plain_rounding(scale_format):
    # With a diagonal covariance no error moves to another column, so the codes and scales are
    # exactly those of quantize_blocks.
    rng = np.random.default_rng(1)
    weight = rng.normal(size=(16, 128)).astype(np.float32)
    covariance = np.diag(rng.uniform(0.5, 2.0, size=128))
    options = dict(bits=4, block_size=32, rounding=Rounding.MSE, scale_format=scale_format)
    plain = quantize_blocks(weight, **options)
    compensated = quantize_blocks_compensated(weight, covariance, **options)
    np.testing.assert_array_equal(compensated.codes, plain.codes)
    np.testing.assert_array_equal(compensated.scale, plain.scale)
    if scale_format is ScaleFormat.UINT8:
        np.testing.assert_array_equal(compensated.scale_codes, plain.scale_codes)
        np.testing.assert_array_equal(compensated.scale_of_scales, plain.scale_of_scales)


@pytest.mark.parametrize("symmetric", [True, False])
def test_compensation_lowers_the_output_error_on_correlated_inputs(symmetric):
    rng = np.random.default_rng(2)
    inputs = correlated_inputs(2048, 128)
    weight = rng.normal(size=(128, 32)).astype(np.float32)  # [K, N]: the layout of a MatMul weight
    options = dict(bits=4, block_size=32, symmetric=symmetric)
    plain = quantize_blocks(weight.T, **options).dequantize().T
    compensated = quantize_blocks_compensated(weight.T, inputs.T.astype(np.float64) @ inputs, **options)
    held_out = correlated_inputs(512, 128, seed=1)
    ratio = output_error(held_out, weight, compensated.dequantize().T) / output_error(held_out, weight, plain)
    assert ratio < 0.2


def test_codes_in_range_one_scale_per_block():
    rng = np.random.default_rng(3)
    inputs = correlated_inputs(1024, 64)
    weight = rng.normal(size=(8, 64)).astype(np.float32)
    result = quantize_blocks_compensated(weight, inputs.T @ inputs.astype(np.float64), bits=4, block_size=16)
    assert result.codes.dtype == np.int8
    assert result.codes.min() >= -8
    assert result.codes.max() <= 7
    assert result.scale.shape == (8, 4)
    np.testing.assert_array_equal(result.dequantize(), result.codes * np.repeat(result.scale, 16, axis=1))


def test_never_used_inputs_zero_their_weights():
    weight = np.ones((4, 8), np.float32)
    covariance = np.eye(8)
    covariance[5, 5] = 0.0  # input 5 was zero on every calibration sample
    result = quantize_blocks_compensated(weight, covariance, bits=4, block_size=4)
    assert np.all(result.codes[:, 5] == 0)
    assert np.all(result.dequantize()[:, [0, 1, 2, 3, 4, 6, 7]] == 1.0)


@pytest.mark.parametrize(
    ("covariance_shape", "block_size", "message"),
    [((8, 8), 4, "does not match"), ((16, 16), 5, "not a multiple")],
)
def test_invalid_shapes_rejected(covariance_shape, block_size, message):
    with pytest.raises(ValueError, match=message):
        quantize_blocks_compensated(np.ones((4, 16), np.float32), np.eye(*covariance_shape), bits=4,
                                    block_size=block_size)


def test_input_moments_leave_out_padding():
    node = helper.make_node("Identity", ["x"], ["y"])
    model = make_model([node], [float_input("x", ["batch", "sequence", 2]),
                                int64_input("attention_mask", ["batch", "sequence"])],
                       [float_input("y", ["batch", "sequence", 2])], {})
    x = np.array([[[1.0, 2.0], [100.0, 100.0]], [[3.0, 0.0], [0.0, 1.0]]], np.float32)
    mask = np.array([[1, 0], [1, 1]], np.int64)
    batches = [{"x": x[:1], "attention_mask": mask[:1]}, {"x": x[1:], "attention_mask": mask[1:]}]
    moments = input_second_moments(model, ["x"], batches)
    unmasked = np.array([[1.0, 2.0], [3.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(moments["x"], unmasked.T @ unmasked)


def test_calibrated_weights_only_recipe_compensates():
    rng = np.random.default_rng(4)
    weight = rng.normal(size=(128, 16)).astype(np.float32)
    model = matmul_model(weight)
    calibration = [{"x": batch} for batch in np.split(correlated_inputs(512, 128), 4)]
    held_out = correlated_inputs(256, 128, seed=1)

    def error(config: CompressConfig, batches) -> float:
        compressed = compress_model(model, config=config, calibration=batches).model
        return float(np.mean((run_model(compressed, {"x": held_out})[0] - held_out @ weight) ** 2))

    plain = error(CompressConfig(), None)
    assert error(CompressConfig(error_compensation=False), calibration) == plain
    assert error(CompressConfig(), calibration) < 0.6 * plain


def test_compressed_model_stays_valid_onnx_with_compensation():
    weight = np.random.default_rng(5).normal(size=(100, 8)).astype(np.float32)  # K not a multiple of 64
    calibration = [{"x": correlated_inputs(64, 100)}]
    compressed = compress_model(matmul_model(weight), calibration=calibration).model
    onnx.checker.check_model(compressed, full_check=True)
    x = correlated_inputs(32, 100, seed=9)
    relative = np.linalg.norm(run_model(compressed, {"x": x})[0] - x @ weight) / np.linalg.norm(x @ weight)
    assert relative < 0.1


def test_too_few_calibration_vectors_warn(caplog):
    model = matmul_model(np.ones((128, 4), np.float32))
    with caplog.at_level("WARNING", logger="bct_onnx.calibration"):
        compress_model(model, calibration=[{"x": correlated_inputs(64, 128)}])
    assert "64 vectors for 128 channels" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="bct_onnx.calibration"):
        compress_model(model, calibration=[{"x": correlated_inputs(256, 128)}])
    assert caplog.text == ""
