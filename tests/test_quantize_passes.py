"""The weight and embedding passes on tiny hand-built graphs, checked in ONNX Runtime."""

from collections import Counter

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest
from conftest import (
    embedding_model,
    float_input,
    int64_input,
    make_model,
    matmul_model,
    representable_weight,
    run_model,
)
from onnx import helper, numpy_helper

from bct_onnx import CompressConfig, Rounding, ScaleFormat, compress_model
from bct_onnx.calibration import MAX_SHIFT, ActivationScales
from bct_onnx.errors import UnsupportedModelError
from bct_onnx.graph import CREATED_BY_KEY, NodeFactory
from bct_onnx.passes.quantize_activations import dequantize, quantize, scale_input

EXACT = dict(rounding=Rounding.NEAREST, scale_format=ScaleFormat.FLOAT32)


def initializer_types(model: onnx.ModelProto) -> Counter:
    return Counter(helper.tensor_dtype_to_string(tensor.data_type) for tensor in model.graph.initializer)


def op_counts(model: onnx.ModelProto) -> Counter:
    return Counter(node.op_type for node in model.graph.node)


@pytest.mark.parametrize("bits", [4, 8])
def test_matmul_weight_exact_in_onnx_runtime(bits):
    weight = representable_weight((64, 8), 32, bits=bits)
    result = compress_model(matmul_model(weight), config=CompressConfig(weight_bits=bits, block_size=32, **EXACT))
    x = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)
    (y,) = run_model(result.model, {"x": x})
    np.testing.assert_allclose(y, x @ weight, rtol=1e-5, atol=1e-5)
    assert initializer_types(result.model)["TensorProto.INT4" if bits == 4 else "TensorProto.INT8"] == 1
    assert result.tensors[0].sqnr_db == float("inf")


def test_matmul_weight_becomes_blocked_dequantize():
    weight = np.random.default_rng(1).standard_normal((128, 16)).astype(np.float32)
    result = compress_model(matmul_model(weight), config=CompressConfig(block_size=32))
    onnx.checker.check_model(result.model, full_check=True)
    dequantize = next(node for node in result.model.graph.node if node.output[0] in {
        n.input[1] for n in result.model.graph.node if n.op_type == "MatMul"})
    assert dequantize.op_type == "DequantizeLinear"
    attrs = {attr.name: helper.get_attribute_value(attr) for attr in dequantize.attribute}
    assert attrs == {"axis": 0, "block_size": 32}
    codes = next(t for t in result.model.graph.initializer if t.name == dequantize.input[0])
    assert codes.data_type == onnx.TensorProto.INT4
    assert list(codes.dims) == [128, 16]
    assert len(codes.raw_data) == 128 * 16 // 2  # two codes per byte


def test_uint8_scales_in_onnx_runtime_match_report():
    weight = np.random.default_rng(2).standard_normal((128, 16)).astype(np.float32)
    result = compress_model(matmul_model(weight), config=CompressConfig(block_size=32))
    assert result.tensors[0].scale_bytes == 4 * 16 + 4 * 4  # uint8 codes + float32 per block row
    x = np.eye(128, dtype=np.float32)
    (dequantized,) = run_model(result.model, {"x": x})
    error = np.square(dequantized - weight).sum()
    expected_db = 10 * np.log10(np.square(weight).sum() / error)
    assert result.tensors[0].sqnr_db == pytest.approx(expected_db, abs=1e-3)
    assert 17.0 < expected_db < 22.0  # 4-bit with MSE clipping gives about 20 dB on Gaussian data


def test_partial_last_block():
    weight = representable_weight((48, 4), 16, bits=4)
    result = compress_model(matmul_model(weight), config=CompressConfig(block_size=32, **EXACT))
    x = np.eye(48, dtype=np.float32)
    (y,) = run_model(result.model, {"x": x})
    scale = next(t for t in result.model.graph.initializer if t.name.endswith("/scale"))
    assert list(scale.dims) == [2, 4]
    assert np.abs(y - weight).max() <= np.abs(weight).max() / 7 / 2 + 1e-6


def test_gemm_transposed_weight_blocks_along_axis_1():
    weight = representable_weight((32, 8), 16, bits=4).T.copy()  # [N, K] with transB=1
    node = helper.make_node("Gemm", ["x", "weight"], ["y"], name="gemm", transB=1)
    model = make_model([node], [float_input("x", [2, 32])], [float_input("y", [2, 8])], {"weight": weight})
    result = compress_model(model, config=CompressConfig(block_size=16, **EXACT))
    x = np.random.default_rng(3).standard_normal((2, 32)).astype(np.float32)
    (y,) = run_model(result.model, {"x": x})
    np.testing.assert_allclose(y, x @ weight.T, rtol=1e-5, atol=1e-5)
    assert result.tensors[0].kind == "gemm"


def test_transposed_constant_is_folded_then_quantized():
    weight = representable_weight((32, 8), 16, bits=4)
    nodes = [
        helper.make_node("Transpose", ["weight_t"], ["weight"], perm=[1, 0]),
        helper.make_node("MatMul", ["x", "weight"], ["y"]),
    ]
    model = make_model(nodes, [float_input("x", [2, 32])], [float_input("y", [2, 8])], {"weight_t": weight.T.copy()})
    result = compress_model(model, config=CompressConfig(block_size=16, **EXACT))
    assert op_counts(result.model)["Transpose"] == 0
    assert len(result.tensors) == 1


def test_shared_weight_quantized_once():
    weight = representable_weight((32, 32), 16, bits=4)
    nodes = [helper.make_node("MatMul", ["x", "weight"], ["h"]), helper.make_node("MatMul", ["h", "weight"], ["y"])]
    model = make_model(nodes, [float_input("x", [2, 32])], [float_input("y", [2, 32])], {"weight": weight})
    result = compress_model(model, config=CompressConfig(block_size=16))
    assert len(result.tensors) == 1
    assert op_counts(result.model)["DequantizeLinear"] == 2  # the weight and its uint8 scales


def test_computed_weight_is_not_compressed():
    node = helper.make_node("MatMul", ["a", "b"], ["y"])
    model = make_model([node], [float_input("a", [2, 4]), float_input("b", [4, 3])], [float_input("y", [2, 3])], {})
    with pytest.raises(UnsupportedModelError, match="nothing to compress: 1 node.* second input is computed"):
        compress_model(model)


def test_exclude_pattern_keeps_weight_in_float():
    weight = np.ones((32, 4), np.float32)
    with pytest.raises(UnsupportedModelError, match="excluded by a pattern"):
        compress_model(matmul_model(weight), config=CompressConfig(exclude=("mat*",)))


def test_inserted_nodes_record_their_pass():
    result = compress_model(matmul_model(np.ones((32, 4), np.float32)), config=CompressConfig(block_size=16))
    created = {
        node.name: {entry.key: entry.value for entry in node.metadata_props}.get(CREATED_BY_KEY)
        for node in result.model.graph.node
    }
    assert created.pop("matmul") is None
    assert set(created.values()) == {"quantize_weights_blockwise"}


def test_older_opset_upgraded_to_21():
    weight = representable_weight((32, 4), 16, bits=4)
    result = compress_model(matmul_model(weight, opset=14), config=CompressConfig(block_size=16, **EXACT))
    opsets = {entry.domain: entry.version for entry in result.model.opset_import}
    assert opsets[""] == 21
    x = np.eye(32, dtype=np.float32)
    np.testing.assert_allclose(run_model(result.model, {"x": x})[0], weight, rtol=1e-6)


@pytest.mark.parametrize("opset", [12, 99])
def test_unsupported_opset_rejected(opset):
    model = matmul_model(np.ones((32, 4), np.float32))
    model.opset_import[0].version = opset
    with pytest.raises(UnsupportedModelError, match=f"opset {opset}"):
        compress_model(model)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("scale_format", list(ScaleFormat))
def test_embedding_lookup_matches_dequantized_table(bits, symmetric, scale_format):
    table = np.random.default_rng(4).standard_normal((50, 64)).astype(np.float32)
    config = CompressConfig(weight_bits=bits, block_size=32, symmetric=symmetric, scale_format=scale_format)
    result = compress_model(embedding_model(table), config=config)
    onnx.checker.check_model(result.model, full_check=True)

    all_rows = run_model(result.model, {"ids": np.arange(50, dtype=np.int64)[None, :]})[0][0]
    ids = np.array([[3, 3, 49], [0, 7, 12]], np.int64)
    (y,) = run_model(result.model, {"ids": ids})
    np.testing.assert_array_equal(y, all_rows[ids])
    assert 10 * np.log10(np.square(table).sum() / np.square(all_rows - table).sum()) == pytest.approx(
        result.tensors[0].sqnr_db, abs=1e-3
    )


def test_four_bit_table_stored_as_packed_nibbles():
    table = np.random.default_rng(5).standard_normal((50, 64)).astype(np.float32)
    result = compress_model(embedding_model(table), config=CompressConfig(block_size=32))
    codes = next(t for t in result.model.graph.initializer if t.name.endswith("/codes"))
    assert codes.data_type == onnx.TensorProto.UINT8
    assert list(codes.dims) == [50, 32]
    assert op_counts(result.model)["Gather"] == 2  # the codes and the scale codes, never the full table


def test_lookup_dequantizes_only_gathered_rows():
    table = representable_weight((64, 40), 32, bits=8).T.copy()  # [40 rows, 64]
    result = compress_model(embedding_model(table), config=CompressConfig(weight_bits=8, block_size=32, **EXACT))
    for node in result.model.graph.node:
        if node.op_type == "DequantizeLinear":
            initializers = {t.name for t in result.model.graph.initializer}
            assert node.input[0] not in initializers  # codes arrive through a Gather
    ids = np.array([[5, 39]], np.int64)
    np.testing.assert_array_equal(run_model(result.model, {"ids": ids})[0], table[ids])


def test_int4_codes_decode_to_original_values():
    table = np.random.default_rng(6).standard_normal((4, 64)).astype(np.float32)
    result = compress_model(embedding_model(table), config=CompressConfig(block_size=64, **EXACT))
    scale = numpy_helper.to_array(next(t for t in result.model.graph.initializer if t.name.endswith("/scale")))
    (y,) = run_model(result.model, {"ids": np.arange(4, dtype=np.int64)[None, :]})
    codes = y[0] / np.repeat(scale, 64, axis=1)
    np.testing.assert_allclose(codes, np.round(codes), atol=1e-4)
    assert codes.min() >= -8
    assert codes.max() <= 7


def test_block_larger_than_axis_is_one_block():
    weight = representable_weight((16, 4), 16, bits=4)
    result = compress_model(matmul_model(weight), config=CompressConfig(block_size=4096, **EXACT))
    scale = next(t for t in result.model.graph.initializer if t.name.endswith("/scale"))
    assert list(scale.dims) == [1, 4]
    np.testing.assert_allclose(run_model(result.model, {"x": np.eye(16, dtype=np.float32)})[0], weight, rtol=1e-6)


def test_non_finite_weight_rejected():
    weight = np.ones((32, 4), np.float32)
    weight[3, 1] = np.nan
    with pytest.raises(UnsupportedModelError, match="weight 'weight' contains NaN or infinity"):
        compress_model(matmul_model(weight))


def test_empty_batch_lookup_runs():
    table = np.random.default_rng(7).standard_normal((20, 64)).astype(np.float32)
    result = compress_model(embedding_model(table), config=CompressConfig(block_size=32))
    (y,) = run_model(result.model, {"ids": np.zeros((0, 5), np.int64)})
    assert y.shape == (0, 5, 64)


def test_config_accepts_enum_names():
    config = CompressConfig(rounding="nearest", scale_format="float16")
    assert config.rounding is Rounding.NEAREST
    assert config.scale_format is ScaleFormat.FLOAT16
    with pytest.raises(ValueError, match="rounding must be one of nearest, mse"):
        CompressConfig(rounding="floor")
    with pytest.raises(TypeError, match="block_size must be an int"):
        CompressConfig(block_size=2.5)


def test_unmatched_exclude_pattern_warns(caplog):
    weight = np.ones((32, 4), np.float32)
    with caplog.at_level("WARNING", logger="bct_onnx.compress"):
        compress_model(matmul_model(weight), config=CompressConfig(block_size=16, exclude=("*attention*",)))
    assert "exclusion pattern '*attention*' matches no node or weight name" in caplog.text


def test_initializer_inputs_stay_inputs_when_left_in_float():
    weight = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "weight"], ["y"], name="first"),
             helper.make_node("MatMul", ["y", "kept"], ["z"], name="second")]
    inputs = [float_input("x", ["batch", 64]), float_input("weight", [64, 8]), float_input("kept", [8, 8])]
    model = make_model(nodes, inputs, [float_input("z", ["batch", 8])], {"weight": weight, "kept": weight[:8]})
    compressed = compress_model(model, config=CompressConfig(exclude=("kept",))).model
    assert [value.name for value in compressed.graph.input] == ["x", "kept"]
    x = np.ones((2, 64), np.float32)
    doubled = run_model(compressed, {"x": x, "kept": 2 * weight[:8]})[0]
    np.testing.assert_allclose(doubled, 2 * run_model(compressed, {"x": x})[0], rtol=1e-6)


@pytest.mark.parametrize(("symmetric", "tables_compressed"), [(True, 1), (False, 0)])
def test_lookup_into_matmul_runs_in_optimized_onnx_runtime(symmetric, tables_compressed):
    rng = np.random.default_rng(0)
    table, weight = rng.normal(size=(100, 64)).astype(np.float32), rng.normal(size=(64, 16)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["table", "ids"], ["rows"], axis=0),
             helper.make_node("MatMul", ["rows", "weight"], ["y"])]
    model = make_model(nodes, [int64_input("ids", ["batch", "sequence"])],
                       [float_input("y", ["batch", "sequence", 16])], {"table": table, "weight": weight})
    result = compress_model(model, config=CompressConfig(weight_bits=8, symmetric=symmetric))
    assert [entry.kind for entry in result.tensors].count("embedding") == tables_compressed
    session = ort.InferenceSession(result.model.SerializeToString(), providers=["CPUExecutionProvider"])
    ids = np.array([[1, 2, 3]], np.int64)
    expected = table[ids] @ weight
    relative = np.linalg.norm(session.run(None, {"ids": ids})[0] - expected) / np.linalg.norm(expected)
    assert relative < 0.02


def test_channel_scales_match_per_axis_quantize():
    # The pass applies base * 2^-shift per channel as Mul, per-tensor QuantizeLinear/
    # DequantizeLinear, Mul; ONNX Runtime's per-axis QuantizeLinear must give the same bits.
    channels = 96
    rng = np.random.default_rng(3)
    scales = ActivationScales(base_scale=0.0371, shift=rng.integers(0, MAX_SHIFT + 1, channels))
    graph = gs.Graph(inputs=[gs.Variable("x", np.float32, ["batch", channels])], opset=21)
    factory = NodeFactory(graph, "test")
    scale = scale_input(factory, "x", scales)
    codes = quantize(factory, graph.inputs[0], scale, 8)
    values = dequantize(factory, "x", codes, scale)
    codes.dtype, values.dtype = np.int8, np.float32
    graph.outputs = [codes, values]
    ours = gs.export_onnx(graph)
    ours.ir_version = 10

    per_axis = [
        helper.make_node("QuantizeLinear", ["x", "scale"], ["codes"], axis=-1, output_dtype=onnx.TensorProto.INT8),
        helper.make_node("DequantizeLinear", ["codes", "scale"], ["values"], axis=-1),
    ]
    reference = make_model(per_axis, [float_input("x", ["batch", channels])],
                           [helper.make_tensor_value_info("codes", onnx.TensorProto.INT8, ["batch", channels]),
                            float_input("values", ["batch", channels])], {"scale": scales.scale})
    x = (rng.standard_normal((64, channels)) * scales.scale * rng.uniform(0, 200, channels)).astype(np.float32)
    x[0] = (np.arange(channels) % 40 - 20 + 0.5) * scales.scale  # halfway cases round to even
    for got, want in zip(run_model(ours, {"x": x}), run_model(reference, {"x": x})):
        np.testing.assert_array_equal(got, want)
