"""Calibration: run the float model on sample inputs and choose activation block scales.

Statistics are streamed batch by batch, so memory does not grow with the number of samples:
a first pass keeps the running maximum of |x| per channel, a second pass (only for the
percentile and MSE methods) fills a fixed-size histogram of |x| per block.

Block scales along the channel axis are powers of two apart: every block's scale is the
tensor's base scale times 2^-shift with an integer shift in [0, MAX_SHIFT]. Integer operators
can then bring all blocks to one scale exactly, with shifts, when they sum across channels.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx

from bct_onnx.errors import BctError, first_line
from bct_onnx.validate import ORT_ERRORS, session_with_outputs

logger = logging.getLogger(__name__)

# Largest power-of-two step between the coarsest and the finest block scale of one tensor. The
# integer LayerNorm aligns blocks by up to this shift, which bounds its int64 intermediates.
MAX_SHIFT = 7

HISTOGRAM_BINS = 2048

# Softmax inputs below (row maximum - this) are left out of the statistics: exp(-100) is below
# float32's smallest normal number, so such values (additive attention masks of -10000, the
# dtype minimum or -inf) never change the Softmax output and must not stretch its range.
SOFTMAX_IGNORED_BELOW_MAX = 100.0


class CalibrationMethod(enum.Enum):
    """Method that chooses a block's clipping range from its statistics."""

    MINMAX = "minmax"  # the largest |x| seen
    PERCENTILE = "percentile"  # the 99.99th percentile of |x|
    MSE = "mse"  # the range with the least expected squared quantization error


class TargetKind(enum.Enum):
    """The layout of the scales of one calibrated value."""

    CHANNELS = "channels"  # blocks of channels along the last axis
    TENSOR = "tensor"  # one scale for the whole tensor
    SOFTMAX_INPUT = "softmax_input"  # one scale; masked entries do not count


@dataclass(frozen=True)
class CalibrationTarget:
    """A value of the float graph whose range calibration measures."""

    name: str
    kind: TargetKind


@dataclass(frozen=True, kw_only=True)
class ActivationScales:
    """Per-channel scales of one value: ``base_scale * 2**-shift[c]`` (one entry when per tensor)."""

    base_scale: float
    shift: np.ndarray  # int64, shape [channels] or [1]

    @property
    def scale(self) -> np.ndarray:
        """Return the float32 scale of every channel."""
        return (self.base_scale * np.exp2(-self.shift.astype(np.float64))).astype(np.float32)


@dataclass
class _Statistics:
    """Streaming statistics of one target: per-channel max |x|, then per-block histograms."""

    kind: TargetKind
    channel_max: np.ndarray | None = None
    histogram: np.ndarray | None = None  # [blocks, HISTOGRAM_BINS] counts of |x|
    block_max: np.ndarray | None = None  # the histogram range of each block
    samples: int = 0


@dataclass
class Calibrator:
    """Collects activation statistics for ``targets`` from batches of input feeds."""

    targets: Sequence[CalibrationTarget]
    block_size: int
    method: CalibrationMethod = CalibrationMethod.MSE
    bits: int = 8
    percentile: float = 99.99
    _statistics: dict[str, _Statistics] = field(default_factory=dict)

    def collect(
        self,
        model: onnx.ModelProto,
        batches: Sequence[dict[str, np.ndarray]],
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> dict[str, ActivationScales]:
        """Run ``model`` on every batch (twice for histogram methods) and return the scales."""
        session = session_with_outputs(model, [target.name for target in self.targets])
        names = [target.name for target in self.targets]
        self._statistics = {target.name: _Statistics(target.kind) for target in self.targets}
        passes = 1 if self.method is CalibrationMethod.MINMAX else 2
        total, done = passes * len(batches), 0
        for pass_index in range(passes):
            for feeds in batches:
                values = run_calibration_batch(session, names, feeds)
                for name, value in zip(names, values):
                    self._update(self._statistics[name], value, histogram_pass=pass_index == 1)
                done += 1
                if progress is not None:
                    progress(done, total)
        return {name: self._choose(statistics) for name, statistics in self._statistics.items()}

    def _update(self, statistics: _Statistics, value: np.ndarray, *, histogram_pass: bool) -> None:
        rows = _rows(value, statistics.kind)
        if not histogram_pass:
            current = np.max(rows, axis=0, initial=0.0)
            statistics.channel_max = current if statistics.channel_max is None else np.maximum(
                statistics.channel_max, current
            )
            statistics.samples += rows.shape[0]
            return
        if statistics.histogram is None:
            statistics.block_max = _block_max(statistics.channel_max, self._block(statistics))
            statistics.histogram = np.zeros((statistics.block_max.size, HISTOGRAM_BINS), np.int64)
        _add_to_histogram(statistics, rows, self._block(statistics))

    def _block(self, statistics: _Statistics) -> int:
        channels = statistics.channel_max.size
        return self.block_size if statistics.kind is TargetKind.CHANNELS and channels % self.block_size == 0 else channels

    def _choose(self, statistics: _Statistics) -> ActivationScales:
        q_max = (1 << (self.bits - 1)) - 1
        block = self._block(statistics)
        if self.method is CalibrationMethod.MINMAX:
            ranges = _block_max(statistics.channel_max, block)
        elif self.method is CalibrationMethod.PERCENTILE:
            ranges = _percentile_ranges(statistics.histogram, statistics.block_max, self.percentile)
        else:
            ranges = _mse_ranges(statistics.histogram, statistics.block_max, q_max)
        return power_of_two_scales(ranges / q_max, block)


def power_of_two_scales(block_scales: np.ndarray, block: int) -> ActivationScales:
    """Round block scales up to the largest one times 2^-shift, shift in [0, MAX_SHIFT].

    Rounding up (a smaller shift) never clips a value that the unrounded scale kept.
    """
    block_scales = np.where(block_scales > 0, block_scales, np.nan)
    base = float(np.nanmax(block_scales)) if np.any(np.isfinite(block_scales)) else 1.0
    base = base if base > 0 else 1.0
    ratio = np.nan_to_num(base / block_scales, nan=2.0**MAX_SHIFT)
    shift = np.clip(np.floor(np.log2(ratio) + 1e-9), 0, MAX_SHIFT).astype(np.int64)
    return ActivationScales(base_scale=base, shift=np.repeat(shift, block))


def _rows(value: np.ndarray, kind: TargetKind) -> np.ndarray:
    """Return |value| as [rows, channels] (one channel when per tensor); masked entries are -1."""
    magnitude = np.abs(value.astype(np.float32))
    if kind is TargetKind.SOFTMAX_INPUT:
        row_max = np.max(value, axis=-1, keepdims=True)
        kept = (value >= row_max - SOFTMAX_IGNORED_BELOW_MAX) & np.isfinite(value)
        magnitude = np.where(kept, magnitude, np.float32(-1.0))
    if kind is TargetKind.CHANNELS:
        return magnitude.reshape(-1, value.shape[-1])
    return magnitude.reshape(-1, 1)


def _block_max(channel_max: np.ndarray, block: int) -> np.ndarray:
    return channel_max.reshape(-1, block).max(axis=1)


def _add_to_histogram(statistics: _Statistics, rows: np.ndarray, block: int) -> None:
    blocks = statistics.block_max.size
    values = rows.reshape(rows.shape[0], blocks, block)
    width = np.where(statistics.block_max > 0, statistics.block_max, 1.0) / HISTOGRAM_BINS
    index = np.minimum((values / width[None, :, None]).astype(np.int64), HISTOGRAM_BINS - 1)
    index += (np.arange(blocks) * HISTOGRAM_BINS)[None, :, None]
    index = index[values >= 0]  # masked Softmax inputs are marked -1
    counts = np.bincount(index.ravel(), minlength=blocks * HISTOGRAM_BINS)
    statistics.histogram += counts.reshape(blocks, HISTOGRAM_BINS)


def _percentile_ranges(histogram: np.ndarray, block_max: np.ndarray, percentile: float) -> np.ndarray:
    cumulative = np.cumsum(histogram, axis=1)
    wanted = cumulative[:, -1:] * (percentile / 100.0)
    first_bin = np.argmax(cumulative >= wanted, axis=1)
    return (first_bin + 1) * block_max / HISTOGRAM_BINS


def _mse_ranges(histogram: np.ndarray, block_max: np.ndarray, q_max: int) -> np.ndarray:
    """Return per block the clipping range that minimises the histogram's squared error.

    Values inside the range cost the uniform rounding noise step²/12; values beyond it cost
    their squared distance to the range.
    """
    centers = (np.arange(HISTOGRAM_BINS) + 0.5) / HISTOGRAM_BINS  # in units of block_max
    candidates = np.linspace(0.05, 1.0, 96)
    errors = np.empty((histogram.shape[0], candidates.size))
    for index, clip in enumerate(candidates):
        step = clip / q_max
        clipped = np.maximum(centers - clip, 0.0) ** 2
        inside = np.where(centers <= clip, step * step / 12.0, 0.0)
        errors[:, index] = histogram @ (clipped + inside)
    return candidates[np.argmin(errors, axis=1)] * block_max


def input_second_moments(
    model: onnx.ModelProto,
    names: Sequence[str],
    batches: Sequence[dict[str, np.ndarray]],
    *,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Return, per value in ``names``, the sum of ``v v^T`` over the vectors ``v`` along its last axis.

    Vectors at padding positions (where a ``[batch, sequence]`` input whose name contains "mask"
    is zero) are left out: they never reach the model's real outputs.
    """
    session = session_with_outputs(model, list(names))
    moments: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for done, feeds in enumerate(batches, start=1):
        for name, value in zip(names, run_calibration_batch(session, list(names), feeds)):
            vectors = _kept_vectors(value.astype(np.float64), feeds)
            moments[name] = moments.get(name, 0.0) + vectors.T @ vectors
            counts[name] = counts.get(name, 0) + len(vectors)
        if progress is not None:
            progress(done, len(batches))
    short = [name for name, count in counts.items() if count < moments[name].shape[0]]
    if short:
        logger.warning(
            "error compensation sees fewer calibration vectors than input channels for %d weights "
            "(%d vectors for %d channels at %s); it may fit the calibration data rather than the "
            "task: calibrate on more samples or pass --no-error-compensation",
            len(short), counts[short[0]], moments[short[0]].shape[0], short[0],
        )
    return moments


def run_calibration_batch(session, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run one batch of calibration feeds, turning ONNX Runtime's errors into one clear line."""
    try:
        return session.run(names, feeds)
    except (RuntimeError, *ORT_ERRORS) as error:
        raise BctError(f"the calibration data does not fit the model: {first_line(error)}") from error


def _kept_vectors(value: np.ndarray, feeds: dict[str, np.ndarray]) -> np.ndarray:
    for name, feed in feeds.items():
        if "mask" in name.lower() and value.ndim == 3 and feed.shape == value.shape[:2]:
            return value[feed != 0]
    return value.reshape(-1, value.shape[-1])


def split_batches(feeds: dict[str, np.ndarray], batch_size: int) -> list[dict[str, np.ndarray]]:
    """Split feeds whose arrays share a leading sample axis into batches of ``batch_size``."""
    count = min(len(array) for array in feeds.values())
    return [
        {name: array[start : start + batch_size] for name, array in feeds.items()}
        for start in range(0, count, batch_size)
    ]
