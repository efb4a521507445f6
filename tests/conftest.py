"""Shared fixtures: tiny hand-built ONNX models and the location of the GLUE data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

# Where the GLUE task folders are; BCT_GLUE_DIR overrides the copy beside the repository.
GLUE_DIR = Path(os.environ.get("BCT_GLUE_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"))


def make_model(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    initializers: dict[str, np.ndarray],
    *,
    opset: int = 21,
) -> onnx.ModelProto:
    """Build and check a one-graph model at ``opset``."""
    graph = helper.make_graph(
        nodes,
        "test",
        inputs,
        outputs,
        [numpy_helper.from_array(value, name) for name, value in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10 if opset >= 21 else 8
    onnx.checker.check_model(model, full_check=True)
    return model


def float_input(name: str, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def int64_input(name: str, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.INT64, shape)


def run_model(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run ``model`` in stock ONNX Runtime on the CPU, exactly as the graph states.

    Graph optimizations are off because ONNX Runtime fuses DequantizeLinear(INT4) + MatMul into
    MatMulNBits, which by default rounds the activations to 8 bits and so is not exact.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def matmul_model(weight: np.ndarray, *, opset: int = 21) -> onnx.ModelProto:
    """Return ``y = x @ weight`` with ``weight`` as an initializer."""
    k, n = weight.shape
    node = helper.make_node("MatMul", ["x", "weight"], ["y"], name="matmul")
    return make_model([node], [float_input("x", ["batch", k])], [float_input("y", ["batch", n])],
                      {"weight": weight}, opset=opset)


def embedding_model(table: np.ndarray) -> onnx.ModelProto:
    """Return ``y = table[ids]`` as a Gather on an initializer."""
    node = helper.make_node("Gather", ["table", "ids"], ["y"], name="lookup", axis=0)
    return make_model(
        [node],
        [int64_input("ids", ["batch", "sequence"])],
        [float_input("y", ["batch", "sequence", table.shape[1]])],
        {"table": table},
    )


def representable_weight(shape: tuple[int, int], block_size: int, *, bits: int, seed: int = 0) -> np.ndarray:
    """Return a [K, N] weight whose blocks along K are exactly codes times a power of two."""
    rng = np.random.default_rng(seed)
    q_max = (1 << (bits - 1)) - 1
    codes = rng.integers(-q_max, q_max + 1, size=shape)
    codes[::block_size, :] = q_max
    scales = np.float32(2.0) ** rng.integers(-5, 0, size=(shape[0] // block_size, shape[1]))
    return (codes * np.repeat(scales, block_size, axis=0)).astype(np.float32)


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    if not GLUE_DIR.is_dir():
        pytest.fail(f"GLUE data not found at {GLUE_DIR}; set BCT_GLUE_DIR to a GLUE-format folder")
    return GLUE_DIR
