"""Tests for bct_onnx.export: config checks, error paths and real MiniLM-L6 exports."""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from collections import Counter

import numpy as np
import onnx
import onnx.external_data_helper
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
ort = pytest.importorskip("onnxruntime")

import bct_onnx.export as export_module  # noqa: E402
from bct_onnx import compress  # noqa: E402
from bct_onnx.export import (  # noqa: E402
    INPUT_NAMES,
    SUPPORTED_OPSETS,
    ExportConfig,
    ExportError,
    Exporter,
    Task,
    default_model_dir,
    export_model,
)
from bct_onnx.errors import OutputError  # noqa: E402
from bct_onnx.validate import compare_output  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]

# torch 2.13 uses opset 20 when torch.onnx.export gets opset_version=None.
TORCH_DEFAULT_OPSET = 20

TOLERANCE = 1e-4


@pytest.fixture(autouse=True)
def hub_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every test away from the network."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Save MiniLM-L6 with a seeded three-label classifier head, like a fine-tuned checkpoint."""
    torch.manual_seed(0)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        default_model_dir(), num_labels=3
    )
    model_dir = tmp_path_factory.mktemp("minilm-classifier")
    model.save_pretrained(model_dir)
    return model_dir


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Save a two-layer BERT with random weights and no classifier head, for fast exports."""
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    model_dir = tmp_path_factory.mktemp("tiny-bert")
    transformers.BertModel(config).save_pretrained(model_dir)
    return model_dir


def make_sample_inputs(vocab_size: int) -> dict[str, np.ndarray]:
    """Build a batch whose shape differs from the tracing example, with padding and both token types."""
    generator = np.random.default_rng(0)
    shape = (3, 11)
    input_ids = generator.integers(0, vocab_size, size=shape, dtype=np.int64)

    attention_mask = np.ones(shape, dtype=np.int64)
    attention_mask[0, 7:] = 0
    attention_mask[2, 4:] = 0

    token_type_ids = np.zeros(shape, dtype=np.int64)
    token_type_ids[:, 5:] = 1
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": token_type_ids,
    }


def run_torch(model_dir: Path, task: Task, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run the checkpoint in PyTorch with transformers' default attention and return its outputs."""
    auto_class = {
        Task.FEATURE_EXTRACTION: transformers.AutoModel,
        Task.SEQUENCE_CLASSIFICATION: transformers.AutoModelForSequenceClassification,
    }[task]
    model = auto_class.from_pretrained(model_dir).eval()
    with torch.no_grad():
        outputs = model(**{name: torch.from_numpy(array) for name, array in inputs.items()})
    return {name: value.numpy() for name, value in outputs.items() if value is not None}


def run_onnxruntime(path: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run the exported graph on the CPU and return its outputs by name."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [value.name for value in session.get_outputs()]
    return dict(zip(names, session.run(names, inputs)))


def default_opset(model: onnx.ModelProto) -> int:
    """Return the default-domain opset version of MODEL."""
    versions = [entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")]
    assert len(versions) == 1
    return versions[0]


# Each export of MiniLM takes about 2 s with TorchScript and 15 s with dynamo on 2 cores, so
# the cases cover each exporter's lowest and highest opset and each task once.
EXPORT_CASES = [
    pytest.param(Exporter.TORCHSCRIPT, 14, Task.FEATURE_EXTRACTION, id="torchscript-14-features"),
    pytest.param(
        Exporter.TORCHSCRIPT, 17, Task.SEQUENCE_CLASSIFICATION, id="torchscript-17-classifier"
    ),
    pytest.param(Exporter.TORCHSCRIPT, 21, Task.FEATURE_EXTRACTION, id="torchscript-21-features"),
    pytest.param(Exporter.DYNAMO, 17, Task.SEQUENCE_CLASSIFICATION, id="dynamo-17-classifier"),
    pytest.param(Exporter.DYNAMO, 21, Task.FEATURE_EXTRACTION, id="dynamo-21-features"),
    pytest.param(Exporter.DYNAMO, None, Task.FEATURE_EXTRACTION, id="dynamo-default-features"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("exporter", "opset", "task"), EXPORT_CASES)
def test_minilm_export_matches_torch(
    exporter: Exporter,
    opset: int | None,
    task: Task,
    classifier_dir: Path,
    tmp_path: Path,
) -> None:
    model_dir = classifier_dir if task is Task.SEQUENCE_CLASSIFICATION else default_model_dir()
    output = tmp_path / "model.onnx"
    config = ExportConfig(task=task, opset=opset, exporter=exporter)

    result = export_model(model_dir, output, config=config)

    assert result == output
    # One self-contained file: no external data and no leftover temporary files.
    assert sorted(os.listdir(output.parent)) == ["model.onnx"]
    onnx.checker.check_model(str(output), full_check=True)

    model = onnx.load(output)
    expected_opset = TORCH_DEFAULT_OPSET if opset is None else opset
    assert default_opset(model) == expected_opset
    assert not any(
        onnx.external_data_helper.uses_external_data(tensor) for tensor in model.graph.initializer
    )

    assert tuple(value.name for value in model.graph.input) == INPUT_NAMES
    for value in model.graph.input:
        assert value.type.tensor_type.elem_type == onnx.TensorProto.INT64
        assert [dim.dim_param for dim in value.type.tensor_type.shape.dim] == ["batch", "sequence"]

    expected_outputs = (
        ["logits"]
        if task is Task.SEQUENCE_CLASSIFICATION
        else ["last_hidden_state", "pooler_output"]
    )
    assert [value.name for value in model.graph.output] == expected_outputs

    metadata = {entry.key: entry.value for entry in model.metadata_props}
    assert metadata["bct_onnx.export.source"] == str(model_dir.resolve())
    assert metadata["bct_onnx.export.task"] == task.value
    assert metadata["bct_onnx.export.exporter"] == exporter.value
    assert metadata["bct_onnx.export.opset"] == str(expected_opset)

    inputs = make_sample_inputs(vocab_size=30522)
    expected = run_torch(model_dir, task, inputs)
    actual = run_onnxruntime(output, inputs)
    assert sorted(actual) == sorted(expected)
    for name, value in expected.items():
        assert actual[name].shape == value.shape, name
        np.testing.assert_allclose(actual[name], value, rtol=0, atol=TOLERANCE, err_msg=name)

    # Every export variant compresses fully: 36 encoder weights, the pooler (and classifier),
    # and the word, position and token type tables.
    compressed = tmp_path / "model.bct.onnx"
    report = compress(output, compressed)
    kinds = Counter(row.kind for row in report.tensors)
    assert kinds["embedding"] == 3
    assert kinds["matmul"] + kinds["gemm"] == (38 if task is Task.SEQUENCE_CLASSIFICATION else 37)
    assert report.ratio > 7.5
    compressed_outputs = run_onnxruntime(compressed, inputs)
    assert compressed_outputs.keys() == actual.keys()
    for name, value in actual.items():
        assert compressed_outputs[name].shape == value.shape
        # The seeded classifier head gives logits near 0.01, too small for a cosine to mean
        # anything, so agreement is checked on the encoder outputs only.
        if name != "logits":
            assert compare_output(name, value, compressed_outputs[name]).cosine > 0.9, name


@pytest.mark.parametrize("exporter", list(Exporter))
@pytest.mark.parametrize("opset", [13, 22])
def test_config_rejects_opset_outside_range(exporter: Exporter, opset: int) -> None:
    supported = SUPPORTED_OPSETS[exporter]
    with pytest.raises(ValueError) as caught:
        ExportConfig(exporter=exporter, opset=opset)

    message = str(caught.value)
    assert f"opset {opset}" in message
    assert exporter.value in message
    assert f"{supported.start}..{supported.stop - 1}" in message
    assert "\n" not in message


def test_config_rejects_dynamo_opset_16() -> None:
    with pytest.raises(ValueError, match=r"^opset 16 is outside the range 17\.\.21 .* dynamo "):
        ExportConfig(exporter=Exporter.DYNAMO, opset=16)


def test_supported_opset_ranges() -> None:
    assert SUPPORTED_OPSETS[Exporter.TORCHSCRIPT] == range(14, 22)
    assert SUPPORTED_OPSETS[Exporter.DYNAMO] == range(17, 22)


@pytest.mark.parametrize(
    ("exporter", "opset"),
    [
        (Exporter.TORCHSCRIPT, 14),
        (Exporter.TORCHSCRIPT, 21),
        (Exporter.DYNAMO, 17),
        (Exporter.DYNAMO, 21),
        (Exporter.DYNAMO, None),
    ],
)
def test_config_accepts_supported_opset(exporter: Exporter, opset: int | None) -> None:
    config = ExportConfig(exporter=exporter, opset=opset)

    assert config.opset == opset
    assert config.exporter is exporter


def test_config_defaults() -> None:
    config = ExportConfig()

    assert config.task is Task.FEATURE_EXTRACTION
    assert config.exporter is Exporter.DYNAMO
    assert config.opset is None


@pytest.mark.parametrize("opset", ["18", 18.0, True])
def test_config_rejects_non_int_opset(opset: object) -> None:
    with pytest.raises(TypeError, match="opset must be an int or None"):
        ExportConfig(opset=opset)  # type: ignore[arg-type]


def test_config_rejects_task_string() -> None:
    with pytest.raises(TypeError, match="task must be a Task"):
        ExportConfig(task="feature-extraction")  # type: ignore[arg-type]


def test_default_model_dir_has_checkpoint() -> None:
    model_dir = default_model_dir()

    assert model_dir.is_dir()
    assert (model_dir / "config.json").is_file()
    assert (model_dir / "model.safetensors").is_file()


@pytest.mark.parametrize("kind", ["directory", "hub id"])
def test_missing_model_raises(kind: str, tmp_path: Path) -> None:
    model = str(tmp_path / "no-such-model") if kind == "directory" else "no-such-org/no-such-model"
    output = tmp_path / "model.onnx"

    with pytest.raises(ExportError) as caught:
        export_model(model, output)

    message = str(caught.value)
    assert message.startswith(f"model directory not found: {model} ")
    assert "HF_HUB_OFFLINE" in message
    assert "\n" not in message
    assert os.listdir(tmp_path) == []


def test_broken_config_leaves_no_files(tmp_path: Path) -> None:
    model_dir = tmp_path / "broken-model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text('{"model_type": "bert", ')
    output = tmp_path / "out" / "model.onnx"
    output.parent.mkdir()

    with pytest.raises(ExportError, match="failed to load the model in .*broken-model"):
        export_model(model_dir, output, config=ExportConfig(exporter=Exporter.TORCHSCRIPT))

    assert os.listdir(output.parent) == []


def test_failed_save_keeps_old_output(
    tiny_bert_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = tmp_path / "model.onnx"
    output.write_bytes(b"previous export")

    def save_half_then_fail(proto: onnx.ModelProto, path: str | os.PathLike[str], **_: object) -> None:
        Path(path).write_bytes(proto.SerializeToString()[:100])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export_module.onnx, "save_model", save_half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        export_model(tiny_bert_dir, output, config=ExportConfig(exporter=Exporter.TORCHSCRIPT))

    assert os.listdir(tmp_path) == ["model.onnx"]
    assert output.read_bytes() == b"previous export"


def test_output_directory_rejected(tiny_bert_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="output path is a folder"):
        export_model(tiny_bert_dir, tmp_path)


def test_missing_output_folder_rejected(tiny_bert_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="output folder does not exist"):
        export_model(tiny_bert_dir, tmp_path / "missing" / "model.onnx")
    assert os.listdir(tmp_path) == []


def test_missing_head_logs_warning(
    tiny_bert_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    output = tmp_path / "model.onnx"
    config = ExportConfig(task=Task.SEQUENCE_CLASSIFICATION, exporter=Exporter.TORCHSCRIPT)

    with caplog.at_level(logging.WARNING, logger="bct_onnx.export"):
        export_model(tiny_bert_dir, output, config=config)

    warnings = [record for record in caplog.records if record.name == "bct_onnx.export"]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert "classifier.weight" in warnings[0].getMessage()
    assert "initialized them randomly" in warnings[0].getMessage()
    assert [value.name for value in onnx.load(output).graph.output] == ["logits"]


def test_large_model_uses_external_data(
    tiny_bert_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A limit of 1 KiB makes the tiny model take the path of models of 2 GiB or more.
    monkeypatch.setattr(export_module, "_MAX_SINGLE_FILE_BYTES", 1024)
    output = tmp_path / "model.onnx"

    export_model(tiny_bert_dir, output, config=ExportConfig(exporter=Exporter.TORCHSCRIPT))

    assert sorted(os.listdir(tmp_path)) == ["model.onnx", "model.onnx.data"]
    model = onnx.load(output, load_external_data=False)
    assert any(
        onnx.external_data_helper.uses_external_data(tensor) for tensor in model.graph.initializer
    )
    onnx.checker.check_model(str(output), full_check=True)

    inputs = make_sample_inputs(vocab_size=100)
    expected = run_torch(tiny_bert_dir, Task.FEATURE_EXTRACTION, inputs)
    actual = run_onnxruntime(output, inputs)
    for name, value in expected.items():
        np.testing.assert_allclose(actual[name], value, rtol=0, atol=TOLERANCE, err_msg=name)


def test_import_works_without_torch(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["torch"] = None  # makes "import torch" raise ImportError
        from bct_onnx.export import ExportError, export_model
        try:
            export_model({str(default_model_dir())!r}, {str(tmp_path / "model.onnx")!r})
        except ExportError as error:
            print(error)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )

    assert "exporting needs torch" in result.stdout
    assert "pip install 'bct-onnx[export]'" in result.stdout
    assert os.listdir(tmp_path) == []
