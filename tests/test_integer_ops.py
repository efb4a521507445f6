"""The integer operators: function body, custom-op kernel and NumPy kernel agree bit for bit,
stay within their documented error bounds, and reject parameters that could overflow."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import bct_onnx.integer_ops as integer_ops
from bct_onnx.integer_ops import (
    custom_op_session_options,
    function_protos,
    gelu_table,
    integer_gelu,
    integer_layer_norm,
    integer_softmax,
    integer_sqrt,
    kernel_calls,
    layer_norm_parameters,
    make_node,
    max_softmax_length,
    softmax_table,
)
from bct_onnx.integer_ops.functions import BodyBuilder, append_integer_sqrt
from bct_onnx.integer_ops.reference import ISQRT_NEWTON_STEPS, LayerNormParameters

ONNX_TYPES = {np.dtype(np.int8): TensorProto.INT8, np.dtype(np.uint8): TensorProto.UINT8}
INPUT_KINDS = ["random", "all_min", "all_max", "alternating"]
BASE_SCALE = 0.03


# ---------------------------------------------------------------- helpers


def make_codes(shape: tuple[int, ...], kind: str, seed: int = 0) -> np.ndarray:
    """Return int8 codes of ``shape``: random, saturated, alternating or shaped for one operator."""
    rng = np.random.default_rng(seed)
    if kind == "random":
        return rng.integers(-128, 128, size=shape).astype(np.int8)
    if kind == "all_min":
        return np.full(shape, -128, np.int8)
    if kind == "all_max":
        return np.full(shape, 127, np.int8)
    if kind == "alternating":
        return np.where(np.arange(shape[-1]) % 2 == 0, 127, -128).astype(np.int8) * np.ones(shape, np.int8)
    if kind == "constant_rows":
        return np.broadcast_to(rng.integers(-128, 128, size=shape[:-1] + (1,)), shape).astype(np.int8)
    if kind == "one_outlier":
        codes = np.broadcast_to(rng.integers(-100, 100, size=shape[:-1] + (1,)), shape).astype(np.int8)
        codes[..., 3] += 1
        return codes
    if kind == "masked":
        codes = np.full(shape, -128, np.int8)
        codes[..., 0] = rng.integers(0, 128, size=shape[:-1])
        codes[..., shape[-1] // 2] = rng.integers(80, 128, size=shape[:-1])
        return codes
    raise ValueError(kind)


def one_node_model(
    op_type: str,
    x: np.ndarray,
    initializers: dict[str, np.ndarray],
    output_dtype: type,
    *,
    opset: int = 21,
    attributes: dict[str, int] | None = None,
) -> onnx.ModelProto:
    """Build a checked model with one ``op_type`` node, its function bodies and dynamic leading axes.

    ``attributes`` replaces the attributes that ``make_node`` writes, so ``{}`` leaves them out.
    """
    inputs = ["X", *initializers]
    if attributes is None:
        node = make_node(op_type, inputs, ["Y"], name="op")
    else:
        node = helper.make_node(op_type, inputs, ["Y"], name="op", domain=integer_ops.DOMAIN, **attributes)
    shape = [f"axis{i}" for i in range(x.ndim - 1)] + [x.shape[-1]]
    graph = helper.make_graph(
        [node],
        "integer_op",
        [helper.make_tensor_value_info("X", TensorProto.INT8, shape)],
        [helper.make_tensor_value_info("Y", ONNX_TYPES[np.dtype(output_dtype)], shape)],
        [numpy_helper.from_array(value, name) for name, value in initializers.items()],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(integer_ops.DOMAIN, 1)],
        functions=function_protos(opset),
    )
    model.ir_version = 10
    onnx.checker.check_model(model, full_check=True)
    return model


def run_function_body(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"X": x})[0]


def run_custom_op(model: onnx.ModelProto, x: np.ndarray, op_type: str) -> np.ndarray:
    """Run ``model`` with the extensions library and check that the Python kernel ran once."""
    calls_before = kernel_calls[op_type]
    session = ort.InferenceSession(
        model.SerializeToString(), custom_op_session_options(), providers=["CPUExecutionProvider"]
    )
    output = session.run(None, {"X": x})[0]
    assert kernel_calls[op_type] == calls_before + 1, f"ONNX Runtime did not run the {op_type} Python kernel"
    return output


def assert_three_agree(
    op_type: str, x: np.ndarray, initializers: dict[str, np.ndarray], expected: np.ndarray, **model_options
) -> None:
    """Assert that the function body and the custom-op kernel both return ``expected`` exactly."""
    model = one_node_model(op_type, x, initializers, expected.dtype, **model_options)
    from_body = run_function_body(model, x)
    from_kernel = run_custom_op(model, x, op_type)
    assert from_body.dtype == expected.dtype
    assert from_kernel.dtype == expected.dtype
    np.testing.assert_array_equal(from_body, expected)
    np.testing.assert_array_equal(from_kernel, expected)


def channel_shifts(channels: int, seed: int = 0) -> np.ndarray:
    """Return per-channel shifts in [0, 7] that use every value at least once."""
    shifts = np.random.default_rng(seed).integers(0, 8, size=channels)
    shifts[:8] = np.arange(8)
    return shifts


def gelu_inputs(channels: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return input scales, output scales and the table and group for a multi-group GELU."""
    input_scale = BASE_SCALE * 2.0 ** -channel_shifts(channels, seed)
    output_scale = input_scale * np.random.default_rng(seed).choice([1.0, 1.25, 1.5], size=channels)
    table, group = gelu_table(input_scale, output_scale)
    return input_scale, output_scale, table, group


def float_layer_norm(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, epsilon: float
) -> tuple[np.ndarray, np.ndarray]:
    """Return the float64 LayerNormalization of ``x`` over the last axis and the normalized values."""
    mean = x.mean(axis=-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    normalized = (x - mean) / np.sqrt(variance + epsilon)
    return gamma * normalized + beta, normalized


def layer_norm_case(
    channels: int, *, epsilon: float = 1e-5, seed: int = 0
) -> tuple[np.ndarray, LayerNormParameters, dict]:
    """Return shifts, integer parameters and the float parameters of a LayerNormalization."""
    rng = np.random.default_rng(seed)
    shifts = channel_shifts(channels, seed)
    gamma = rng.normal(1.0, 0.3, size=channels)
    beta = rng.normal(0.0, 0.2, size=channels)
    # Uniform codes put about 4.5 standard deviations on the shift-0 channels: a range of 8
    # keeps every output unclipped.
    output_scale = (8 * np.abs(gamma) + np.abs(beta)) / 127
    floats = {"gamma": gamma, "beta": beta, "output_scale": output_scale, "epsilon": epsilon}
    return shifts, layer_norm_parameters(shifts, BASE_SCALE, **floats), floats


# ---------------------------------------------------------------- IntegerGelu


@pytest.mark.parametrize("shape", [(5, 384), (2, 7, 1536), (2, 3, 5, 64)])
@pytest.mark.parametrize("kind", INPUT_KINDS)
def test_gelu_three_implementations_agree(shape, kind):
    _, _, table, group = gelu_inputs(shape[-1])
    x = make_codes(shape, kind)
    expected = integer_gelu(x, table, group)
    assert expected.dtype == np.int8
    assert_three_agree("IntegerGelu", x, {"table": table, "group": group}, expected)


def test_gelu_table_groups_distinct_scale_pairs():
    table, group = gelu_table(np.array([0.1, 0.2, 0.1, 0.2]), np.array([0.1, 0.1, 0.1, 0.3]))
    assert table.shape == (3 * 256,)
    np.testing.assert_array_equal(group, [0, 1, 0, 2])
    # Code 10 at input scale 0.1 is 1.0: gelu(1.0) = 0.841344746 and 0.841.../0.1 rounds to 8.
    assert table[0 * 256 + 128 + 10] == 8
    assert table[128] == 0


def test_gelu_error_within_half_output_step():
    channels = 384
    input_scale, output_scale, table, group = gelu_inputs(channels, seed=1)
    x = make_codes((64, channels), "random", seed=1)
    y = integer_gelu(x, table, group) * output_scale
    error = np.abs(y - integer_ops.reference.gelu(x * input_scale))
    bound = 0.5 * output_scale
    assert np.all(error <= bound * (1 + 1e-9))
    assert (error / bound).max() >= 0.2


# ---------------------------------------------------------------- IntegerSoftmax


@pytest.mark.parametrize("shape", [(3, 384), (2, 4, 1536), (2, 2, 3, 64)])
@pytest.mark.parametrize("kind", INPUT_KINDS + ["masked", "constant_rows"])
def test_softmax_three_implementations_agree(shape, kind):
    table = softmax_table(0.08)
    x = make_codes(shape, kind)
    expected = integer_softmax(x, table)
    assert expected.dtype == np.uint8
    assert_three_agree("IntegerSoftmax", x, {"table": table}, expected)


def test_softmax_agrees_with_20_bit_table():
    table = softmax_table(0.05, table_bits=20)
    x = make_codes((4, 2, 1536), "masked", seed=3)
    assert_three_agree("IntegerSoftmax", x, {"table": table}, integer_softmax(x, table))


def test_softmax_constant_row_is_uniform():
    y = integer_softmax(np.zeros((1, 5), np.int8), softmax_table(0.1))
    np.testing.assert_array_equal(y, [[51, 51, 51, 51, 51]])  # 255 / 5


def softmax_error_bound(probability: np.ndarray, table_bits: int) -> np.ndarray:
    """Return the per-entry bound of docs/operators.md: 0.5/255 + (0.5 + 0.5 (N - 1) p) / 2**b."""
    length = probability.shape[-1]
    return 0.5 / 255 + (0.5 + 0.5 * (length - 1) * probability) / 2.0**table_bits


def float_softmax(x: np.ndarray) -> np.ndarray:
    shifted = np.exp(x - x.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("table_bits", [15, 20])
def test_softmax_error_within_bound_on_random_rows(table_bits):
    scale = 0.08
    x = make_codes((64, 384), "random", seed=4)
    probability = float_softmax(x * scale)
    error = np.abs(integer_softmax(x, softmax_table(scale, table_bits=table_bits)) / 255 - probability)
    bound = softmax_error_bound(probability, table_bits)
    assert np.all(error <= bound + 1e-12)
    assert (error / bound).max() >= 0.2


def test_softmax_table_rounding_dominates_masked_rows():
    # exp(-255 s) * 2**15 = 0.49, so every masked entry rounds to 0 and the float mass of
    # 1535 such entries (2.2%) moves to the maximum: about 6 output steps of error.
    length = 1536
    scale = math.log(2**15 / 0.49) / 255
    x = np.full((1, length), -128, np.int8)
    x[0, 0] = 127
    probability = float_softmax(x * scale)
    error = np.abs(integer_softmax(x, softmax_table(scale)) / 255 - probability)
    bound = softmax_error_bound(probability, 15)
    assert error.max() > 5 / 255
    assert np.all(error <= bound + 1e-12)
    assert (error / bound).max() >= 0.8


def test_softmax_max_length_by_table_bits():
    assert max_softmax_length(softmax_table(0.1)) == 65535
    assert max_softmax_length(softmax_table(0.1, table_bits=20)) == 2047


def test_softmax_rejects_rows_too_long_for_int32():
    table = softmax_table(0.1, table_bits=20)
    with pytest.raises(ValueError, match="1 to 2047 entries"):
        integer_softmax(np.zeros((1, 2048), np.int8), table)


@pytest.mark.parametrize("table_bits", [0, 23])
def test_softmax_table_rejects_table_bits(table_bits):
    with pytest.raises(ValueError, match="table_bits"):
        softmax_table(0.1, table_bits=table_bits)


# ---------------------------------------------------------------- integer square root

ISQRT_EDGE_VALUES = [0, 1, 2, 3, 4, 5, 8, 9, 10, 15, 16, 17, 2**31, 2**60 - 1, 2**60, 2**61, 2**62 - 1]


def isqrt_test_values() -> np.ndarray:
    squares = [m * m + offset for m in (2, 3, 1000, 2**25 + 1, 2**30, 2**31 - 1) for offset in (-1, 0, 1)]
    powers_of_four = [4**j + offset for j in range(1, 31) for offset in (-1, 0, 1)]
    rng = np.random.default_rng(5)
    random = [int(v) for v in rng.integers(0, 2**62, size=20000, dtype=np.int64)]
    random += [int(v) >> int(k) for v, k in zip(rng.integers(0, 2**62, size=5000, dtype=np.int64),
                                                rng.integers(0, 62, size=5000))]
    values = [v for v in ISQRT_EDGE_VALUES + squares + powers_of_four + random if 0 <= v < 2**62]
    return np.array(values, dtype=np.int64)


def expected_isqrt(values: np.ndarray) -> np.ndarray:
    return np.array([max(math.isqrt(int(v)), 1) for v in values], dtype=np.int64)


def test_isqrt_matches_math_isqrt():
    values = isqrt_test_values()
    np.testing.assert_array_equal(integer_sqrt(values), expected_isqrt(values))


def test_isqrt_function_body_matches_math_isqrt():
    values = isqrt_test_values()
    body = BodyBuilder("isqrt")
    root = append_integer_sqrt(body, "v")
    graph = helper.make_graph(
        body.nodes,
        "isqrt",
        [helper.make_tensor_value_info("v", TensorProto.INT64, ["n", 1])],
        [helper.make_tensor_value_info(root, TensorProto.INT64, ["n", 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (roots,) = session.run(None, {"v": values[:, None]})
    np.testing.assert_array_equal(roots[:, 0], expected_isqrt(values))


def test_isqrt_needs_six_newton_steps():
    # (2**25 + 1)**2 - 1 starts at 2**26, almost twice its root, and sits just below a square:
    # five steps stop one above the root.
    value = (2**25 + 1) ** 2 - 1
    root = 2**26
    for _ in range(ISQRT_NEWTON_STEPS - 1):
        root = max(min(root, (root + value // root) // 2), 1)
    assert ISQRT_NEWTON_STEPS == 6
    assert root == math.isqrt(value) + 1
    assert integer_sqrt(np.array([value], np.int64))[0] == math.isqrt(value)


def test_isqrt_rejects_values_outside_domain():
    with pytest.raises(ValueError, match="2\\*\\*62"):
        integer_sqrt(np.array([2**62], np.int64))
    with pytest.raises(ValueError, match="2\\*\\*62"):
        integer_sqrt(np.array([-1], np.int64))


# ---------------------------------------------------------------- IntegerLayerNormalization

LAYER_NORM_KINDS = INPUT_KINDS + ["constant_rows", "one_outlier"]


@pytest.mark.parametrize("shape", [(4, 384), (2, 3, 1536), (2, 2, 3, 384)])
@pytest.mark.parametrize("kind", LAYER_NORM_KINDS)
def test_layer_norm_three_implementations_agree(shape, kind):
    _, parameters, _ = layer_norm_case(shape[-1])
    x = make_codes(shape, kind)
    expected = integer_layer_norm(x, *parameters)
    assert expected.dtype == np.int8
    assert_three_agree("IntegerLayerNormalization", x, parameters._asdict(), expected)


@pytest.mark.parametrize("epsilon", [0.0, 1e-5])
@pytest.mark.parametrize("uniform_shifts", [True, False])
def test_layer_norm_agrees_on_zero_variance_rows(epsilon, uniform_shifts):
    # Equal values in every channel make the variance 0, so every output is the bias. With
    # epsilon 0 the variance term is 0 too and sigma falls back to 1. With mixed shifts the
    # only equal values are 0 and -BASE_SCALE (codes -2**shift).
    channels = 384
    shifts, _, floats = layer_norm_case(channels, epsilon=epsilon)
    if uniform_shifts:
        shifts = np.full(channels, 3)
        x = make_codes((2, 3, channels), "constant_rows")
    else:
        x = np.stack([np.zeros(channels), -(2**shifts)]).astype(np.int8)
    parameters = layer_norm_parameters(shifts, BASE_SCALE, **floats)
    assert (int(parameters.epsilon_term) == 0) == (epsilon == 0.0)

    expected = integer_layer_norm(x, *parameters)
    bias_codes = np.floor(floats["beta"] / floats["output_scale"] + 0.5)
    np.testing.assert_array_equal(expected, np.broadcast_to(bias_codes, x.shape))
    assert_three_agree("IntegerLayerNormalization", x, parameters._asdict(), expected)


def test_layer_norm_agrees_with_other_fixed_point_bits():
    shifts, _, floats = layer_norm_case(384, seed=6)
    parameters = layer_norm_parameters(shifts, BASE_SCALE, **floats, fraction_bits=12, multiplier_bits=20)
    x = make_codes((2, 5, 384), "random", seed=6)
    expected = integer_layer_norm(x, *parameters, fraction_bits=12, multiplier_bits=20)
    assert not np.array_equal(expected, integer_layer_norm(x, *parameters))
    assert_three_agree("IntegerLayerNormalization", x, parameters._asdict(), expected,
                       attributes={"fraction_bits": 12, "multiplier_bits": 20})


def test_layer_norm_function_body_uses_attribute_defaults():
    _, parameters, _ = layer_norm_case(64)
    x = make_codes((3, 64), "random")
    model = one_node_model("IntegerLayerNormalization", x, parameters._asdict(), np.int8, attributes={})
    np.testing.assert_array_equal(run_function_body(model, x), integer_layer_norm(x, *parameters))


def test_layer_norm_custom_op_needs_explicit_attributes():
    # Limitation of onnxruntime-extensions 0.15: a Python kernel cannot read a missing
    # attribute, so nodes must spell out both attributes (make_node does).
    _, parameters, _ = layer_norm_case(64)
    x = make_codes((3, 64), "random")
    model = one_node_model("IntegerLayerNormalization", x, parameters._asdict(), np.int8, attributes={})
    with pytest.raises(Exception, match="fraction_bits"):
        ort.InferenceSession(model.SerializeToString(), custom_op_session_options(),
                             providers=["CPUExecutionProvider"])


def layer_norm_error_bound(
    codes: np.ndarray, shifts: np.ndarray, parameters: LayerNormParameters, floats: dict, normalized: np.ndarray,
    fraction_bits: int = 16, multiplier_bits: int = 16,
) -> np.ndarray:
    """Return the per-entry bound of docs/operators.md for outputs that are not clipped."""
    channels = codes.shape[-1]
    align = [1 << (int(shifts.max()) - int(shift)) for shift in shifts]
    aligned = [[int(q) * a for q, a in zip(row, align)] for row in codes.reshape(-1, channels)]
    variance = np.array([channels * sum(a * a for a in row) - sum(row) ** 2 + int(parameters.epsilon_term)
                         for row in aligned], dtype=np.float64).reshape(codes.shape[:-1] + (1,))
    sqrt_error = 0.3 / variance + 2.0**-29
    magnitude = np.abs(normalized)
    gamma, output_scale = np.abs(floats["gamma"]), floats["output_scale"]
    return (
        0.5 * output_scale
        + gamma * (0.5 * 2.0**-fraction_bits + magnitude * sqrt_error)
        + 0.5 * output_scale * 2.0**-multiplier_bits * (magnitude * (1 + sqrt_error) + 0.5 * 2.0**-fraction_bits)
        + 0.5 * output_scale * 2.0 ** -(fraction_bits + multiplier_bits)
    )


@pytest.mark.parametrize("kind", ["random", "one_outlier"])
def test_layer_norm_error_within_bound(kind):
    channels = 384
    shifts, parameters, floats = layer_norm_case(channels, seed=7)
    codes = make_codes((48, channels), kind, seed=7)
    x = codes * (BASE_SCALE * 2.0**-shifts)
    expected, normalized = float_layer_norm(x, floats["gamma"], floats["beta"], floats["epsilon"])
    assert np.all(np.abs(expected) <= 127 * floats["output_scale"])  # no clipping

    error = np.abs(integer_layer_norm(codes, *parameters) * floats["output_scale"] - expected)
    bound = layer_norm_error_bound(codes, shifts, parameters, floats, normalized)
    assert np.all(error <= bound * (1 + 1e-9))
    assert (error / bound).max() >= 0.2


def test_layer_norm_low_variance_error_bound():
    # Each row is a constant plus 1 in one channel, so v = C - 1 + epsilon_term is as small as a
    # non-constant row allows and the outlier sits sqrt(C - 1) standard deviations out. The
    # epsilon term 2.5 rounds to 3 and moves that output by about 0.08 output steps, which the
    # bound's 0.3 / v term covers.
    channels, rows = 384, 96
    rng = np.random.default_rng(8)
    shifts = np.zeros(channels, np.int64)
    gamma, beta = rng.normal(1.0, 0.3, size=channels), rng.normal(0.0, 0.2, size=channels)
    floats = {"gamma": gamma, "beta": beta, "output_scale": (20 * np.abs(gamma) + np.abs(beta)) / 127,
              "epsilon": 2.5 * BASE_SCALE**2 / channels**2}
    parameters = layer_norm_parameters(shifts, BASE_SCALE, **floats)
    assert int(parameters.epsilon_term) == 3
    codes = np.broadcast_to(rng.integers(-100, 100, size=(rows, 1)), (rows, channels)).astype(np.int8)
    codes[np.arange(rows), rng.choice(channels, size=rows, replace=False)] += 1

    expected, normalized = float_layer_norm(codes * BASE_SCALE, gamma, beta, floats["epsilon"])
    assert np.all(np.abs(expected) <= 127 * floats["output_scale"])  # no clipping
    error = np.abs(integer_layer_norm(codes, *parameters) * floats["output_scale"] - expected)
    bound = layer_norm_error_bound(codes, shifts, parameters, floats, normalized)
    assert np.all(error <= bound * (1 + 1e-9))
    assert (error / floats["output_scale"]).max() > 0.5
    assert (error / bound).max() >= 0.2


def test_layer_norm_parameters_by_hand():
    # Shifts [0, 2] give align [4, 1] and the finest scale 0.5 / 4 = 0.125, so the epsilon
    # term is 2**2 * 0.01 / 0.125**2.
    parameters = layer_norm_parameters(np.array([0, 2]), 0.5, [1.0, -0.5], [0.25, 0.0], [0.5, 0.25], 0.01)
    np.testing.assert_array_equal(parameters.align, [4, 1])
    np.testing.assert_array_equal(parameters.multiplier, [2 * 2**16, -2 * 2**16])
    np.testing.assert_array_equal(parameters.bias, [2**31, 0])
    assert int(parameters.epsilon_term) == round(4 * 0.01 / 0.125**2)


def test_layer_norm_parameters_round_ties_away_from_zero():
    # gamma / output_scale * 2**16 = +-2.5 and beta / output_scale * 2**32 = +-0.5 exactly.
    gamma = np.array([2.5, -2.5]) * 0.5 / 2**16
    beta = np.array([0.5, -0.5]) * 0.5 / 2**32
    parameters = layer_norm_parameters(np.array([0, 0]), 1.0, gamma, beta, [0.5, 0.5], 0.0)
    np.testing.assert_array_equal(parameters.multiplier, [3, -3])
    np.testing.assert_array_equal(parameters.bias, [1, -1])


def test_layer_norm_parameters_reject_too_many_channels():
    channels = 140_000  # C**2 * variance reaches 2**62 above about 131,000 channels at K = 7
    floats = {"gamma": np.ones(channels), "beta": np.zeros(channels), "output_scale": np.ones(channels)}
    with pytest.raises(ValueError, match="C\\*\\*2 \\* variance"):
        layer_norm_parameters(channel_shifts(channels), BASE_SCALE, **floats, epsilon=1e-5)
    # The same channel count fits when every shift is 0.
    layer_norm_parameters(np.zeros(channels, np.int64), BASE_SCALE, **floats, epsilon=1e-5)


def test_layer_norm_parameters_reject_large_multiplier():
    shifts = channel_shifts(384)
    floats = {"gamma": np.full(384, 2.0**30), "beta": np.zeros(384), "output_scale": np.full(384, 1e-3)}
    with pytest.raises(ValueError, match="n \\* multiplier"):
        layer_norm_parameters(shifts, BASE_SCALE, **floats, epsilon=1e-5)


def test_layer_norm_parameters_reject_bad_shift():
    floats = {"gamma": np.ones(2), "beta": np.zeros(2), "output_scale": np.ones(2), "epsilon": 1e-5}
    with pytest.raises(ValueError, match="shift entries"):
        layer_norm_parameters(np.array([0, 8]), BASE_SCALE, **floats)


def test_layer_norm_kernel_rejects_overflowing_parameters():
    _, parameters, _ = layer_norm_case(64)
    huge = parameters._replace(multiplier=np.full(64, 2**50, np.int64))
    with pytest.raises(ValueError, match="n \\* multiplier"):
        integer_layer_norm(make_codes((1, 64), "random"), *huge)


# ---------------------------------------------------------------- packaging


def test_function_bodies_check_at_opset_18():
    x = make_codes((2, 16), "random")
    table = softmax_table(0.1)
    model = one_node_model("IntegerSoftmax", x, {"table": table}, np.uint8, opset=18)
    np.testing.assert_array_equal(run_function_body(model, x), integer_softmax(x, table))


def test_function_proto_rejects_old_opset():
    with pytest.raises(ValueError, match="opset 17"):
        integer_ops.function_proto("IntegerGelu", opset=17)


def test_session_options_error_without_extensions():
    script = (
        "import sys\n"
        "sys.modules['onnxruntime_extensions'] = None\n"
        "from bct_onnx.integer_ops import custom_op_session_options, function_protos\n"
        "assert len(function_protos()) == 3\n"
        "try:\n"
        "    custom_op_session_options()\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "pip install onnxruntime-extensions" in result.stdout


def test_kernels_registered_after_the_library_crash():
    # Limitation of onnxruntime-extensions 0.15: options that loaded the library before the
    # Python kernels were registered crash the first session that uses them.
    # custom_op_session_options registers first, then loads the library.
    script = (
        "import numpy as np, onnx, onnxruntime as ort, onnxruntime_extensions\n"
        "from bct_onnx.integer_ops import function_protos, make_node, register_kernels, softmax_table\n"
        "options = ort.SessionOptions()\n"
        "options.register_custom_ops_library(onnxruntime_extensions.get_library_path())\n"
        "register_kernels()\n"
        "from onnx import TensorProto, helper, numpy_helper\n"
        "graph = helper.make_graph([make_node('IntegerSoftmax', ['X', 'table'], ['Y'])], 'g',\n"
        "    [helper.make_tensor_value_info('X', TensorProto.INT8, [1, 4])],\n"
        "    [helper.make_tensor_value_info('Y', TensorProto.UINT8, [1, 4])],\n"
        "    [numpy_helper.from_array(softmax_table(0.1), 'table')])\n"
        "model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 21),\n"
        "    helper.make_opsetid('ai.onnx.contrib', 1)], functions=function_protos())\n"
        "model.ir_version = 10\n"
        "session = ort.InferenceSession(model.SerializeToString(), options, providers=['CPUExecutionProvider'])\n"
        "session.run(None, {'X': np.zeros((1, 4), np.int8)})\n"
        "print('no crash')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode < 0, f"expected a crash (killed by a signal), got {result.returncode}: {result.stdout}"
