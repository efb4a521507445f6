"""The metrics GLUE reports per task, in NumPy.

Every metric returns a fraction: accuracy and F1 lie in [0, 1], and the correlations in
[-1, 1]. Multiply by 100 for the points of the GLUE leaderboard. Where a metric is undefined
because a denominator is zero, it returns 0.0, as scikit-learn does for the Matthews
correlation, so that every result is a finite number a threshold can be checked against.

Inputs are 1-D sequences of equal, non-zero length: predicted class indices (the argmax of the
logits) or scores, then the gold labels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from bct_onnx.glue import GlueTask, TaskKind, get_task

ArrayLike = Sequence[float] | np.ndarray


def accuracy(pred: ArrayLike, gold: ArrayLike) -> float:
    """Return the share of predictions equal to the gold label."""
    pred_array, gold_array = _validate(pred, gold)
    return float(np.mean(pred_array == gold_array))


def f1_binary(pred: ArrayLike, gold: ArrayLike, positive: int = 1) -> float:
    """Return the F1 score of class ``positive`` against all other classes.

    F1 = 2 TP / (2 TP + FP + FN), the harmonic mean of precision and recall. It is 0.0 when
    nothing is predicted positive and nothing is positive (TP = FP = FN = 0).
    """
    pred_array, gold_array = _validate(pred, gold)
    predicted = pred_array == positive
    actual = gold_array == positive

    true_positives = np.count_nonzero(predicted & actual)
    false_positives = np.count_nonzero(predicted & ~actual)
    false_negatives = np.count_nonzero(~predicted & actual)

    denominator = 2 * true_positives + false_positives + false_negatives
    return float(2 * true_positives / denominator) if denominator else 0.0


def matthews_corrcoef(pred: ArrayLike, gold: ArrayLike) -> float:
    """Return the Matthews correlation coefficient of binary labels 0 and 1.

    MCC = (TP TN - FP FN) / sqrt((TP + FP)(TP + FN)(TN + FP)(TN + FN)), from -1 (always wrong)
    through 0 (chance) to 1 (always right). It is 0.0 when the denominator is 0, that is when
    the predictions or the gold labels hold only one class, as in scikit-learn.

    Raises:
        ValueError: a label other than 0 or 1, or inputs that are empty, not 1-D or unequal in length.
    """
    pred_array, gold_array = _validate(pred, gold)
    for name, values in (("predictions", pred_array), ("gold labels", gold_array)):
        if not np.isin(values, (0, 1)).all():
            raise ValueError(f"matthews_corrcoef takes binary labels 0 and 1, but {name} contain {np.unique(values)}")

    predicted = pred_array == 1
    actual = gold_array == 1
    true_positives = int(np.count_nonzero(predicted & actual))
    true_negatives = int(np.count_nonzero(~predicted & ~actual))
    false_positives = int(np.count_nonzero(predicted & ~actual))
    false_negatives = int(np.count_nonzero(~predicted & actual))

    # Python ints, so the product of four counts cannot overflow as int64 would.
    numerator = true_positives * true_negatives - false_positives * false_negatives
    denominator = math.sqrt(
        (true_positives + false_positives)
        * (true_positives + false_negatives)
        * (true_negatives + false_positives)
        * (true_negatives + false_negatives)
    )
    return float(numerator / denominator) if denominator else 0.0


def pearson(pred: ArrayLike, gold: ArrayLike) -> float:
    """Return the Pearson correlation, or 0.0 when either input is constant.

    The correlation is undefined for constant input, where ``scipy.stats.pearsonr`` returns NaN.
    """
    pred_array, gold_array = _validate_scores(pred, gold)
    if np.ptp(pred_array) == 0 or np.ptp(gold_array) == 0:
        return 0.0

    pred_centered = pred_array - pred_array.mean()
    gold_centered = gold_array - gold_array.mean()
    covariance = np.dot(pred_centered, gold_centered)
    scale = np.sqrt(np.dot(pred_centered, pred_centered) * np.dot(gold_centered, gold_centered))
    # Rounding can put a perfect correlation slightly above 1.
    return float(np.clip(covariance / scale, -1.0, 1.0))


def spearman(pred: ArrayLike, gold: ArrayLike) -> float:
    """Return the Spearman rank correlation: the Pearson correlation of the ranks.

    Tied values share the mean of the ranks they span, as in ``scipy.stats.spearmanr``.
    It is 0.0 when either input is constant.
    """
    pred_array, gold_array = _validate_scores(pred, gold)
    return pearson(_average_ranks(pred_array), _average_ranks(gold_array))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Return the 1-based rank of each value, giving tied values the mean of their ranks."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    last_rank = np.cumsum(counts)
    first_rank = last_rank - counts + 1
    return ((first_rank + last_rank) / 2.0)[inverse.reshape(-1)]


METRICS: dict[str, Callable[[ArrayLike, ArrayLike], float]] = {
    "accuracy": accuracy,
    "f1": f1_binary,
    "mcc": matthews_corrcoef,
    "pearson": pearson,
    "spearman": spearman,
}


def task_metrics(task: str | GlueTask, predictions: ArrayLike, gold: ArrayLike) -> dict[str, float]:
    """Compute the metrics that GLUE reports for ``task``, keyed by name, as fractions.

    CoLA gets "mcc". SST-2, MNLI, QNLI, RTE and WNLI get "accuracy". MRPC and QQP get "f1",
    for class 1, and "accuracy". STS-B gets "pearson" and "spearman". For a classification
    task, predictions and gold labels must be class indices of that task.
    """
    glue_task = get_task(task)
    if glue_task.kind is TaskKind.CLASSIFICATION:
        for name, values in (("predictions", predictions), ("gold labels", gold)):
            _check_class_indices(np.asarray(values), glue_task, name)
    return {name: METRICS[name](predictions, gold) for name in glue_task.metrics}


def primary_metric(task: str | GlueTask) -> str:
    """Return the name of the metric that ranks ``task``: mcc, f1, spearman or accuracy."""
    return get_task(task).primary_metric


def _check_class_indices(values: np.ndarray, task: GlueTask, name: str) -> None:
    """Raise unless ``values`` are integers in [0, number of classes of ``task``)."""
    if values.dtype.kind in "biuf":
        in_range = (values >= 0) & (values < task.num_labels)
        if np.all(in_range & (values == np.round(values))):
            return
    raise ValueError(
        f"{name} for {task.name} must be class indices 0 to {task.num_labels - 1} "
        f"(take the argmax of the logits); found values {np.unique(values)[:10]}"
    )


def _validate(pred: ArrayLike, gold: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Return both inputs as 1-D arrays, raising unless they are non-empty and equally long."""
    pred_array = np.asarray(pred)
    gold_array = np.asarray(gold)
    if pred_array.ndim != 1 or gold_array.ndim != 1:
        raise ValueError(
            f"predictions and gold labels must be 1-D, got shapes {pred_array.shape} and {gold_array.shape}"
        )
    if len(pred_array) != len(gold_array):
        raise ValueError(
            f"predictions and gold labels differ in length: {len(pred_array)} and {len(gold_array)}"
        )
    if len(pred_array) == 0:
        raise ValueError("predictions and gold labels are empty")
    return pred_array, gold_array


def _validate_scores(pred: ArrayLike, gold: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Return both inputs as float64 arrays, also raising on NaN or infinity."""
    pred_array, gold_array = _validate(pred, gold)
    pred_array = pred_array.astype(np.float64)
    gold_array = gold_array.astype(np.float64)
    for name, values in (("predictions", pred_array), ("gold labels", gold_array)):
        if not np.isfinite(values).all():
            raise ValueError(f"{name} contain NaN or infinity")
    return pred_array, gold_array
