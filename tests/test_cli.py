"""The command line on tiny models: bad input, atomic output, external data, the report."""

from __future__ import annotations

import hashlib
import json
import os
import signal
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from conftest import embedding_model, float_input, make_model, matmul_model, run_model
from onnx import helper

from bct_onnx.cli import main


def write_model(model: onnx.ModelProto, path: Path, *, external_data: bool = False) -> Path:
    onnx.save_model(model, str(path), save_as_external_data=external_data, location=f"{path.name}.data",
                    size_threshold=0)
    return path


def tiny_model() -> onnx.ModelProto:
    return matmul_model(np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32))


def run_cli(*args: str | Path):
    return CliRunner().invoke(main, [str(arg) for arg in args])


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_one_line_error(result, fragment: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert fragment in lines[0]


def folder_entries(folder: Path) -> set[str]:
    return {path.name for path in folder.iterdir()}


def test_compress_writes_model_and_json_report(tmp_path):
    source = write_model(tiny_model(), tmp_path / "model.onnx")
    before = digest(source)
    result = run_cli("compress", source, "-o", tmp_path / "out.onnx", "--report", tmp_path / "report.json",
                     "--block-size", "32")
    assert result.exit_code == 0, result.output
    assert "compression ratio" in result.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["tensors"][0]["shape"] == [64, 8]
    assert report["tensors"][0]["bits"] == 4
    assert report["file_bytes_after"] == (tmp_path / "out.onnx").stat().st_size
    assert report["ratio"] == pytest.approx(report["file_bytes_before"] / report["file_bytes_after"], rel=1e-3)
    assert digest(source) == before
    onnx.checker.check_model(str(tmp_path / "out.onnx"), full_check=True)
    assert folder_entries(tmp_path) == {"model.onnx", "out.onnx", "report.json"}


def test_not_an_onnx_file(tmp_path):
    source = tmp_path / "notes.onnx"
    source.write_text("this is not a model\n")
    result = run_cli("compress", source, "-o", tmp_path / "out.onnx")
    assert_one_line_error(result, "is not a readable ONNX model")
    assert folder_entries(tmp_path) == {"notes.onnx"}


def test_truncated_file(tmp_path):
    full = write_model(tiny_model(), tmp_path / "full.onnx").read_bytes()
    source = tmp_path / "truncated.onnx"
    source.write_bytes(full[: len(full) // 2])
    result = run_cli("compress", source, "-o", tmp_path / "out.onnx")
    assert_one_line_error(result, "is not a readable ONNX model")
    assert not (tmp_path / "out.onnx").exists()


def test_missing_input(tmp_path):
    result = run_cli("compress", tmp_path / "absent.onnx", "-o", tmp_path / "out.onnx")
    assert_one_line_error(result, "model file not found")


def test_nothing_to_compress(tmp_path):
    node = helper.make_node("Relu", ["x"], ["y"])
    model = make_model([node], [float_input("x", [2])], [float_input("y", [2])], {})
    source = write_model(model, tmp_path / "relu.onnx")
    result = run_cli("compress", source, "-o", tmp_path / "out.onnx")
    assert_one_line_error(result, "nothing to compress")
    assert folder_entries(tmp_path) == {"relu.onnx"}


def test_output_equal_to_input(tmp_path):
    source = write_model(tiny_model(), tmp_path / "model.onnx")
    before = digest(source)
    result = run_cli("compress", source, "-o", source)
    assert_one_line_error(result, "would overwrite an input file")
    assert digest(source) == before


def test_missing_output_folder(tmp_path):
    source = write_model(tiny_model(), tmp_path / "model.onnx")
    result = run_cli("compress", source, "-o", tmp_path / "absent" / "out.onnx")
    assert_one_line_error(result, "output folder does not exist")


def test_unwritable_output_folder(tmp_path):
    # /proc rejects new files even for root, so this check works wherever the tests run.
    source = write_model(tiny_model(), tmp_path / "model.onnx")
    result = run_cli("compress", source, "-o", "/proc/out.onnx")
    assert_one_line_error(result, "/proc")
    assert not Path("/proc/out.onnx").exists()


def test_unsupported_opset(tmp_path):
    model = tiny_model()
    model.opset_import[0].version = 12
    source = tmp_path / "old.onnx"
    source.write_bytes(model.SerializeToString())
    result = run_cli("compress", source, "-o", tmp_path / "out.onnx")
    assert_one_line_error(result, "opset 12 is not supported")
    assert folder_entries(tmp_path) == {"old.onnx"}


def test_external_data_in_and_out(tmp_path):
    # Large enough that the 4-bit codes pass the 1 KiB threshold for external storage.
    weight = np.random.default_rng(2).standard_normal((256, 64)).astype(np.float32)
    source = write_model(matmul_model(weight), tmp_path / "model.onnx", external_data=True)
    assert (tmp_path / "model.onnx.data").is_file()
    result = run_cli("compress", source, "-o", tmp_path / "out.onnx", "--block-size", "32")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out.onnx.data").is_file()
    compressed = onnx.load_model(str(tmp_path / "out.onnx"), load_external_data=False)
    assert any(tensor.data_location == onnx.TensorProto.EXTERNAL for tensor in compressed.graph.initializer)
    validation = run_cli("validate", source, tmp_path / "out.onnx", "--min-cosine", "0.9")
    assert validation.exit_code == 0, validation.output


def test_external_data_outside_folder_rejected(tmp_path):
    inner = tmp_path / "models"
    inner.mkdir()
    model = tiny_model()
    write_model(model, tmp_path / "model.onnx", external_data=True)
    loaded = onnx.load_model(str(tmp_path / "model.onnx"), load_external_data=False)
    for tensor in loaded.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../model.onnx.data"
    source = inner / "escape.onnx"
    source.write_bytes(loaded.SerializeToString())
    result = run_cli("compress", source, "-o", inner / "out.onnx")
    assert_one_line_error(result, "outside the model's folder")
    assert folder_entries(inner) == {"escape.onnx"}


def test_validate_json_and_tolerance(tmp_path):
    source = write_model(tiny_model(), tmp_path / "model.onnx")
    run_cli("compress", source, "-o", tmp_path / "out.onnx", "--block-size", "32")
    result = run_cli("validate", source, tmp_path / "out.onnx", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    (output,) = report["outputs"]
    assert output["name"] == "y"
    assert 0.98 < output["cosine"] < 1.0
    assert output["max_abs_error"] > 0
    failing = run_cli("validate", source, tmp_path / "out.onnx", "--min-cosine", "0.99999")
    assert failing.exit_code == 1
    assert "FAILED" in failing.stdout


def test_validate_with_feeds_file(tmp_path):
    source = write_model(tiny_model(), tmp_path / "model.onnx")
    run_cli("compress", source, "-o", tmp_path / "out.onnx", "--block-size", "32")
    np.savez(tmp_path / "feeds.npz", x=np.eye(64, dtype=np.float32)[:5])
    result = run_cli("validate", source, tmp_path / "out.onnx", "--inputs", tmp_path / "feeds.npz", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["outputs"][0]["shape"] == [5, 8]
    np.savez(tmp_path / "wrong.npz", z=np.zeros(3))
    wrong = run_cli("validate", source, tmp_path / "out.onnx", "--inputs", tmp_path / "wrong.npz")
    assert_one_line_error(wrong, "missing ['x'], unknown ['z']")


def test_validate_random_ids_stay_inside_vocabulary(tmp_path):
    table = np.random.default_rng(1).standard_normal((10, 64)).astype(np.float32)
    source = write_model(embedding_model(table), tmp_path / "embedding.onnx")
    run_cli("compress", source, "-o", tmp_path / "out.onnx", "--weight-bits", "8")
    result = run_cli("validate", source, tmp_path / "out.onnx", "--min-cosine", "0.999")
    assert result.exit_code == 0, result.output


def test_inspect_lists_verdicts(tmp_path):
    nodes = [
        helper.make_node("MatMul", ["x", "weight"], ["h"], name="dense"),
        helper.make_node("MatMul", ["h", "x2"], ["y"], name="scores"),
    ]
    model = make_model(
        nodes,
        [float_input("x", [2, 32]), float_input("x2", [4, 3])],
        [float_input("y", [2, 3])],
        {"weight": np.ones((32, 4), np.float32)},
    )
    source = write_model(model, tmp_path / "model.onnx")
    result = run_cli("inspect", source)
    assert result.exit_code == 0, result.output
    assert "compressed by BCT: 1 node(s)" in result.stdout
    assert "MatMul  dense  (weight)" in result.stdout
    assert "scores: second input is computed, not constant" in result.stdout
    assert "MatMul/Gemm weights" in result.stdout


def test_bad_option_value(tmp_path):
    source = write_model(tiny_model(), tmp_path / "model.onnx")
    result = run_cli("compress", source, "-o", tmp_path / "out.onnx", "--weight-bits", "3")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: Invalid value for '--weight-bits': '3' is not one of '4', '8'")


def test_report_path_equal_to_input_rejected(tmp_path):
    source = write_model(tiny_model(), tmp_path / "model.onnx")
    before = digest(source)
    result = run_cli("compress", source, "-o", tmp_path / "out.onnx", "--report", source)
    assert_one_line_error(result, "report path")
    assert digest(source) == before
    assert folder_entries(tmp_path) == {"model.onnx"}


def test_output_data_file_may_not_overwrite_input_data(tmp_path):
    weight = np.random.default_rng(2).standard_normal((256, 64)).astype(np.float32)
    model = matmul_model(weight)
    onnx.save_model(model, str(tmp_path / "fp32.onnx"), save_as_external_data=True, location="model.onnx.data")
    before = digest(tmp_path / "model.onnx.data")
    result = run_cli("compress", tmp_path / "fp32.onnx", "-o", tmp_path / "model.onnx")
    assert_one_line_error(result, "output data file")
    assert digest(tmp_path / "model.onnx.data") == before


def test_missing_report_folder_checked_before_work(tmp_path):
    source = write_model(tiny_model(), tmp_path / "model.onnx")
    result = run_cli("compress", source, "-o", tmp_path / "out.onnx", "--report", tmp_path / "absent" / "r.json")
    assert_one_line_error(result, "output folder does not exist")
    assert folder_entries(tmp_path) == {"model.onnx"}


def test_invalid_graph_rejected_on_load(tmp_path):
    node = helper.make_node("MatMul", ["x", "missing"], ["y"])
    graph = helper.make_graph([node], "g", [float_input("x", [2, 4])], [float_input("y", [2, 3])])
    source = tmp_path / "broken.onnx"
    source.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    result = run_cli("compress", source, "-o", tmp_path / "out.onnx")
    assert_one_line_error(result, "is not a valid ONNX model")


def test_validate_unrelated_models_rejected(tmp_path):
    first = write_model(tiny_model(), tmp_path / "first.onnx")
    table = np.random.default_rng(1).standard_normal((10, 64)).astype(np.float32)
    second = write_model(embedding_model(table), tmp_path / "second.onnx")
    result = run_cli("validate", first, second)
    assert_one_line_error(result, "the models have different inputs")


def test_validate_not_a_model(tmp_path):
    first = write_model(tiny_model(), tmp_path / "first.onnx")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x00\x01garbage")
    result = run_cli("validate", first, broken)
    assert_one_line_error(result, "ONNX Runtime cannot load")


def test_weights_only_calibration_compensates(tmp_path):
    rng = np.random.default_rng(6)
    loadings = rng.normal(size=(4, 64))
    samples = (rng.normal(size=(96, 4)) @ loadings + 0.3 * rng.normal(size=(96, 64))).astype(np.float32)
    np.savez(tmp_path / "feeds.npz", x=samples[:64])
    source = write_model(tiny_model(), tmp_path / "model.onnx")
    errors = {}
    for name, extra in (("plain", []), ("off", ["--no-error-compensation"]), ("on", [])):
        calibration = [] if name == "plain" else ["--calibration", tmp_path / "feeds.npz"]
        output = tmp_path / f"{name}.onnx"
        result = run_cli("compress", source, "-o", output, "--recipe", "weights-only", "--block-size", "32",
                         *calibration, *extra)
        assert result.exit_code == 0, result.output
        weight = onnx.numpy_helper.to_array(tiny_model().graph.initializer[0])
        outputs = run_model(onnx.load(output), {"x": samples[64:]})[0]
        errors[name] = float(np.mean((outputs - samples[64:] @ weight) ** 2))
    assert errors["off"] == errors["plain"]
    assert errors["on"] < 0.5 * errors["plain"]


def test_sigterm_removes_the_temporary_output_folder(tmp_path):
    from bct_onnx.cli import _exit_cleanly_on_sigterm
    from bct_onnx.modelio import _temporary_folder

    previous = signal.getsignal(signal.SIGTERM)
    try:
        _exit_cleanly_on_sigterm()
        with pytest.raises(SystemExit) as stopped, _temporary_folder(tmp_path) as staging:
            (staging / "model.onnx").write_bytes(b"partial")
            os.kill(os.getpid(), signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert stopped.value.code == 128 + signal.SIGTERM
    assert folder_entries(tmp_path) == set()


@pytest.mark.parametrize(
    ("feeds", "fragment"),
    [
        ({"x": np.zeros((4, 2, 64), np.float32)}, "the calibration data does not fit the model"),
        ({"x": np.zeros((0, 64), np.float32)}, "hold no samples"),
    ],
)
def test_unfit_calibration_feeds_give_one_line(tmp_path, feeds, fragment):
    source = write_model(tiny_model(), tmp_path / "model.onnx")
    np.savez(tmp_path / "feeds.npz", **feeds)
    for recipe in ("weights-only", "w8a8"):
        result = run_cli("compress", source, "-o", tmp_path / "out.onnx", "--recipe", recipe,
                         "--calibration", tmp_path / "feeds.npz")
        assert_one_line_error(result, fragment)
    assert folder_entries(tmp_path) == {"model.onnx", "feeds.npz"}


@pytest.mark.parametrize("content", [b"not an archive\n", None])
def test_feeds_file_that_is_not_an_archive(tmp_path, content):
    source = write_model(tiny_model(), tmp_path / "model.onnx")
    feeds = tmp_path / "feeds.npz"
    if content is None:
        np.save(tmp_path / "array.npy", np.ones(3))
        (tmp_path / "array.npy").rename(feeds)
    else:
        feeds.write_bytes(content)
    result = run_cli("validate", source, source, "--inputs", feeds)
    assert_one_line_error(result, "not an .npz archive of arrays")


@pytest.mark.parametrize("reference", ["missing.onnx", "folder", "text.onnx"])
def test_validate_bad_reference_without_inputs(tmp_path, reference):
    candidate = write_model(tiny_model(), tmp_path / "model.onnx")
    (tmp_path / "folder").mkdir()
    (tmp_path / "text.onnx").write_text("not a model")
    result = run_cli("validate", tmp_path / reference, candidate)
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: ")
    assert len(result.stderr.strip().splitlines()) == 1


def test_validate_rejects_empty_feeds(tmp_path):
    source = write_model(tiny_model(), tmp_path / "model.onnx")
    np.savez(tmp_path / "feeds.npz", x=np.zeros((0, 64), np.float32))
    result = run_cli("validate", source, source, "--inputs", tmp_path / "feeds.npz")
    assert_one_line_error(result, "hold no values")


def test_validate_layers_inside_json(tmp_path):
    source = write_model(tiny_model(), tmp_path / "model.onnx")
    run_cli("compress", source, "-o", tmp_path / "out.onnx", "--block-size", "32")
    result = run_cli("validate", source, tmp_path / "out.onnx", "--layers", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["outputs"][0]["name"] == "y"
    assert [row["name"] for row in report["layers"]] == ["y"]
    assert 15 < report["layers"][0]["sqnr_db"] < 25  # 4-bit codes of Gaussian weights


@pytest.mark.parametrize(
    "options",
    [
        ["--task", "sst2", "--data", "own.tsv"],
        ["--data", "own.tsv", "--min-cosine", "0.9"],
        ["--task", "sst2", "--layers"],
        ["--split", "train"],
        ["--max-drop", "1"],
        ["--min-cosine", "2"],
        ["--min-cosine", "nan"],
    ],
)
def test_validate_options_that_would_be_ignored_are_rejected(tmp_path, options):
    source = write_model(tiny_model(), tmp_path / "model.onnx")
    (tmp_path / "own.tsv").write_text("text\tlabel\ngood\t1\n")
    result = CliRunner().invoke(main, ["validate", str(source), str(source), *options], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ")


def test_error_compensation_needs_calibration(tmp_path):
    source = write_model(tiny_model(), tmp_path / "model.onnx")
    result = run_cli("compress", source, "-o", tmp_path / "out.onnx", "--error-compensation")
    assert result.exit_code == 2, result.output
    assert "--error-compensation needs --calibration" in result.stderr


@pytest.mark.parametrize("target", ["output", "report"])
def test_calibration_file_is_never_overwritten(tmp_path, target):
    source = write_model(tiny_model(), tmp_path / "model.onnx")
    np.savez(tmp_path / "feeds.npz", x=np.ones((8, 64), np.float32))
    before = digest(tmp_path / "feeds.npz")
    output = tmp_path / ("feeds.npz" if target == "output" else "out.onnx")
    report = ["--report", tmp_path / "feeds.npz"] if target == "report" else []
    result = run_cli("compress", source, "-o", output, "--calibration", tmp_path / "feeds.npz", *report)
    assert_one_line_error(result, "would overwrite an input")
    assert digest(tmp_path / "feeds.npz") == before


def test_unwritable_report_folder_leaves_no_model(tmp_path, monkeypatch):
    import tempfile

    source = write_model(tiny_model(), tmp_path / "model.onnx")
    (tmp_path / "reports").mkdir()
    (tmp_path / "out.onnx").write_bytes(b"previous output")
    real = tempfile.TemporaryDirectory

    def fail_in_report_folder(*args, dir=None, **kwargs):
        if Path(dir).name == "reports":
            raise OSError(30, "Read-only file system")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryDirectory", fail_in_report_folder)
    result = run_cli("compress", source, "-o", tmp_path / "out.onnx", "--report", tmp_path / "reports" / "r.json")
    assert_one_line_error(result, "cannot write to")
    assert (tmp_path / "out.onnx").read_bytes() == b"previous output"
    assert folder_entries(tmp_path) == {"model.onnx", "out.onnx", "reports"}


@pytest.mark.parametrize("opset", [13, 30])
def test_inspect_refuses_the_opsets_compress_refuses(tmp_path, opset):
    model = tiny_model()
    model.opset_import[0].version = opset
    source = tmp_path / "model.onnx"
    onnx.save_model(model, str(source))
    inspected = run_cli("inspect", source)
    compressed = run_cli("compress", source, "-o", tmp_path / "out.onnx")
    assert inspected.exit_code == compressed.exit_code == 1
    assert inspected.stderr == compressed.stderr


def test_folder_as_model_named_as_such(tmp_path):
    result = run_cli("compress", tmp_path, "-o", tmp_path / "out.onnx")
    assert_one_line_error(result, "model path is a folder")


def test_activation_bits_without_calibration(tmp_path):
    source = write_model(tiny_model(), tmp_path / "model.onnx")
    result = run_cli("compress", source, "-o", tmp_path / "out.onnx", "--activation-bits", "8")
    assert result.exit_code == 2, result.output
    assert "quantizing activations needs --calibration SOURCE" in result.stderr
