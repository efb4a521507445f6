"""GLUE tasks and readers for GLUE splits and for a user's own labelled files.

The GLUE data folder contains one subfolder per task (``SST-2/dev.tsv``, ``MRPC/train.tsv``, ...)
in the original GLUE tsv format, as the classic ``download_glue_data.py`` script writes it.
``load_glue_split`` finds that folder from its ``glue_dir`` argument, else from the
``BCT_GLUE_DIR`` environment variable. When neither is set, it loads the task with the
``datasets`` library if that is installed.

Class labels become indices in the order of the Hugging Face ``glue`` dataset configs, so that
models fine-tuned on those configs predict the same index:

=========  ==============================================  =================================
task       label in the tsv file -> index                  label name of the index
=========  ==============================================  =================================
cola       0, 1                                            unacceptable, acceptable
sst2       0, 1                                            negative, positive
mrpc       0, 1                                            not_equivalent, equivalent
qqp        0, 1                                            not_duplicate, duplicate
mnli       entailment, neutral, contradiction -> 0, 1, 2   (the tsv values)
qnli, rte  entailment, not_entailment -> 0, 1              (the tsv values)
wnli       0, 1                                            not_entailment, entailment
stsb       score, a float in [0, 5] (regression)
=========  ==============================================  =================================

Texts are kept exactly as the files store them. For example, every SST-2 sentence ends in a
space, as in the Hugging Face copy.
"""

from __future__ import annotations

import csv
import enum
import importlib
import itertools
import json
import logging
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TextIO

from bct_onnx.errors import BctError

logger = logging.getLogger(__name__)

GLUE_DIR_ENV = "BCT_GLUE_DIR"

# The Hugging Face hub id of GLUE. The older id "glue" redirects to it.
HF_GLUE_ID = "nyu-mll/glue"

# Split names here are the tsv file names, but the datasets library calls dev "validation".
HF_SPLITS = {
    "train": "train",
    "dev": "validation",
    "dev_matched": "validation_matched",
    "dev_mismatched": "validation_mismatched",
}


class GlueDataError(BctError):
    """GLUE or user data is missing, unreadable or not in the expected layout."""


class TaskKind(enum.Enum):
    """Whether labels are class indices or real-valued scores."""

    CLASSIFICATION = "classification"
    REGRESSION = "regression"


@dataclass(frozen=True, kw_only=True)
class GlueTask:
    """One GLUE task: where its files are, their column layout, labels and metrics."""

    name: str  # canonical lower-case name, as in the Hugging Face configs: "sst2"
    folder: str  # subfolder of the GLUE data folder: "SST-2"
    text_columns: tuple[str, ...]  # one or two column names: the sentence, or the pair
    label_column: str
    kind: TaskKind
    label_values: tuple[str, ...] = ()  # label text in the files, whose position is the class index
    label_names: tuple[str, ...] = ()  # readable name of each class index
    metrics: tuple[str, ...]  # keys of ``bct_onnx.metrics.METRICS``, as GLUE reports them
    primary_metric: str
    splits: tuple[str, ...] = ("train", "dev")
    headerless_columns: tuple[str, ...] = ()  # column names of files without a header row
    hf_config: str  # config name in the Hugging Face GLUE dataset
    hf_text_fields: tuple[str, ...]  # fields of that config matching ``text_columns``

    def __post_init__(self) -> None:
        if len(self.text_columns) not in (1, 2) or len(self.hf_text_fields) != len(self.text_columns):
            raise ValueError(f"{self.name}: a task has one or two text columns, each with a datasets field")
        if (self.kind is TaskKind.CLASSIFICATION) != bool(self.label_values):
            raise ValueError(f"{self.name}: label values are required for classification and invalid for regression")
        if self.label_names and len(self.label_names) != len(self.label_values):
            raise ValueError(f"{self.name}: label names and label values differ in number")
        if self.primary_metric not in self.metrics:
            raise ValueError(f"{self.name}: the primary metric must be one of the task's metrics")

    @property
    def has_header(self) -> bool:
        return not self.headerless_columns

    @property
    def num_labels(self) -> int:
        """Number of classes, or 1 for a regression task."""
        return len(self.label_values) if self.kind is TaskKind.CLASSIFICATION else 1


@dataclass(frozen=True)
class Example:
    """One labelled text or text pair."""

    text_a: str
    text_b: str | None
    label: int | float  # class index, or the score of a regression task


@dataclass(frozen=True, kw_only=True)
class LabelledExamples:
    """Examples read from a user's file, with the meaning of their labels."""

    examples: tuple[Example, ...]
    kind: TaskKind
    label_names: tuple[str, ...]  # label text of each class index, empty for regression


# NOTE: the QQP and MNLI layouts follow the headers of the original GLUE files, but the tests
# check them only on hand-written rows, not on the released files.
_BINARY = ("0", "1")
_NLI_TWO_WAY = ("entailment", "not_entailment")

TASKS: dict[str, GlueTask] = {
    task.name: task
    for task in (
        GlueTask(
            name="cola", folder="CoLA", text_columns=("sentence",), label_column="label",
            kind=TaskKind.CLASSIFICATION, label_values=_BINARY, label_names=("unacceptable", "acceptable"),
            metrics=("mcc",), primary_metric="mcc",
            headerless_columns=("source", "label", "original_judgment", "sentence"),
            hf_config="cola", hf_text_fields=("sentence",),
        ),
        GlueTask(
            name="sst2", folder="SST-2", text_columns=("sentence",), label_column="label",
            kind=TaskKind.CLASSIFICATION, label_values=_BINARY, label_names=("negative", "positive"),
            metrics=("accuracy",), primary_metric="accuracy",
            hf_config="sst2", hf_text_fields=("sentence",),
        ),
        GlueTask(
            name="mrpc", folder="MRPC", text_columns=("#1 String", "#2 String"), label_column="Quality",
            kind=TaskKind.CLASSIFICATION, label_values=_BINARY, label_names=("not_equivalent", "equivalent"),
            metrics=("f1", "accuracy"), primary_metric="f1",
            hf_config="mrpc", hf_text_fields=("sentence1", "sentence2"),
        ),
        GlueTask(
            name="stsb", folder="STS-B", text_columns=("sentence1", "sentence2"), label_column="score",
            kind=TaskKind.REGRESSION,
            metrics=("pearson", "spearman"), primary_metric="spearman",
            hf_config="stsb", hf_text_fields=("sentence1", "sentence2"),
        ),
        GlueTask(
            name="qqp", folder="QQP", text_columns=("question1", "question2"), label_column="is_duplicate",
            kind=TaskKind.CLASSIFICATION, label_values=_BINARY, label_names=("not_duplicate", "duplicate"),
            metrics=("accuracy", "f1"), primary_metric="accuracy",
            hf_config="qqp", hf_text_fields=("question1", "question2"),
        ),
        GlueTask(
            name="mnli", folder="MNLI", text_columns=("sentence1", "sentence2"), label_column="gold_label",
            kind=TaskKind.CLASSIFICATION,
            label_values=("entailment", "neutral", "contradiction"),
            label_names=("entailment", "neutral", "contradiction"),
            metrics=("accuracy",), primary_metric="accuracy",
            splits=("train", "dev_matched", "dev_mismatched"),
            hf_config="mnli", hf_text_fields=("premise", "hypothesis"),
        ),
        GlueTask(
            name="qnli", folder="QNLI", text_columns=("question", "sentence"), label_column="label",
            kind=TaskKind.CLASSIFICATION, label_values=_NLI_TWO_WAY, label_names=_NLI_TWO_WAY,
            metrics=("accuracy",), primary_metric="accuracy",
            hf_config="qnli", hf_text_fields=("question", "sentence"),
        ),
        GlueTask(
            name="rte", folder="RTE", text_columns=("sentence1", "sentence2"), label_column="label",
            kind=TaskKind.CLASSIFICATION, label_values=_NLI_TWO_WAY, label_names=_NLI_TWO_WAY,
            metrics=("accuracy",), primary_metric="accuracy",
            hf_config="rte", hf_text_fields=("sentence1", "sentence2"),
        ),
        GlueTask(
            name="wnli", folder="WNLI", text_columns=("sentence1", "sentence2"), label_column="label",
            kind=TaskKind.CLASSIFICATION, label_values=_BINARY, label_names=("not_entailment", "entailment"),
            metrics=("accuracy",), primary_metric="accuracy",
            hf_config="wnli", hf_text_fields=("sentence1", "sentence2"),
        ),
    )
}


def get_task(task: str | GlueTask) -> GlueTask:
    """Look up a task by name, ignoring case, hyphens and underscores ("SST-2", "sts_b", "CoLA")."""
    if isinstance(task, GlueTask):
        return task
    key = task.strip().lower().replace("-", "").replace("_", "")
    if key not in TASKS:
        raise GlueDataError(f"unknown GLUE task {task!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[key]


def resolve_glue_dir(glue_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """Return the GLUE data folder from ``glue_dir``, else from BCT_GLUE_DIR, else None."""
    if glue_dir is not None:
        return Path(glue_dir)
    from_env = os.environ.get(GLUE_DIR_ENV, "").strip()
    return Path(from_env) if from_env else None


def load_glue_split(
    task: str | GlueTask,
    split: str = "dev",
    *,
    glue_dir: str | os.PathLike[str] | None = None,
    limit: int | None = None,
) -> list[Example]:
    """Read the labelled examples of one GLUE split, in file order.

    Reads ``<glue_dir>/<task folder>/<split>.tsv``, with ``glue_dir`` taken from BCT_GLUE_DIR
    when not given. A folder that was given is the only place looked at, even when the file is
    missing there. Only when no folder is given does this load the split with the ``datasets``
    library, and only if that library is installed. ``limit`` keeps the first ``limit`` examples.

    Raises:
        GlueDataError: unknown task or split, no data found, or a malformed file. The message
            names the file, and the line for a malformed row.
        ValueError: ``limit`` is less than 1.
    """
    glue_task = get_task(task)
    if split not in glue_task.splits:
        splits = ", ".join(glue_task.splits)
        raise GlueDataError(f"GLUE task {glue_task.name} has no split {split!r}; splits: {splits}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")

    folder = resolve_glue_dir(glue_dir)
    if folder is not None:
        return read_glue_tsv(glue_task, _glue_file(folder, glue_task, split), limit=limit)

    datasets = _import_datasets()
    if datasets is None:
        raise GlueDataError(
            f"no GLUE data folder given for {glue_task.folder} {split} and the datasets library is not "
            f"installed: set {GLUE_DIR_ENV} or pass --glue-dir to a folder with {glue_task.folder}/{split}.tsv"
        )
    return _load_from_datasets(datasets, glue_task, split, limit=limit)


def _glue_file(folder: Path, task: GlueTask, split: str) -> Path:
    """Return the path of one split's tsv file, or raise if it or its folder is missing."""
    if not folder.is_dir():
        raise GlueDataError(
            f"GLUE data folder not found: {folder}; set {GLUE_DIR_ENV} or pass --glue-dir to a folder "
            f"with {task.folder}/{split}.tsv"
        )
    path = folder / task.folder / f"{split}.tsv"
    if not path.is_file():
        raise GlueDataError(
            f"GLUE file not found: {path}; set {GLUE_DIR_ENV} or pass --glue-dir to a folder "
            f"with {task.folder}/{split}.tsv"
        )
    return path


def read_glue_tsv(task: str | GlueTask, path: str | os.PathLike[str], *, limit: int | None = None) -> list[Example]:
    """Read a tsv file in the original GLUE layout of ``task``.

    Quoting is off because GLUE sentences contain unbalanced quote characters. A UTF-8 byte
    order mark, which the MRPC files start with, is dropped. Blank lines are skipped.
    """
    glue_task = get_task(task)
    tsv_path = Path(path)
    examples: list[Example] = []
    with _open_text(tsv_path) as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = _read_header(reader, tsv_path) if glue_task.has_header else list(glue_task.headerless_columns)
        columns = glue_task.text_columns + (glue_task.label_column,)
        indices = _column_indices(header, columns, tsv_path)

        for row in _data_rows(reader, len(header), tsv_path):
            texts = [row[index] for index in indices[:-1]]
            label = _parse_glue_label(glue_task, row[indices[-1]], tsv_path, reader.line_num)
            examples.append(Example(texts[0], texts[1] if len(texts) == 2 else None, label))
            if len(examples) == limit:
                break

    if not examples:
        raise GlueDataError(f"{tsv_path} has no examples")
    return examples


def _open_text(path: Path) -> TextIO:
    """Open a UTF-8 text file for the csv module, dropping a byte order mark."""
    try:
        return path.open(encoding="utf-8-sig", newline="")
    except FileNotFoundError as error:
        raise GlueDataError(f"file not found: {path}") from error
    except OSError as error:
        raise GlueDataError(f"cannot read {path}: {error.strerror}") from error


def _read_header(reader: Iterator[list[str]], path: Path) -> list[str]:
    """Return the first row of ``reader``, or raise if the file is empty."""
    try:
        header = next(reader, None)
    except UnicodeDecodeError as error:
        raise GlueDataError(f"{path} is not valid UTF-8: {error.reason} at byte {error.start}") from error
    if not header:
        raise GlueDataError(f"{path} is empty; expected a header row")
    return header


def _data_rows(reader: Iterator[list[str]], width: int, path: Path) -> Iterator[list[str]]:
    """Yield the non-blank rows of ``reader``, raising on a row that is not ``width`` fields wide."""
    try:
        for row in reader:
            if not row:
                continue
            if len(row) != width:
                line = reader.line_num  # type: ignore[attr-defined]
                raise GlueDataError(f"{path}, line {line}: expected {width} fields, found {len(row)}")
            yield row
    except UnicodeDecodeError as error:
        raise GlueDataError(f"{path} is not valid UTF-8: {error.reason} at byte {error.start}") from error
    except csv.Error as error:
        line = reader.line_num  # type: ignore[attr-defined]
        raise GlueDataError(f"{path}, line {line}: {error}") from error


def _column_indices(header: list[str], columns: tuple[str, ...], path: Path) -> list[int]:
    """Return the position of each of ``columns`` in ``header``, or raise naming the missing ones."""
    missing = [column for column in columns if column not in header]
    if missing:
        raise GlueDataError(
            f"{path}: missing column(s) {', '.join(missing)}; columns found: {', '.join(header)}"
        )
    return [header.index(column) for column in columns]


def _parse_glue_label(task: GlueTask, value: str, path: Path, line: int) -> int | float:
    """Return the class index or score that a label cell of ``task`` stands for."""
    if task.kind is TaskKind.REGRESSION:
        score = _parse_finite_float(value)
        if score is None:
            raise GlueDataError(f"{path}, line {line}: invalid score {value!r}, expected a number")
        return score
    if value not in task.label_values:
        raise GlueDataError(
            f"{path}, line {line}: invalid label {value!r} for {task.name}; "
            f"expected one of {', '.join(task.label_values)}"
        )
    return task.label_values.index(value)


def _parse_finite_float(value: object) -> float | None:
    """Return ``value`` as a finite float, or None if it is not a finite number."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _import_datasets() -> ModuleType | None:
    """Return the ``datasets`` module, or None when it is not installed."""
    try:
        return importlib.import_module("datasets")
    except ImportError:
        return None


def _load_from_datasets(datasets: ModuleType, task: GlueTask, split: str, *, limit: int | None) -> list[Example]:
    """Load one GLUE split with the ``datasets`` library, which may download it from the hub.

    NOTE: the tests run this with a stand-in for ``load_dataset``, never the real library.
    """
    logger.info("loading GLUE %s %s with the datasets library because no GLUE data folder is set",
                task.hf_config, HF_SPLITS[split])
    try:
        dataset = datasets.load_dataset(HF_GLUE_ID, task.hf_config, split=HF_SPLITS[split])
    # The datasets library raises many unrelated types (connection, missing files, bad config).
    except Exception as error:  # noqa: BLE001
        raise GlueDataError(
            f"the datasets library failed to load {HF_GLUE_ID} {task.hf_config} {HF_SPLITS[split]}: {error}; "
            f"set {GLUE_DIR_ENV} or pass --glue-dir to a folder with {task.folder}/{split}.tsv"
        ) from error

    records = dataset if limit is None else itertools.islice(dataset, limit)
    return [_example_from_record(task, record) for record in records]


def _example_from_record(task: GlueTask, record: Mapping[str, object]) -> Example:
    """Convert one row of the Hugging Face GLUE dataset, whose labels already use our order."""
    texts = [str(record[field]) for field in task.hf_text_fields]
    label = record["label"]
    if task.kind is TaskKind.REGRESSION:
        value: int | float = float(label)  # type: ignore[arg-type]
    else:
        value = int(label)  # type: ignore[call-overload]
        if not 0 <= value < task.num_labels:
            raise GlueDataError(f"{HF_GLUE_ID} {task.hf_config}: label {value} is not a class index of {task.name}")
    return Example(texts[0], texts[1] if len(texts) == 2 else None, value)


# Column names tried, in order, when the caller does not name the text columns.
DEFAULT_TEXT_COLUMNS = ("text", "sentence", "sentence1")
DEFAULT_PAIR_COLUMNS = ("text_b", "sentence2")


@dataclass(frozen=True)
class _Record:
    """One data row of a user's file, before its label is converted."""

    line: int
    texts: tuple[str, ...]
    label: object


def load_labelled_file(
    path: str | os.PathLike[str],
    *,
    text_columns: tuple[str, ...] | None = None,
    label_column: str = "label",
    task_kind: TaskKind | None = None,
) -> LabelledExamples:
    """Read a user's labelled file: TSV, CSV or JSON Lines, chosen by the extension.

    TSV and CSV files need a header row. TSV is read with quoting off, as GLUE files are, so
    write CSV if fields are quoted. Each JSON Lines row is one JSON object. Without
    ``text_columns``, the text is the first of "text", "sentence" or "sentence1" present, and
    the optional second text is "text_b" or "sentence2".

    Labels become class indices or scores. Labels that are all non-negative integers are used
    as class indices directly. Other integer labels are numbered in numeric order, and text
    labels in sorted string order. Numbers with a fraction mean regression. ``task_kind``
    overrides that guess.

    Raises:
        GlueDataError: unsupported extension, missing column (the message lists the columns
            found), malformed row, or a label that ``task_kind`` cannot take.
    """
    file_path = Path(path)
    columns, rows = _read_table(file_path)
    if not rows:
        raise GlueDataError(f"{file_path} has no examples")

    chosen = _choose_text_columns(columns, text_columns, file_path)
    if label_column not in columns:
        found = ", ".join(columns)
        raise GlueDataError(f"{file_path}: missing label column {label_column!r}; columns found: {found}")
    records = [_make_record(line, row, chosen, label_column, file_path) for line, row in rows]

    labels, kind, label_names = _convert_labels(records, task_kind, file_path)
    examples = tuple(
        Example(record.texts[0], record.texts[1] if len(record.texts) == 2 else None, label)
        for record, label in zip(records, labels)
    )
    return LabelledExamples(examples=examples, kind=kind, label_names=label_names)


def _read_table(path: Path) -> tuple[list[str], list[tuple[int, dict[str, object]]]]:
    """Return the column names of a user's file and each data row with its line number."""
    suffix = path.suffix.lower()
    if suffix == ".tsv":
        return _read_delimited(path, delimiter="\t", quoting=csv.QUOTE_NONE)
    if suffix == ".csv":
        return _read_delimited(path, delimiter=",", quoting=csv.QUOTE_MINIMAL)
    if suffix == ".jsonl":
        return _read_jsonl(path)
    raise GlueDataError(f"unsupported file type {path.suffix or '(none)'} for {path}; use .tsv, .csv or .jsonl")


def _read_delimited(
    path: Path, *, delimiter: str, quoting: int
) -> tuple[list[str], list[tuple[int, dict[str, object]]]]:
    """Read a TSV or CSV file with a header row."""
    with _open_text(path) as handle:
        reader = csv.reader(handle, delimiter=delimiter, quoting=quoting)
        header = _read_header(reader, path)
        rows: list[tuple[int, dict[str, object]]] = [
            (reader.line_num, dict(zip(header, row))) for row in _data_rows(reader, len(header), path)
        ]
    return header, rows


def _read_jsonl(path: Path) -> tuple[list[str], list[tuple[int, dict[str, object]]]]:
    """Read a JSON Lines file; its columns are the keys of the first object."""
    rows: list[tuple[int, dict[str, object]]] = []
    with _open_text(path) as handle:
        try:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                rows.append((number, _parse_json_object(line, path, number)))
        except UnicodeDecodeError as error:
            raise GlueDataError(f"{path} is not valid UTF-8: {error.reason} at byte {error.start}") from error
    columns = list(rows[0][1]) if rows else []
    return columns, rows


def _parse_json_object(line: str, path: Path, number: int) -> dict[str, object]:
    """Parse one JSON Lines row, which must be an object."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise GlueDataError(f"{path}, line {number}: invalid JSON: {error.msg}") from error
    if not isinstance(record, dict):
        raise GlueDataError(f"{path}, line {number}: expected a JSON object, found {type(record).__name__}")
    return record


def _choose_text_columns(columns: list[str], text_columns: tuple[str, ...] | None, path: Path) -> tuple[str, ...]:
    """Return the one or two text columns to read: those requested, else the default names."""
    found = ", ".join(columns)
    if text_columns is not None:
        if isinstance(text_columns, str) or len(text_columns) not in (1, 2):
            raise ValueError(f"text_columns must be a tuple of one or two column names, got {text_columns!r}")
        missing = [column for column in text_columns if column not in columns]
        if missing:
            raise GlueDataError(f"{path}: missing text column(s) {', '.join(missing)}; columns found: {found}")
        return tuple(text_columns)

    first = next((column for column in DEFAULT_TEXT_COLUMNS if column in columns), None)
    if first is None:
        raise GlueDataError(
            f"{path}: no text column; expected one of {', '.join(DEFAULT_TEXT_COLUMNS)}, columns found: {found}"
        )
    second = next((column for column in DEFAULT_PAIR_COLUMNS if column in columns), None)
    return (first,) if second is None else (first, second)


def _make_record(
    line: int, row: dict[str, object], text_columns: tuple[str, ...], label_column: str, path: Path
) -> _Record:
    """Pick the texts and the raw label out of one row, checking that they are present."""
    for column in text_columns + (label_column,):
        if row.get(column) is None:
            raise GlueDataError(f"{path}, line {line}: missing value for column {column!r}")
    texts = tuple(row[column] for column in text_columns)
    if not all(isinstance(text, str) for text in texts):
        raise GlueDataError(f"{path}, line {line}: text columns must contain strings")
    label = row[label_column]
    return _Record(line, texts, label.strip() if isinstance(label, str) else label)  # type: ignore[arg-type]


def _convert_labels(
    records: list[_Record], kind: TaskKind | None, path: Path
) -> tuple[list[int | float], TaskKind, tuple[str, ...]]:
    """Return each record's class index or score, the task kind, and the class names."""
    integers = [_parse_int(record.label) for record in records]
    all_integers = all(value is not None for value in integers)
    if kind is None:
        all_numbers = all(_parse_finite_float(record.label) is not None for record in records)
        kind = TaskKind.REGRESSION if all_numbers and not all_integers else TaskKind.CLASSIFICATION

    if kind is TaskKind.REGRESSION:
        scores: list[int | float] = []
        for record in records:
            score = _parse_finite_float(record.label)
            if score is None:
                raise GlueDataError(f"{path}, line {record.line}: invalid score {record.label!r}, expected a number")
            scores.append(score)
        return scores, kind, ()

    if all_integers:
        indices, names = _index_integer_labels([value for value in integers if value is not None])
    else:
        indices, names = _index_text_labels([str(record.label) for record in records])
    return list(indices), kind, names


def _parse_int(value: object) -> int | None:
    """Return ``value`` as an int if it is one or is written as one ("2", not "2.0"), else None."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    return None


def _index_integer_labels(values: list[int]) -> tuple[list[int], tuple[str, ...]]:
    """Keep non-negative integers as class indices, else number the values in numeric order."""
    if min(values) >= 0:
        return values, tuple(str(index) for index in range(max(values) + 1))
    ordered = sorted(set(values))
    position = {value: index for index, value in enumerate(ordered)}
    return [position[value] for value in values], tuple(str(value) for value in ordered)


def _index_text_labels(values: list[str]) -> tuple[list[int], tuple[str, ...]]:
    """Number text labels in sorted string order."""
    ordered = sorted(set(values))
    position = {value: index for index, value in enumerate(ordered)}
    return [position[value] for value in values], tuple(ordered)

