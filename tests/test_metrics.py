"""GLUE metrics against hand-computed values, SciPy, and their degenerate cases."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from bct_onnx.glue import TASKS
from bct_onnx.metrics import (
    METRICS,
    accuracy,
    f1_binary,
    matthews_corrcoef,
    pearson,
    primary_metric,
    spearman,
    task_metrics,
)


def test_accuracy_counts_matches() -> None:
    # Positions 0 and 2 agree: 2 of 4.
    assert accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == pytest.approx(0.5)


def test_accuracy_returns_python_float() -> None:
    assert type(accuracy(np.array([1]), np.array([1]))) is float


def test_f1_hand_computed() -> None:
    # pred [1,1,0,0,1], gold [1,0,1,0,1]: TP = 2 (0, 4), FP = 1 (1), FN = 1 (2).
    # F1 = 2*2 / (2*2 + 1 + 1) = 4/6.
    assert f1_binary([1, 1, 0, 0, 1], [1, 0, 1, 0, 1]) == pytest.approx(4 / 6)


def test_f1_other_positive_class() -> None:
    # Class 0 positive: pred==0 at 2, 3 and gold==0 at 1, 3, so TP = 1, FP = 1, FN = 1.
    # F1 = 2 / (2 + 1 + 1) = 0.5.
    assert f1_binary([1, 1, 0, 0, 1], [1, 0, 1, 0, 1], positive=0) == pytest.approx(0.5)


def test_f1_no_positive_predictions() -> None:
    # TP = 0, FP = 0, FN = 2: 0 / 2.
    assert f1_binary([0, 0, 0], [1, 0, 1]) == 0.0


def test_f1_no_positives_anywhere() -> None:
    # TP = FP = FN = 0 makes the denominator 0.
    assert f1_binary([0, 0], [0, 0]) == 0.0


def test_f1_all_correct() -> None:
    assert f1_binary([1, 0, 1], [1, 0, 1]) == 1.0


def test_mcc_hand_computed() -> None:
    # pred [1,1,0,0,1,0], gold [1,0,1,0,1,0]: TP = 2, FP = 1, FN = 1, TN = 2.
    # (2*2 - 1*1) / sqrt((2+1)(2+1)(2+1)(2+1)) = 3 / 9.
    assert matthews_corrcoef([1, 1, 0, 0, 1, 0], [1, 0, 1, 0, 1, 0]) == pytest.approx(1 / 3)


def test_mcc_one_class_never_predicted() -> None:
    # Class 0 is never predicted: TN = FN = 0, so (TN + FN) = 0 zeroes the denominator.
    assert matthews_corrcoef([1, 1, 1, 1], [1, 0, 1, 0]) == 0.0


def test_mcc_gold_holds_one_class() -> None:
    assert matthews_corrcoef([1, 0, 1], [1, 1, 1]) == 0.0


def test_mcc_all_correct() -> None:
    # TP = 2, TN = 2, FP = FN = 0: 4 / sqrt(2*2*2*2).
    assert matthews_corrcoef([1, 0, 1, 0], [1, 0, 1, 0]) == pytest.approx(1.0)


def test_mcc_perfectly_inverted() -> None:
    # TP = TN = 0, FP = FN = 2: -4 / sqrt(2*2*2*2).
    assert matthews_corrcoef([0, 1, 0, 1], [1, 0, 1, 0]) == pytest.approx(-1.0)


def test_mcc_large_counts_do_not_overflow() -> None:
    # 400,000 examples: the product of the four marginal counts, 1e20, is past int64's 9.2e18.
    gold = np.tile([1, 1, 0, 0], 100_000)
    pred = np.tile([1, 0, 0, 0], 100_000)
    # TP = 1e5, FN = 1e5, TN = 2e5, FP = 0: (2e10 - 0) / sqrt(1e5 * 2e5 * 3e5 * 2e5) = 2 / sqrt(12).
    assert matthews_corrcoef(pred, gold) == pytest.approx(2 / np.sqrt(12))


def test_mcc_rejects_non_binary_labels() -> None:
    with pytest.raises(ValueError, match="binary labels 0 and 1"):
        matthews_corrcoef([0, 2, 1], [0, 1, 1])


def test_pearson_hand_computed() -> None:
    # Means 2 and 8/3. Deviations [-1, 0, 1] and [-5/3, -2/3, 7/3].
    # Sum of products 4, sums of squares 2 and 26/3, so r = 4 / sqrt(52/3).
    assert pearson([1, 2, 3], [1, 2, 5]) == pytest.approx(4 / np.sqrt(52 / 3))


def test_pearson_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    pred = rng.normal(size=200)
    gold = pred + rng.normal(size=200)
    assert pearson(pred, gold) == pytest.approx(scipy.stats.pearsonr(pred, gold).statistic)


def test_pearson_constant_input_is_zero() -> None:
    assert pearson([0.1, 0.1, 0.1], [1.0, 2.0, 3.0]) == 0.0
    assert pearson([1.0, 2.0, 3.0], [4.0, 4.0, 4.0]) == 0.0


def test_pearson_perfect_stays_within_one() -> None:
    values = np.linspace(0.1, 0.7, 101)
    assert pearson(values, values * 3.3 + 0.2) <= 1.0
    assert pearson(values, values * 3.3 + 0.2) == pytest.approx(1.0)


def test_spearman_with_ties() -> None:
    # Ranks of pred [1,2,2,3] are [1, 2.5, 2.5, 4], of gold [1,3,2,4] are [1, 3, 2, 4]. Both mean 2.5.
    # Deviations [-1.5, 0, 0, 1.5] and [-1.5, 0.5, -0.5, 1.5]: products sum to 4.5,
    # squares to 4.5 and 5. rho = 4.5 / sqrt(22.5) = sqrt(0.9).
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(np.sqrt(0.9))


def test_spearman_matches_scipy_with_many_ties() -> None:
    rng = np.random.default_rng(1)
    gold = rng.integers(0, 6, size=300).astype(float)  # scores 0-5, as in STS-B, tie often
    pred = np.round(gold + rng.normal(scale=1.5, size=300), 1)
    assert spearman(pred, gold) == pytest.approx(scipy.stats.spearmanr(pred, gold).statistic)


def test_spearman_ignores_monotone_transform() -> None:
    values = np.array([0.3, 1.2, 0.9, 4.0, 2.5])
    assert spearman(np.exp(values), values) == pytest.approx(1.0)


@pytest.mark.parametrize("metric", list(METRICS.values()), ids=list(METRICS))
def test_mismatched_lengths_raise(metric) -> None:
    with pytest.raises(ValueError, match="differ in length: 3 and 2"):
        metric([1, 0, 1], [1, 0])


@pytest.mark.parametrize("metric", list(METRICS.values()), ids=list(METRICS))
def test_empty_inputs_raise(metric) -> None:
    with pytest.raises(ValueError, match="empty"):
        metric([], [])


def test_two_dimensional_input_raises() -> None:
    with pytest.raises(ValueError, match="must be 1-D"):
        accuracy(np.zeros((2, 3)), np.zeros(2))


def test_non_finite_scores_raise() -> None:
    with pytest.raises(ValueError, match="NaN or infinity"):
        pearson([1.0, np.nan, 2.0], [1.0, 2.0, 3.0])


def test_task_metrics_cola() -> None:
    result = task_metrics("cola", [1, 1, 0, 0, 1, 0], [1, 0, 1, 0, 1, 0])
    assert result == {"mcc": pytest.approx(1 / 3)}


def test_task_metrics_mrpc() -> None:
    result = task_metrics("MRPC", [1, 1, 0, 0, 1], [1, 0, 1, 0, 1])
    assert set(result) == {"f1", "accuracy"}
    assert result["f1"] == pytest.approx(4 / 6)
    assert result["accuracy"] == pytest.approx(3 / 5)


def test_task_metrics_stsb() -> None:
    result = task_metrics("STS-B", [1.0, 2.0, 3.0], [1.0, 2.0, 5.0])
    assert set(result) == {"pearson", "spearman"}
    assert result["pearson"] == pytest.approx(4 / np.sqrt(52 / 3))
    assert result["spearman"] == pytest.approx(1.0)


@pytest.mark.parametrize("task", ["sst2", "qnli", "rte", "wnli", "mnli"])
def test_task_metrics_accuracy_tasks(task: str) -> None:
    assert task_metrics(task, [1, 0, 1, 1], [1, 1, 1, 0]) == {"accuracy": pytest.approx(0.5)}


def test_task_metrics_qqp() -> None:
    assert set(task_metrics("qqp", [1, 0], [1, 1])) == {"accuracy", "f1"}


def test_task_metrics_mnli_three_classes() -> None:
    assert task_metrics("mnli", [0, 1, 2, 2], [0, 1, 2, 1]) == {"accuracy": pytest.approx(0.75)}


def test_task_metrics_rejects_non_class_predictions() -> None:
    with pytest.raises(ValueError, match="class indices 0 to 1"):
        task_metrics("sst2", [0.2, 0.9], [0, 1])
    with pytest.raises(ValueError, match="class indices 0 to 1"):
        task_metrics("rte", [0, 2], [0, 1])
    with pytest.raises(ValueError, match="class indices 0 to 2"):
        task_metrics("mnli", [0, 1], [0, -1])


def test_task_metrics_rejects_logits() -> None:
    with pytest.raises(ValueError, match="1-D"):
        task_metrics("sst2", np.zeros((2, 2)), [0, 1])


@pytest.mark.parametrize(
    ("task", "expected"),
    [("cola", "mcc"), ("mrpc", "f1"), ("stsb", "spearman"), ("STS-B", "spearman"), ("sst2", "accuracy"),
     ("qqp", "accuracy"), ("mnli", "accuracy"), ("qnli", "accuracy"), ("rte", "accuracy"), ("wnli", "accuracy")],
)
def test_primary_metric(task: str, expected: str) -> None:
    assert primary_metric(task) == expected


@pytest.mark.parametrize("name", list(TASKS))
def test_every_task_metric_is_implemented(name: str) -> None:
    assert set(TASKS[name].metrics) <= set(METRICS)
