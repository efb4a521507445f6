"""End to end on the real MiniLM-L6: export, compress, check, run, and compare with float32."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from bct_onnx import CompressConfig, compress  # noqa: E402
from bct_onnx.export import Exporter, ExportConfig, default_model_dir, export_model  # noqa: E402
from bct_onnx.demo import DEMO_SENTENCES  # noqa: E402
from bct_onnx.validate import row_cosine  # noqa: E402

pytestmark = pytest.mark.slow



@pytest.fixture(scope="module")
def float_model(tmp_path_factory) -> Path:
    return export_model(default_model_dir(), tmp_path_factory.mktemp("export") / "minilm.onnx", config=ExportConfig())


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    return list(DEMO_SENTENCES)


def sentence_embeddings(model_path: Path, sentences: list[str]) -> np.ndarray:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(default_model_dir())
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    encoded = tokenizer(sentences, padding=True, return_tensors="np")
    feeds = {value.name: encoded[value.name].astype(np.int64) for value in session.get_inputs()}
    hidden = session.run(["last_hidden_state"], feeds)[0]
    mask = feeds["attention_mask"][..., None].astype(np.float32)
    return (hidden * mask).sum(axis=1) / mask.sum(axis=1)


@pytest.mark.parametrize(("bits", "min_ratio", "min_cosine"), [(4, 7.5, 0.95), (8, 3.9, 0.999)])
def test_minilm_ratio_and_agreement(float_model, sentences, tmp_path, bits, min_ratio, min_cosine):
    output = tmp_path / "minilm.bct.onnx"
    report = compress(float_model, output, config=CompressConfig(weight_bits=bits))

    assert report.ratio >= min_ratio
    assert Counter(row.kind for row in report.tensors)["embedding"] == 3
    assert sum(row.kind in ("matmul", "gemm") for row in report.tensors) == 37  # 6 layers × 6 + pooler
    onnx.checker.check_model(str(output), full_check=True)

    reference = sentence_embeddings(float_model, sentences)
    compressed = sentence_embeddings(output, sentences)
    assert float(np.mean(row_cosine(reference, compressed))) >= min_cosine


def test_readme_commands(tmp_path):
    """The README's usage commands, in order, on the built-in model."""
    from click.testing import CliRunner

    from bct_onnx.cli import main

    runner = CliRunner()
    steps = [
        ["export", "default", "-o", "minilm.onnx"],
        ["inspect", "minilm.onnx"],
        ["compress", "minilm.onnx", "-o", "minilm.bct.onnx", "--report", "report.json"],
        ["validate", "minilm.onnx", "minilm.bct.onnx", "--min-cosine", "0.9"],
    ]
    with runner.isolated_filesystem(temp_dir=tmp_path):
        outputs = []
        for step in steps:
            result = runner.invoke(main, step)
            assert result.exit_code == 0, f"{step}: {result.output}"
            outputs.append(result.stdout)
        assert "compressed by BCT: 40 node(s)" in outputs[1]
        assert "compression ratio" in outputs[2]
        assert "minimum cosine 0.9: passed" in outputs[3]


def test_demo_command(tmp_path):
    from click.testing import CliRunner

    from bct_onnx.cli import main

    result = CliRunner().invoke(main, ["demo", "--workdir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "[3/3] comparing both models on 8 sentences" in result.stderr
    assert "minimum cosine 0.9: passed" in result.stdout
    assert sorted(path.name for path in tmp_path.iterdir()) == ["minilm-l6.bct.onnx", "minilm-l6.onnx"]


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_bct_recipe_integer_operators(tmp_path, glue_dir, sentences, exporter):
    """Both exporters' graphs get every GELU, Softmax and LayerNorm as an integer operator."""
    from click.testing import CliRunner

    from bct_onnx.cli import main
    from bct_onnx.integer_ops import custom_op_session_options

    float_path = export_model(default_model_dir(), tmp_path / "minilm.onnx",
                              config=ExportConfig(exporter=Exporter(exporter)))
    output = tmp_path / "minilm.bct.onnx"
    result = CliRunner().invoke(main, [
        "compress", str(float_path), "-o", str(output), "--calibration", "glue:stsb",
        "--glue-dir", str(glue_dir), "--calibration-samples", "32", "--sequence-length", "64",
    ])
    assert result.exit_code == 0, result.output

    model = onnx.load(str(output))
    ops = Counter(node.op_type for node in model.graph.node)
    assert (ops["IntegerGelu"], ops["IntegerSoftmax"], ops["IntegerLayerNormalization"]) == (6, 6, 13)
    assert not {"Gelu", "Erf", "Softmax", "LayerNormalization"} & set(ops)

    from transformers import AutoTokenizer

    encoded = AutoTokenizer.from_pretrained(default_model_dir())(sentences, padding=True, return_tensors="np")
    feeds = {name: np.asarray(values, np.int64) for name, values in encoded.items()}
    stock = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"]).run(None, feeds)
    kernels = ort.InferenceSession(str(output), custom_op_session_options(),
                                   providers=["CPUExecutionProvider"]).run(None, feeds)
    for expected, actual in zip(stock, kernels):
        np.testing.assert_array_equal(expected, actual)
    assert float(np.mean(row_cosine(sentence_embeddings(float_path, sentences),
                                    sentence_embeddings(output, sentences)))) > 0.9
