"""GLUE split readers on the local GLUE files, and the reader of a user's labelled files."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from bct_onnx.errors import BctError
from bct_onnx.glue import (
    GLUE_DIR_ENV,
    HF_GLUE_ID,
    TASKS,
    Example,
    GlueDataError,
    TaskKind,
    get_task,
    load_glue_split,
    load_labelled_file,
)

# Rows and label counts per class index of every local file. The row counts are the GLUE split
# sizes. The label counts were counted from the files. STS-B has scores, not classes.
LOCAL_FILES = [
    ("cola", "train", 8551, [2528, 6023]),
    ("cola", "dev", 1043, [322, 721]),
    ("sst2", "train", 67349, [29780, 37569]),
    ("sst2", "dev", 872, [428, 444]),
    ("mrpc", "train", 3668, [1194, 2474]),
    ("mrpc", "dev", 408, [129, 279]),
    ("stsb", "train", 5749, None),
    ("stsb", "dev", 1500, None),
    ("rte", "train", 2490, [1249, 1241]),
    ("rte", "dev", 277, [146, 131]),
    ("wnli", "train", 635, [323, 312]),
    ("wnli", "dev", 71, [40, 31]),
    ("qnli", "dev", 5463, [2702, 2761]),
]

# Header of MNLI dev_matched.tsv in the original GLUE release: parse trees, then five annotator
# labels and the gold label.
MNLI_DEV_HEADER = [
    "index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
    "sentence1_parse", "sentence2_parse", "sentence1", "sentence2",
    "label1", "label2", "label3", "label4", "label5", "gold_label",
]


def write_lines(path: Path, lines: list[str], *, prefix: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(prefix + "\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_sst2_dev(glue_dir: Path, *, bom: bool = False) -> Path:
    return write_lines(
        glue_dir / "SST-2" / "dev.tsv",
        ["sentence\tlabel", "good film \t1", "bad film \t0"],
        prefix="\ufeff" if bom else "",
    )


# Local GLUE files


@pytest.mark.parametrize(("task", "split", "rows", "label_counts"), LOCAL_FILES)
def test_local_file_rows_and_labels(
    glue_dir: Path, task: str, split: str, rows: int, label_counts: list[int] | None
) -> None:
    examples = load_glue_split(task, split, glue_dir=glue_dir)
    assert len(examples) == rows
    if label_counts is not None:
        labels = [example.label for example in examples]
        assert [labels.count(index) for index in range(len(label_counts))] == label_counts
        assert set(labels) == set(range(TASKS[task].num_labels))


@pytest.mark.parametrize(("task", "split"), [(task, split) for task, split, _, _ in LOCAL_FILES])
def test_local_file_text_columns(glue_dir: Path, task: str, split: str) -> None:
    examples = load_glue_split(task, split, glue_dir=glue_dir, limit=50)
    pair = len(TASKS[task].text_columns) == 2
    assert all(example.text_a for example in examples)
    assert all((example.text_b is not None) == pair for example in examples)


def test_cola_dev_first_example(glue_dir: Path) -> None:
    first = load_glue_split("cola", "dev", glue_dir=glue_dir)[0]
    assert first == Example("The sailors rode the breeze clear of the rocks.", None, 1)


def test_cola_dev_last_row_without_newline(glue_dir: Path) -> None:
    last = load_glue_split("cola", "dev", glue_dir=glue_dir)[-1]
    assert last == Example("John talked to Bill about himself.", None, 1)


def test_mrpc_dev_first_example_keeps_quotes(glue_dir: Path) -> None:
    first = load_glue_split("mrpc", "dev", glue_dir=glue_dir)[0]
    assert first.text_a == "He said the foodservice pie business doesn 't fit the company 's long-term growth strategy ."
    assert first.text_b == '" The foodservice pie business does not fit our long-term growth strategy .'
    assert first.label == 1


def test_mrpc_byte_order_mark_stripped(glue_dir: Path) -> None:
    # The files start with a byte order mark before "Quality"; the label column is still found.
    assert (glue_dir / "MRPC" / "train.tsv").read_bytes().startswith(b"\xef\xbb\xbfQuality")
    examples = load_glue_split("mrpc", "train", glue_dir=glue_dir)
    assert examples[0].text_a.startswith("Amrozi accused his brother")
    assert not any("\ufeff" in example.text_a + str(example.text_b) for example in examples)


def test_rte_dev_text_label_maps_to_index(glue_dir: Path) -> None:
    first = load_glue_split("rte", "dev", glue_dir=glue_dir)[0]
    assert first.text_b == "Christopher Reeve had an accident."
    assert first.label == 1  # not_entailment


def test_qnli_dev_first_example(glue_dir: Path) -> None:
    first = load_glue_split("qnli", "dev", glue_dir=glue_dir)[0]
    assert first.text_a == "What came into force after the new constitution was herald?"
    assert first.label == 0  # entailment


@pytest.mark.parametrize("split", ["train", "dev"])
def test_stsb_labels_are_scores(glue_dir: Path, split: str) -> None:
    labels = [example.label for example in load_glue_split("stsb", split, glue_dir=glue_dir)]
    assert all(type(label) is float for label in labels)
    assert min(labels) >= 0.0
    assert max(labels) <= 5.0
    assert min(labels) == 0.0
    assert max(labels) == 5.0


def test_stsb_dev_first_example(glue_dir: Path) -> None:
    first = load_glue_split("stsb", "dev", glue_dir=glue_dir)[0]
    assert first == Example("A man with a hard hat is dancing.", "A man wearing a hard hat is dancing.", 5.0)


def test_sst2_keeps_trailing_space(glue_dir: Path) -> None:
    first = load_glue_split("sst2", "dev", glue_dir=glue_dir)[0]
    assert first.text_a == "it 's a charming and often affecting journey . "


def test_limit_keeps_first_examples(glue_dir: Path) -> None:
    everything = load_glue_split("sst2", "dev", glue_dir=glue_dir)
    assert load_glue_split("sst2", "dev", glue_dir=glue_dir, limit=5) == everything[:5]
    assert len(load_glue_split("sst2", "dev", glue_dir=glue_dir, limit=10_000)) == 872


def test_limit_below_one_raises(glue_dir: Path) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        load_glue_split("sst2", "dev", glue_dir=glue_dir, limit=0)


# Locating the data


def test_missing_folder_names_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder"
    with pytest.raises(GlueDataError, match="GLUE data folder not found") as caught:
        load_glue_split("sst2", glue_dir=missing)
    assert str(missing) in str(caught.value)
    assert "BCT_GLUE_DIR" in str(caught.value)
    assert isinstance(caught.value, BctError)


def test_missing_task_file_names_path(tmp_path: Path) -> None:
    with pytest.raises(GlueDataError, match="GLUE file not found") as caught:
        load_glue_split("rte", "dev", glue_dir=tmp_path)
    assert str(tmp_path / "RTE" / "dev.tsv") in str(caught.value)
    assert "--glue-dir" in str(caught.value)


def test_env_var_sets_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_sst2_dev(tmp_path)
    monkeypatch.setenv(GLUE_DIR_ENV, str(tmp_path))
    assert load_glue_split("sst2") == [Example("good film ", None, 1), Example("bad film ", None, 0)]


def test_argument_overrides_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_sst2_dev(tmp_path / "mine")
    monkeypatch.setenv(GLUE_DIR_ENV, str(tmp_path / "elsewhere"))
    assert len(load_glue_split("sst2", glue_dir=tmp_path / "mine")) == 2


def test_byte_order_mark_in_any_file(tmp_path: Path) -> None:
    write_sst2_dev(tmp_path, bom=True)
    assert load_glue_split("sst2", glue_dir=tmp_path)[0] == Example("good film ", None, 1)


def test_no_folder_without_datasets_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(GLUE_DIR_ENV, raising=False)
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(GlueDataError, match="datasets library is not installed") as caught:
        load_glue_split("sst2")
    assert "BCT_GLUE_DIR" in str(caught.value)
    assert "--glue-dir" in str(caught.value)


def fake_datasets(records: list[dict[str, object]], calls: list[tuple[object, ...]]) -> types.ModuleType:
    """Return a stand-in for the datasets library whose load_dataset returns ``records``."""
    module = types.ModuleType("datasets")

    def load_dataset(path: str, name: str, *, split: str) -> list[dict[str, object]]:
        calls.append((path, name, split))
        return records

    module.load_dataset = load_dataset  # type: ignore[attr-defined]
    return module


def test_datasets_fallback_maps_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[object, ...]] = []
    records = [
        {"premise": "A cat sleeps.", "hypothesis": "An animal rests.", "label": 0, "idx": 0},
        {"premise": "A cat sleeps.", "hypothesis": "A dog barks.", "label": 1, "idx": 1},
        {"premise": "A cat sleeps.", "hypothesis": "The cat runs.", "label": 2, "idx": 2},
    ]
    monkeypatch.delenv(GLUE_DIR_ENV, raising=False)
    monkeypatch.setitem(sys.modules, "datasets", fake_datasets(records, calls))

    examples = load_glue_split("MNLI", "dev_matched", limit=2)
    assert calls == [(HF_GLUE_ID, "mnli", "validation_matched")]
    assert examples == [Example("A cat sleeps.", "An animal rests.", 0), Example("A cat sleeps.", "A dog barks.", 1)]


def test_datasets_fallback_regression(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[object, ...]] = []
    records = [{"sentence1": "a", "sentence2": "b", "label": 3.8, "idx": 0}]
    monkeypatch.delenv(GLUE_DIR_ENV, raising=False)
    monkeypatch.setitem(sys.modules, "datasets", fake_datasets(records, calls))
    assert load_glue_split("stsb") == [Example("a", "b", 3.8)]
    assert calls == [(HF_GLUE_ID, "stsb", "validation")]


def test_datasets_failure_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("datasets")

    def load_dataset(path: str, name: str, *, split: str) -> None:
        raise ConnectionError("hub unreachable")

    module.load_dataset = load_dataset  # type: ignore[attr-defined]
    monkeypatch.delenv(GLUE_DIR_ENV, raising=False)
    monkeypatch.setitem(sys.modules, "datasets", module)
    with pytest.raises(GlueDataError, match="hub unreachable"):
        load_glue_split("rte")


# Task names and splits


@pytest.mark.parametrize(
    ("alias", "name"),
    [("SST-2", "sst2"), ("sst-2", "sst2"), ("sst2", "sst2"), ("sst_2", "sst2"), ("STS-B", "stsb"),
     ("stsb", "stsb"), ("CoLA", "cola"), ("MRPC", "mrpc"), ("QQP", "qqp"), ("MNLI", "mnli"),
     ("QNLI", "qnli"), (" RTE ", "rte"), ("WNLI", "wnli")],
)
def test_task_aliases(alias: str, name: str) -> None:
    assert get_task(alias) is TASKS[name]


def test_task_object_passes_through() -> None:
    assert get_task(TASKS["rte"]) is TASKS["rte"]


def test_unknown_task_lists_known() -> None:
    with pytest.raises(GlueDataError, match="unknown GLUE task 'imdb'; known tasks: cola, sst2"):
        get_task("imdb")


def test_unknown_split_lists_splits(glue_dir: Path) -> None:
    with pytest.raises(GlueDataError, match="no split 'test'; splits: train, dev"):
        load_glue_split("sst2", "test", glue_dir=glue_dir)
    with pytest.raises(GlueDataError, match="splits: train, dev_matched, dev_mismatched"):
        load_glue_split("mnli", "dev", glue_dir=glue_dir)


def test_label_orders_match_hf_configs() -> None:
    assert TASKS["mnli"].label_values == ("entailment", "neutral", "contradiction")
    assert TASKS["qnli"].label_values == ("entailment", "not_entailment")
    assert TASKS["rte"].label_values == ("entailment", "not_entailment")
    assert TASKS["wnli"].label_names == ("not_entailment", "entailment")
    assert TASKS["cola"].label_names == ("unacceptable", "acceptable")
    assert TASKS["stsb"].kind is TaskKind.REGRESSION
    assert TASKS["stsb"].num_labels == 1


def test_registry_layouts() -> None:
    assert TASKS["cola"].has_header is False
    assert all(task.has_header for name, task in TASKS.items() if name != "cola")
    assert TASKS["mrpc"].text_columns == ("#1 String", "#2 String")
    assert TASKS["mrpc"].label_column == "Quality"
    assert TASKS["qqp"].text_columns == ("question1", "question2")
    assert TASKS["qqp"].label_column == "is_duplicate"
    assert TASKS["mnli"].label_column == "gold_label"


# Layouts and errors on small written files


def test_mnli_layout(tmp_path: Path) -> None:
    row = ["0", "1", "1e", "fiction", "( ( A cat ) sleeps )", "( An animal )", "(ROOT)", "(ROOT)",
           "A cat sleeps.", "An animal rests.", "entailment", "entailment", "neutral", "entailment",
           "entailment", "entailment"]
    contradiction = row[:-1] + ["contradiction"]
    write_lines(tmp_path / "MNLI" / "dev_mismatched.tsv",
                ["\t".join(MNLI_DEV_HEADER), "\t".join(row), "\t".join(contradiction)])
    examples = load_glue_split("mnli", "dev_mismatched", glue_dir=tmp_path)
    assert examples == [Example("A cat sleeps.", "An animal rests.", 0), Example("A cat sleeps.", "An animal rests.", 2)]


def test_qqp_layout(tmp_path: Path) -> None:
    write_lines(tmp_path / "QQP" / "dev.tsv", [
        "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate",
        "7\t15\t16\tHow do I learn Python?\tWhat is the best way to learn Python?\t1",
    ])
    assert load_glue_split("qqp", glue_dir=tmp_path) == [
        Example("How do I learn Python?", "What is the best way to learn Python?", 1)
    ]


def test_malformed_row_names_file_and_line(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "RTE" / "dev.tsv", [
        "index\tsentence1\tsentence2\tlabel",
        "0\tA.\tB.\tentailment",
        "1\tA.\tB.",
    ])
    with pytest.raises(GlueDataError, match="line 3: expected 4 fields, found 3") as caught:
        load_glue_split("rte", glue_dir=tmp_path)
    assert str(path) in str(caught.value)


def test_limit_stops_before_later_rows(tmp_path: Path) -> None:
    write_lines(tmp_path / "RTE" / "dev.tsv", ["index\tsentence1\tsentence2\tlabel", "0\tA.\tB.\tentailment", "bad row"])
    assert load_glue_split("rte", glue_dir=tmp_path, limit=1) == [Example("A.", "B.", 0)]


def test_invalid_label_names_line(tmp_path: Path) -> None:
    write_lines(tmp_path / "RTE" / "dev.tsv", ["index\tsentence1\tsentence2\tlabel", "0\tA.\tB.\tneutral"])
    with pytest.raises(GlueDataError, match="line 2: invalid label 'neutral' for rte"):
        load_glue_split("rte", glue_dir=tmp_path)


def test_invalid_score_names_line(tmp_path: Path) -> None:
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
    write_lines(tmp_path / "STS-B" / "dev.tsv", [header, "0\tg\tf\ty\t0\tn\tn\tA.\tB.\thigh"])
    with pytest.raises(GlueDataError, match="line 2: invalid score 'high'"):
        load_glue_split("stsb", glue_dir=tmp_path)


def test_missing_column_lists_found(tmp_path: Path) -> None:
    write_lines(tmp_path / "SST-2" / "dev.tsv", ["text\tlabel", "good\t1"])
    with pytest.raises(GlueDataError, match="missing column.* sentence; columns found: text, label"):
        load_glue_split("sst2", glue_dir=tmp_path)


def test_empty_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "SST-2" / "dev.tsv"
    path.parent.mkdir()
    path.write_text("")
    with pytest.raises(GlueDataError, match="is empty"):
        load_glue_split("sst2", glue_dir=tmp_path)


def test_header_only_file_raises(tmp_path: Path) -> None:
    write_lines(tmp_path / "SST-2" / "dev.tsv", ["sentence\tlabel"])
    with pytest.raises(GlueDataError, match="has no examples"):
        load_glue_split("sst2", glue_dir=tmp_path)


def test_invalid_utf8_raises(tmp_path: Path) -> None:
    path = tmp_path / "SST-2" / "dev.tsv"
    path.parent.mkdir()
    path.write_bytes(b"sentence\tlabel\ncaf\xe9\t1\n")
    with pytest.raises(GlueDataError, match="not valid UTF-8"):
        load_glue_split("sst2", glue_dir=tmp_path)


# User's labelled files


def test_user_tsv_text_labels_sorted(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "reviews.tsv", [
        "text\tlabel", 'a "great" film\tpos', "dull\tneg", "", "fine\tpos ",
    ])
    data = load_labelled_file(path)
    assert data.kind is TaskKind.CLASSIFICATION
    assert data.label_names == ("neg", "pos")
    assert data.examples == (Example('a "great" film', None, 1), Example("dull", None, 0), Example("fine", None, 1))


def test_user_csv_quoted_pairs(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "pairs.csv", [
        "sentence,sentence2,label", '"Hello, world",Hi,1', 'Bye,"She said ""no""",0',
    ])
    data = load_labelled_file(path)
    assert data.label_names == ("0", "1")
    assert data.examples == (Example("Hello, world", "Hi", 1), Example("Bye", 'She said "no"', 0))


def test_user_jsonl_scores_are_regression(tmp_path: Path) -> None:
    lines = [json.dumps({"sentence1": "a", "sentence2": "b", "label": 4.5}),
             json.dumps({"sentence1": "c", "sentence2": "d", "label": 1})]
    data = load_labelled_file(write_lines(tmp_path / "sts.jsonl", lines))
    assert data.kind is TaskKind.REGRESSION
    assert data.label_names == ()
    assert data.examples == (Example("a", "b", 4.5), Example("c", "d", 1.0))


def test_user_jsonl_integer_labels_kept(tmp_path: Path) -> None:
    # Classes 0 and 2 without 1: the integers stay class indices.
    lines = [json.dumps({"text": "x", "label": 2}), json.dumps({"text": "y", "label": 0})]
    data = load_labelled_file(write_lines(tmp_path / "three.jsonl", lines))
    assert data.kind is TaskKind.CLASSIFICATION
    assert data.label_names == ("0", "1", "2")
    assert [example.label for example in data.examples] == [2, 0]


def test_user_negative_integers_numeric_order(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "signs.csv", ["text,label", "a,1", "b,-1", "c,10", "d,0"])
    data = load_labelled_file(path)
    assert data.label_names == ("-1", "0", "1", "10")
    assert [example.label for example in data.examples] == [2, 0, 3, 1]


def test_user_named_columns(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "custom.tsv", ["id\tq\tpassage\tanswer", "1\tWhy?\tBecause.\tyes"])
    data = load_labelled_file(path, text_columns=("q", "passage"), label_column="answer")
    assert data.examples == (Example("Why?", "Because.", 0),)
    assert data.label_names == ("yes",)


def test_user_forced_classification_of_scores(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "s.csv", ["text,label", "a,0.5", "b,1.5", "c,0.5"])
    data = load_labelled_file(path, task_kind=TaskKind.CLASSIFICATION)
    assert data.label_names == ("0.5", "1.5")
    assert [example.label for example in data.examples] == [0, 1, 0]


def test_user_forced_regression_rejects_text(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "s.csv", ["text,label", "a,0.5", "b,high"])
    with pytest.raises(GlueDataError, match="line 3: invalid score 'high'"):
        load_labelled_file(path, task_kind=TaskKind.REGRESSION)


def test_user_missing_label_column(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "s.tsv", ["text\tsentiment", "a\tpos"])
    with pytest.raises(GlueDataError, match="missing label column 'label'; columns found: text, sentiment"):
        load_labelled_file(path)


def test_user_missing_text_column(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "s.tsv", ["review\tlabel", "a\tpos"])
    with pytest.raises(GlueDataError, match="no text column; expected one of text, sentence, sentence1, "
                                            "columns found: review, label"):
        load_labelled_file(path)
    with pytest.raises(GlueDataError, match="missing text column.* body; columns found: review, label"):
        load_labelled_file(path, text_columns=("body",))


def test_user_text_columns_must_be_tuple(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "s.tsv", ["text\tlabel", "a\tpos"])
    with pytest.raises(ValueError, match="one or two column names"):
        load_labelled_file(path, text_columns="text")  # type: ignore[arg-type]


def test_user_csv_wrong_field_count(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "s.csv", ["text,label", "a,1", "b,1,extra"])
    with pytest.raises(GlueDataError, match="line 3: expected 2 fields, found 3"):
        load_labelled_file(path)


def test_user_jsonl_errors_name_line(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "bad.jsonl", ['{"text": "a", "label": 1}', '{"text": "b"}'])
    with pytest.raises(GlueDataError, match="line 2: missing value for column 'label'"):
        load_labelled_file(path)
    path = write_lines(tmp_path / "broken.jsonl", ['{"text": "a", "label": 1}', "{oops"])
    with pytest.raises(GlueDataError, match="line 2: invalid JSON"):
        load_labelled_file(path)
    path = write_lines(tmp_path / "list.jsonl", ['["a", 1]'])
    with pytest.raises(GlueDataError, match="line 1: expected a JSON object, found list"):
        load_labelled_file(path)


def test_user_unsupported_extension(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "data.parquet", ["x"])
    with pytest.raises(GlueDataError, match="unsupported file type .parquet"):
        load_labelled_file(path)


def test_user_missing_file(tmp_path: Path) -> None:
    with pytest.raises(GlueDataError, match="file not found"):
        load_labelled_file(tmp_path / "absent.csv")
