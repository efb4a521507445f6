"""Calibration statistics, power-of-two block scales, and calibration data sources."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import float_input, int64_input, make_model
from onnx import helper

from bct_onnx.calibration import (
    MAX_SHIFT,
    CalibrationMethod,
    CalibrationTarget,
    Calibrator,
    TargetKind,
    power_of_two_scales,
    split_batches,
)
from bct_onnx.calibration_data import load_calibration_batches
from bct_onnx.errors import BctError


def identity_model(channels: int = 4) -> onnx.ModelProto:
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Identity", ["x"], ["y"])]
    return make_model(nodes, [float_input("x", ["batch", channels])],
                      [float_input("y", ["batch", channels]), float_input("r", ["batch", channels])], {})


def test_power_of_two_scales_hand_computed():
    # Ratios to the largest scale 1.0 are 1, 3.3, 3.8 and "no data": shifts 0, 1, 1, MAX_SHIFT.
    scales = power_of_two_scales(np.array([1.0, 0.3, 0.26, 0.0]), 2)
    assert scales.base_scale == 1.0
    np.testing.assert_array_equal(scales.shift, [0, 0, 1, 1, 1, 1, MAX_SHIFT, MAX_SHIFT])
    np.testing.assert_allclose(scales.scale, [1, 1, 0.5, 0.5, 0.5, 0.5, 2.0**-MAX_SHIFT, 2.0**-MAX_SHIFT])


def test_power_of_two_scales_never_smaller_than_requested():
    requested = np.random.default_rng(0).uniform(0.01, 2.0, size=64)
    scales = power_of_two_scales(requested, 1)
    clipped = requested < scales.base_scale * 2.0**-MAX_SHIFT
    assert np.all(scales.scale[~clipped] >= requested[~clipped] * (1 - 1e-6))
    assert np.all(scales.scale[~clipped] < 2 * requested[~clipped])


def test_minmax_per_channel_ranges():
    batch = {"x": np.array([[1.27, -0.5, 0.0, 2.54], [-0.3, 0.635, 0.0, -1.0]], np.float32)}
    calibrator = Calibrator([CalibrationTarget("y", TargetKind.CHANNELS)], block_size=1,
                            method=CalibrationMethod.MINMAX)
    scales = calibrator.collect(identity_model(), [batch])["y"]
    # Channel maxima 1.27, 0.635, 0 and 2.54 over 127 steps: 0.01, 0.005, none, 0.02.
    assert scales.base_scale == pytest.approx(0.02)
    np.testing.assert_array_equal(scales.shift, [1, 2, MAX_SHIFT, 0])


def test_statistics_stream_across_batches():
    rng = np.random.default_rng(1)
    data = rng.standard_t(df=4, size=(64, 8)).astype(np.float32)
    targets = [CalibrationTarget("y", TargetKind.CHANNELS), CalibrationTarget("r", TargetKind.TENSOR)]
    for method in CalibrationMethod:
        whole = Calibrator(targets, block_size=2, method=method).collect(identity_model(8), [{"x": data}])
        parts = Calibrator(targets, block_size=2, method=method).collect(
            identity_model(8), split_batches({"x": data}, 16))
        for name in ("y", "r"):
            assert whole[name].base_scale == pytest.approx(parts[name].base_scale), (method, name)
            np.testing.assert_array_equal(whole[name].shift, parts[name].shift)


def test_mse_and_percentile_clip_outliers():
    data = np.concatenate([np.random.default_rng(2).normal(size=(50000, 1)), [[40.0]]]).astype(np.float32)
    target = [CalibrationTarget("y", TargetKind.TENSOR)]

    def clip_range(method: CalibrationMethod, bits: int) -> float:
        calibrator = Calibrator(target, block_size=1, method=method, bits=bits)
        scales = calibrator.collect(identity_model(1), [{"x": data}])["y"]
        return scales.base_scale * ((1 << (bits - 1)) - 1)

    assert clip_range(CalibrationMethod.MINMAX, 8) == pytest.approx(40.0)
    assert clip_range(CalibrationMethod.PERCENTILE, 8) < 5.0
    # With 8 bits the one outlier costs more clipped (36² = 1296) than the coarser grid costs
    # the other 50000 values, so MSE keeps most of the range; with 4 bits it clips.
    assert clip_range(CalibrationMethod.MSE, 8) > 20.0
    assert clip_range(CalibrationMethod.MSE, 4) < 8.0


def test_softmax_input_ignores_masked_entries():
    nodes = [helper.make_node("Add", ["x", "mask"], ["scores"]), helper.make_node("Softmax", ["scores"], ["y"])]
    mask = np.array([0, 0, 0, -10000], np.float32)
    model = make_model(nodes, [float_input("x", ["batch", 4])], [float_input("y", ["batch", 4])], {"mask": mask})
    batch = {"x": np.array([[1.0, -2.0, 3.0, 0.5], [0.0, 6.35, -1.0, 2.0]], np.float32)}
    calibrator = Calibrator([CalibrationTarget("scores", TargetKind.SOFTMAX_INPUT)], block_size=1,
                            method=CalibrationMethod.MINMAX)
    scales = calibrator.collect(model, [batch])["scores"]
    assert scales.base_scale * 127 == pytest.approx(6.35)


def test_npz_source_batches(tmp_path):
    model = make_model([helper.make_node("Identity", ["ids"], ["y"])], [int64_input("ids", ["batch", 3])],
                       [helper.make_tensor_value_info("y", onnx.TensorProto.INT64, ["batch", 3])], {})
    onnx.save(model, str(tmp_path / "model.onnx"))
    np.savez(tmp_path / "feeds.npz", ids=np.arange(30, dtype=np.int64).reshape(10, 3))
    batches = load_calibration_batches(str(tmp_path / "feeds.npz"), tmp_path / "model.onnx", samples=7, batch_size=3)
    assert [len(batch["ids"]) for batch in batches] == [3, 3, 1]
    np.testing.assert_array_equal(batches[2]["ids"], [[18, 19, 20]])


def test_missing_source_and_empty_text(tmp_path):
    model = make_model([helper.make_node("Identity", ["ids"], ["y"])], [int64_input("ids", ["batch", 3])],
                       [helper.make_tensor_value_info("y", onnx.TensorProto.INT64, ["batch", 3])], {})
    onnx.save(model, str(tmp_path / "model.onnx"))
    with pytest.raises(BctError, match="calibration source not found"):
        load_calibration_batches(str(tmp_path / "absent.txt"), tmp_path / "model.onnx")
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(BctError, match="calibration text file is empty"):
        load_calibration_batches(str(tmp_path / "empty.txt"), tmp_path / "model.onnx")
    (tmp_path / "lines.txt").write_text("one sentence\n")
    with pytest.raises(BctError, match="needs a tokenizer"):
        load_calibration_batches(str(tmp_path / "lines.txt"), tmp_path / "model.onnx")


def test_glue_source_tokenized(tmp_path, glue_dir):
    pytest.importorskip("transformers")
    from bct_onnx.export import default_model_dir

    names = ["input_ids", "attention_mask", "token_type_ids"]
    nodes = [helper.make_node("Identity", [name], [f"{name}_out"]) for name in names]
    model = make_model(nodes, [int64_input(name, ["batch", "sequence"]) for name in names],
                       [helper.make_tensor_value_info(f"{name}_out", onnx.TensorProto.INT64, ["batch", "sequence"])
                        for name in names], {})
    onnx.save(model, str(tmp_path / "model.onnx"))
    batches = load_calibration_batches("glue:mrpc", tmp_path / "model.onnx", samples=20, sequence_length=32,
                                       batch_size=8, tokenizer=default_model_dir(), glue_dir=glue_dir)
    assert [batch["input_ids"].shape for batch in batches] == [(8, 32), (8, 32), (4, 32)]
    assert batches[0]["token_type_ids"].max() == 1  # sentence pairs get both token types
    assert batches[0]["input_ids"].dtype == np.int64
