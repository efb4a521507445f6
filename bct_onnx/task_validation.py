"""Task validation: the metric of a float and a compressed classifier on labelled examples.

Both models run in ONNX Runtime on the same tokenized examples (a GLUE split or the user's own
labelled file); the report gives each model's task metrics, the drop of the primary metric in
points, and how often the two models predict the same label.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

import numpy as np

from bct_onnx.errors import BctError, first_line
from bct_onnx.glue import Example, GlueTask, TaskKind, get_task
from bct_onnx.metrics import accuracy, f1_binary, matthews_corrcoef, pearson, spearman, task_metrics
from bct_onnx.modelio import export_source
from bct_onnx.text import encode_examples, load_tokenizer
from bct_onnx.validate import create_session

BATCH_SIZE = 32


@dataclass(frozen=True, kw_only=True)
class TaskValidationReport:
    """Task metrics of both models, in fractions; ``drop`` is in points (×100)."""

    task: str
    metric: str
    examples: int
    reference: dict[str, float]
    candidate: dict[str, float]
    drop: float
    agreement: float  # share of examples with the same predicted label (or |Δ| < 0.1 for regression)
    max_drop: float | None

    @property
    def passed(self) -> bool:
        return self.max_drop is None or self.drop <= self.max_drop

    def to_json(self) -> str:
        data = asdict(self)
        data["passed"] = self.passed
        return json.dumps(data, indent=2)

    def format_table(self) -> str:
        lines = [f"task {self.task}, {self.examples} examples", f"{'metric':<10} {'float':>8} {'compressed':>11}"]
        for name in self.reference:
            lines.append(f"{name:<10} {100 * self.reference[name]:>8.2f} {100 * self.candidate[name]:>11.2f}")
        lines.append(f"drop of {self.metric}: {self.drop:.2f} points; prediction agreement {self.agreement:.1%}")
        if self.max_drop is not None:
            lines.append(f"maximum drop {self.max_drop}: {'passed' if self.passed else 'FAILED'}")
        return "\n".join(lines)


def validate_task(
    reference_path: str | os.PathLike,
    candidate_path: str | os.PathLike,
    examples: list[Example],
    *,
    task: str | GlueTask | None = None,
    kind: TaskKind | None = None,
    tokenizer: str | os.PathLike | None = None,
    max_length: int = 128,
    max_drop: float | None = None,
) -> TaskValidationReport:
    """Score both models on ``examples`` and compare the task metric.

    ``task`` names a GLUE task (its metrics); without it, classification is scored by accuracy
    and regression by Spearman, with ``kind`` saying which (default: classification).
    """
    if not examples:
        raise BctError("no labelled examples to validate on")
    glue_task = get_task(task) if task is not None else None
    kind = glue_task.kind if glue_task is not None else (kind or TaskKind.CLASSIFICATION)
    feeds = tokenize_examples(examples, tokenizer or export_source(reference_path), max_length)
    expected = predict(reference_path, feeds, kind)
    actual = predict(candidate_path, feeds, kind)
    gold = np.array([example.label for example in examples])
    reference, candidate = _metrics(glue_task, kind, expected, gold), _metrics(glue_task, kind, actual, gold)
    metric = glue_task.primary_metric if glue_task is not None else next(iter(reference))
    same = np.abs(expected - actual) < 0.1 if kind is TaskKind.REGRESSION else expected == actual
    return TaskValidationReport(
        task=glue_task.name if glue_task is not None else "custom",
        metric=metric,
        examples=len(examples),
        reference=reference,
        candidate=candidate,
        drop=100 * (reference[metric] - candidate[metric]),
        agreement=float(np.mean(same)),
        max_drop=max_drop,
    )


def _metrics(task: GlueTask | None, kind: TaskKind, predictions: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    if task is not None:
        return task_metrics(task, predictions, gold)
    if kind is TaskKind.REGRESSION:
        return {"spearman": spearman(predictions, gold), "pearson": pearson(predictions, gold)}
    metrics = {"accuracy": accuracy(predictions, gold)}
    if set(np.unique(gold)) <= {0, 1}:
        metrics.update(f1=f1_binary(predictions, gold), mcc=matthews_corrcoef(predictions, gold))
    return metrics


def tokenize_examples(
    examples: list[Example], tokenizer: str | os.PathLike | None, max_length: int
) -> list[dict[str, np.ndarray]]:
    """Return batches of int64 feeds for ``examples``, each padded to its longest example."""
    loaded = load_tokenizer(tokenizer)
    batches = []
    for start in range(0, len(examples), BATCH_SIZE):
        encoded = encode_examples(loaded, examples[start : start + BATCH_SIZE], max_length=max_length)
        batches.append({name: np.asarray(values, np.int64) for name, values in encoded.items()})
    return batches


def predict(model_path: str | os.PathLike, batches: list[dict[str, np.ndarray]], kind: TaskKind) -> np.ndarray:
    """Return the predicted class (argmax of the first output) or regression value per example."""
    session = create_session(model_path)
    names = [value.name for value in session.get_inputs()]
    predictions = []
    for feeds in batches:
        missing = [name for name in names if name not in feeds]
        if missing:
            raise BctError(f"the tokenizer gives no values for model inputs {missing}")
        try:
            logits = session.run(None, {name: feeds[name] for name in names})[0]
        except Exception as error:  # noqa: BLE001 (ONNX Runtime's errors share no base class)
            raise BctError(f"ONNX Runtime failed to run {model_path}: {first_line(error)}") from error
        if logits.ndim != 2:
            raise BctError(f"{model_path} gives outputs of shape {logits.shape}; expected [batch, labels] logits")
        predictions.append(logits[:, 0] if kind is TaskKind.REGRESSION else logits.argmax(axis=-1))
    return np.concatenate(predictions)
