"""Task validation through the CLI, on a tiny bag-of-words classifier and the real tokenizer."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from conftest import int64_input, make_model
from onnx import TensorProto, helper

pytest.importorskip("transformers")

from bct_onnx.cli import main  # noqa: E402
from bct_onnx.export import default_model_dir  # noqa: E402
from bct_onnx.glue import Example, TaskKind  # noqa: E402
from bct_onnx.task_validation import predict, tokenize_examples  # noqa: E402

VOCABULARY = 30522  # the built-in MiniLM-L6 tokenizer's


def bag_of_words_classifier(seed: int = 0) -> onnx.ModelProto:
    """Return logits = sum over unmasked tokens of table[token]: a [vocabulary, 2] classifier."""
    table = np.random.default_rng(seed).standard_normal((VOCABULARY, 2)).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["embedded"]),
        helper.make_node("Cast", ["attention_mask"], ["mask_float"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask_float", "last"], ["mask"]),
        helper.make_node("Mul", ["embedded", "mask"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "sequence_axis"], ["logits"], keepdims=0),
    ]
    inputs = [int64_input(name, ["batch", "sequence"]) for name in ("input_ids", "attention_mask", "token_type_ids")]
    initializers = {"table": table, "last": np.array([-1], np.int64), "sequence_axis": np.array([1], np.int64)}
    return make_model(nodes, inputs, [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
                      initializers)


SENTENCES = [
    "the film was wonderful", "a dull and tedious plot", "great acting throughout", "i would not watch it again",
    "an instant classic", "the soundtrack is forgettable", "funny and moving", "poorly written dialogue",
]


@pytest.fixture
def models(tmp_path):
    reference = tmp_path / "classifier.onnx"
    onnx.save(bag_of_words_classifier(), str(reference))
    candidate = tmp_path / "classifier.bct.onnx"
    result = CliRunner().invoke(main, ["compress", str(reference), "-o", str(candidate), "--weight-bits", "4",
                                       "--block-size", "2"])
    assert result.exit_code == 0, result.output
    return reference, candidate


def labelled_file(tmp_path, labels) -> str:
    path = tmp_path / "reviews.tsv"
    path.write_text("sentence\tlabel\n" + "".join(f"{text}\t{label}\n" for text, label in zip(SENTENCES, labels)))
    return str(path)


def run_validate(reference, candidate, data, *extra):
    arguments = ["validate", str(reference), str(candidate), "--data", data, "--tokenizer", str(default_model_dir()),
                 "--json", *extra]
    return CliRunner().invoke(main, arguments)


def test_own_labelled_file_scores_both_models(tmp_path, models):
    reference, candidate = models
    result = run_validate(reference, candidate, labelled_file(tmp_path, [1, 0, 1, 0, 1, 0, 1, 0]))
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["task"] == "custom"
    assert report["examples"] == 8
    assert set(report["reference"]) == {"accuracy", "f1", "mcc"}
    assert 0.0 <= report["agreement"] <= 1.0
    assert report["drop"] == pytest.approx(100 * (report["reference"]["accuracy"] - report["candidate"]["accuracy"]))


def test_max_drop_exit_status_both_ways(tmp_path, models):
    reference, candidate = models
    # Labels that the float model gets right make its accuracy 1.0, so the drop is known.
    examples = [Example(text, None, 0) for text in SENTENCES]
    feeds = tokenize_examples(examples, default_model_dir(), 128)
    float_labels = predict(reference, feeds, TaskKind.CLASSIFICATION)
    data = labelled_file(tmp_path, float_labels.tolist())

    report = json.loads(run_validate(reference, candidate, data).stdout)
    assert report["reference"]["accuracy"] == 1.0
    drop = report["drop"]

    passing = run_validate(reference, candidate, data, "--max-drop", str(drop + 0.01))
    assert passing.exit_code == 0, passing.output
    assert json.loads(passing.stdout)["passed"] is True
    failing = run_validate(reference, candidate, data, "--max-drop", str(drop - 0.01))
    assert failing.exit_code == 1
    assert "dropped by" in failing.stderr
    assert json.loads(failing.stdout)["passed"] is False


def test_glue_task_validation(glue_dir, models):
    reference, candidate = models
    result = CliRunner().invoke(main, ["validate", str(reference), str(candidate), "--task", "sst2", "--glue-dir",
                                       str(glue_dir), "--tokenizer", str(default_model_dir()), "--limit", "40"])
    assert result.exit_code == 0, result.output
    assert "task sst2, 40 examples" in result.stdout
    assert "drop of accuracy" in result.stdout


def test_missing_label_column(tmp_path, models):
    reference, candidate = models
    path = tmp_path / "bad.tsv"
    path.write_text("sentence\tscore\nfine\t1\n")
    result = run_validate(reference, candidate, str(path))
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ")
