"""The BCT and W8A8 recipes on a tiny transformer block: calibration, rewrites, three runtimes."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import float_input, make_model
from onnx import helper

from bct_onnx import CompressConfig, compress_model
from bct_onnx.config import IntegerOperator, Recipe
from bct_onnx.errors import BctError
from bct_onnx.integer_ops import DOMAIN, custom_op_session_options, kernel_calls
from bct_onnx.validate import row_cosine

HIDDEN, INNER, SEQUENCE = 64, 128, 8


def tiny_block() -> onnx.ModelProto:
    """Return x -> FFN with GELU -> residual -> LayerNorm -> self-attention with Softmax."""
    rng = np.random.default_rng(0)
    weights = {
        "w1": rng.standard_normal((HIDDEN, INNER)).astype(np.float32) / 8,
        "b1": rng.standard_normal(INNER).astype(np.float32) / 10,
        "w2": rng.standard_normal((INNER, HIDDEN)).astype(np.float32) / 11,
        "b2": rng.standard_normal(HIDDEN).astype(np.float32) / 10,
        "gamma": (1 + rng.standard_normal(HIDDEN) / 10).astype(np.float32),
        "beta": (rng.standard_normal(HIDDEN) / 10).astype(np.float32),
        "mask": np.where(np.arange(SEQUENCE) < SEQUENCE - 2, 0.0, -10000.0).astype(np.float32),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h"]),
        helper.make_node("Gelu", ["h"], ["g"]),
        helper.make_node("MatMul", ["g", "w2"], ["o0"]),
        helper.make_node("Add", ["o0", "b2"], ["o"]),
        helper.make_node("Add", ["o", "x"], ["r"]),
        helper.make_node("LayerNormalization", ["r", "gamma", "beta"], ["n"], epsilon=1e-12),
        helper.make_node("Transpose", ["n"], ["nt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["n", "nt"], ["scores"]),
        helper.make_node("Add", ["scores", "mask"], ["masked"]),
        helper.make_node("Softmax", ["masked"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "n"], ["y"]),
    ]
    return make_model(nodes, [float_input("x", ["batch", SEQUENCE, HIDDEN])],
                      [float_input("y", ["batch", SEQUENCE, HIDDEN])], weights)


def calibration_batches(count: int = 4, seed: int = 1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((4, SEQUENCE, HIDDEN)).astype(np.float32)} for _ in range(count)]


def run(model: onnx.ModelProto, feeds: dict, options: ort.SessionOptions | None = None) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


@pytest.fixture(scope="module")
def compressed() -> onnx.ModelProto:
    config = CompressConfig.from_recipe(Recipe.BCT, block_size=32, activation_block_size=32)
    return compress_model(tiny_block(), config=config, calibration=calibration_batches()).model


def test_float_operators_replaced(compressed):
    counts = Counter((node.domain, node.op_type) for node in compressed.graph.node)
    assert counts[(DOMAIN, "IntegerGelu")] == 1
    assert counts[(DOMAIN, "IntegerSoftmax")] == 1
    assert counts[(DOMAIN, "IntegerLayerNormalization")] == 1
    assert not {"Gelu", "Softmax", "LayerNormalization", "Erf"} & {node.op_type for node in compressed.graph.node}
    assert {function.name for function in compressed.functions} == {
        "IntegerGelu", "IntegerSoftmax", "IntegerLayerNormalization"}
    onnx.checker.check_model(compressed, full_check=True)


def test_matmul_inputs_quantized(compressed):
    producers = {output: node for node in compressed.graph.node for output in node.output}
    for node in compressed.graph.node:
        if node.op_type != "MatMul":
            continue
        for name in node.input:
            source = producers[name]
            while source.op_type in ("Transpose", "Reshape"):
                source = producers[source.input[0]]
            if source.op_type == "Mul":  # per-channel scales: 2^-shift after a per-tensor DequantizeLinear
                source = producers[source.input[0]]
            assert source.op_type == "DequantizeLinear", f"{node.name} reads {name} from {source.op_type}"


def test_function_bodies_and_custom_kernels_agree(compressed):
    feeds = calibration_batches(1, seed=7)[0]
    stock = run(compressed, feeds)
    calls_before = sum(kernel_calls.values())
    with_kernels = run(compressed, feeds, custom_op_session_options())
    assert sum(kernel_calls.values()) >= calls_before + 3
    np.testing.assert_array_equal(stock, with_kernels)


def test_output_close_to_float(compressed):
    feeds = calibration_batches(1, seed=8)[0]
    reference = run(tiny_block(), feeds)
    actual = run(compressed, feeds)
    cosine = row_cosine(reference.reshape(-1, HIDDEN), actual.reshape(-1, HIDDEN))
    assert float(np.mean(cosine)) > 0.97


def test_recipe_without_calibration_rejected():
    with pytest.raises(BctError, match="needs calibration data"):
        compress_model(tiny_block(), config=CompressConfig.from_recipe(Recipe.BCT, block_size=32))


def test_integer_operators_can_be_limited():
    config = CompressConfig.from_recipe(Recipe.W8A8, block_size=32, integer_operators=frozenset({IntegerOperator.GELU}))
    model = compress_model(tiny_block(), config=config, calibration=calibration_batches()).model
    ops = Counter(node.op_type for node in model.graph.node)
    assert ops["IntegerGelu"] == 1
    assert ops["Softmax"] == 1
    assert ops["LayerNormalization"] == 1
