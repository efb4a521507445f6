"""Comparing a compressed model with its float model on the same inputs in ONNX Runtime."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from bct_onnx.errors import BctError, ModelLoadError, first_line

# The exceptions ONNX Runtime raises for bad models and bad inputs; they share no base class
# below Exception.
ORT_ERRORS = tuple(
    getattr(ort.capi.onnxruntime_pybind11_state, name)
    for name in ("Fail", "InvalidArgument", "InvalidProtobuf", "InvalidGraph", "NoSuchFile",
                 "NoModel", "NotImplemented", "RuntimeException", "EngineError", "ModelLoaded")
    if hasattr(ort.capi.onnxruntime_pybind11_state, name)
)

# Shape of the random inputs when the model leaves a dimension symbolic: batch, then sequence.
RANDOM_BATCH = 4
RANDOM_SEQUENCE = 32


@dataclass(frozen=True, kw_only=True)
class OutputComparison:
    """Difference between one output of the compressed model and the float model's."""

    name: str
    shape: tuple[int, ...]
    max_abs_error: float
    mean_abs_error: float
    cosine: float  # mean over rows (last axis) of the cosine similarity
    argmax_agreement: float  # share of rows whose largest entry is at the same index


@dataclass(frozen=True, kw_only=True)
class ValidationReport:
    """The comparison of every output, and whether it met the tolerance."""

    reference_path: str
    candidate_path: str
    outputs: list[OutputComparison]
    min_cosine: float | None

    @property
    def passed(self) -> bool:
        if self.min_cosine is None:
            return True
        return all(output.cosine >= self.min_cosine for output in self.outputs)

    def to_json(self) -> str:
        data = asdict(self)
        data["passed"] = self.passed
        return json.dumps(data, indent=2)

    def format_table(self) -> str:
        header = f"{'output':<28} {'shape':<16} {'max abs err':>12} {'mean abs err':>12} {'cosine':>9} {'argmax':>7}"
        lines = [header, "-" * len(header)]
        for output in self.outputs:
            shape = "x".join(str(dim) for dim in output.shape)
            lines.append(
                f"{output.name:<28} {shape:<16} {output.max_abs_error:>12.4g} {output.mean_abs_error:>12.4g} "
                f"{output.cosine:>9.5f} {output.argmax_agreement:>7.1%}"
            )
        if self.min_cosine is not None:
            verdict = "passed" if self.passed else "FAILED"
            lines.append(f"\nminimum cosine {self.min_cosine}: {verdict}")
        return "\n".join(lines)


def create_session(path: str | os.PathLike) -> ort.InferenceSession:
    """Open ``path`` in ONNX Runtime on the CPU, turning load failures into one clear error."""
    if not Path(path).is_file():
        raise ModelLoadError(f"model file not found: {path}")
    try:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except (RuntimeError, *ORT_ERRORS) as error:
        raise ModelLoadError(f"ONNX Runtime cannot load {path}: {first_line(error)}") from error


def session_with_outputs(model: onnx.ModelProto, names: list[str]) -> ort.InferenceSession:
    """Open a copy of ``model`` that also outputs the values ``names``, with optimizations off.

    Without graph optimizations ONNX Runtime computes every value exactly as the graph states,
    so intermediate values are the model's own, not those of fused kernels.
    """
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    existing = {output.name for output in probe.graph.output}
    for name in dict.fromkeys(names):
        if name not in existing:
            probe.graph.output.append(onnx.ValueInfoProto(name=name))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    # The arena would keep the memory of the largest run's outputs for the session's lifetime.
    options.enable_cpu_mem_arena = False
    options.log_severity_level = 4  # callers report run errors themselves, in one line
    return ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])


def random_feeds(model_path: str | os.PathLike, *, seed: int = 0) -> dict[str, np.ndarray]:
    """Return valid random inputs for a transformer: token ids below the vocabulary size.

    An integer input read by a Gather gets ids below that table's row count; an input whose name
    contains "mask" gets ones; other integer inputs get zeros; float inputs get N(0, 1) values.
    """
    model = onnx.load_model(str(model_path), load_external_data=False)
    rows = _lookup_table_rows(model)
    rng = np.random.default_rng(seed)
    initializers = {tensor.name for tensor in model.graph.initializer}
    feeds = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        shape = _concrete_shape(value)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        if np.issubdtype(dtype, np.floating):
            feeds[value.name] = rng.standard_normal(shape).astype(dtype)
        elif "mask" in value.name:
            feeds[value.name] = np.ones(shape, dtype)
        elif value.name in rows:
            feeds[value.name] = rng.integers(0, rows[value.name], shape).astype(dtype)
        else:
            feeds[value.name] = np.zeros(shape, dtype)
    return feeds


def load_feeds(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load input feeds from an ``.npz`` file whose array names are the model's input names."""
    not_archive = f"cannot read input feeds from {path}: not an .npz archive of arrays"
    try:
        loaded = np.load(path, allow_pickle=False)
    except OSError as error:
        raise BctError(f"cannot read input feeds from {path}: {error.strerror or error}") from error
    except ValueError as error:  # numpy's message for a file of another kind is about pickling
        raise BctError(not_archive) from error
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise BctError(not_archive)
    with loaded as archive:
        return {name: archive[name] for name in archive.files}


def validate(
    reference_path: str | os.PathLike,
    candidate_path: str | os.PathLike,
    *,
    feeds: dict[str, np.ndarray] | None = None,
    min_cosine: float | None = None,
) -> ValidationReport:
    """Run both models on ``feeds`` (random token ids when None) and compare every output."""
    reference = create_session(reference_path)
    candidate = create_session(candidate_path)
    feeds = feeds if feeds is not None else random_feeds(reference_path)
    _check_feeds(reference, feeds)
    _check_same_interface(reference, candidate)
    names = [output.name for output in reference.get_outputs()]
    expected = _run(reference, names, feeds, reference_path)
    actual = _run(candidate, names, feeds, candidate_path)
    for name, want, got in zip(names, expected, actual):
        if want.shape != got.shape:
            raise BctError(f"output {name!r} has shape {want.shape} in the reference but {got.shape} in the candidate")
    outputs = [compare_output(name, want, got) for name, want, got in zip(names, expected, actual)]
    return ValidationReport(
        reference_path=str(reference_path),
        candidate_path=str(candidate_path),
        outputs=outputs,
        min_cosine=min_cosine,
    )


def compare_output(name: str, expected: np.ndarray, actual: np.ndarray) -> OutputComparison:
    """Compare one output pair; rows are slices along the last axis."""
    expected64 = expected.astype(np.float64)
    error = np.abs(actual.astype(np.float64) - expected64)
    rows_expected = expected64.reshape(-1, expected.shape[-1]) if expected.ndim else expected64.reshape(1, 1)
    rows_actual = actual.astype(np.float64).reshape(rows_expected.shape)
    return OutputComparison(
        name=name,
        shape=tuple(int(dim) for dim in expected.shape),
        max_abs_error=float(error.max()),
        mean_abs_error=float(error.mean()),
        cosine=float(np.mean(row_cosine(rows_expected, rows_actual))),
        argmax_agreement=float(np.mean(rows_expected.argmax(-1) == rows_actual.argmax(-1))),
    )


def row_cosine(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Return the cosine similarity of matching rows; two all-zero rows count as identical."""
    dot = np.sum(first * second, axis=-1)
    norms = np.linalg.norm(first, axis=-1) * np.linalg.norm(second, axis=-1)
    both_zero = norms == 0
    return np.where(both_zero, 1.0, dot / np.where(both_zero, 1.0, norms))


def _lookup_table_rows(model: onnx.ModelProto) -> dict[str, int]:
    """Map each graph input read as Gather indices to the row count of the table it reads."""
    table_rows = {tensor.name: tensor.dims[0] for tensor in model.graph.initializer if tensor.dims}
    rows: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type == "Gather" and len(node.input) == 2 and node.input[0] in table_rows:
            rows[node.input[1]] = min(rows.get(node.input[1], 1 << 62), table_rows[node.input[0]])
    return rows


def _concrete_shape(value: onnx.ValueInfoProto) -> tuple[int, ...]:
    defaults = iter((RANDOM_BATCH, RANDOM_SEQUENCE))
    shape = []
    for dim in value.type.tensor_type.shape.dim:
        shape.append(dim.dim_value if dim.HasField("dim_value") else next(defaults, 1))
    return tuple(shape)


def _run(session: ort.InferenceSession, names: list[str], feeds: dict[str, np.ndarray], path) -> list[np.ndarray]:
    try:
        return session.run(names, feeds)
    except (RuntimeError, *ORT_ERRORS) as error:
        raise BctError(f"ONNX Runtime failed to run {path}: {first_line(error)}") from error


def _check_same_interface(reference: ort.InferenceSession, candidate: ort.InferenceSession) -> None:
    """Raise BctError unless both models take the same inputs and give the same outputs."""
    for kind, want, got in (
        ("inputs", reference.get_inputs(), candidate.get_inputs()),
        ("outputs", reference.get_outputs(), candidate.get_outputs()),
    ):
        want_names = sorted(value.name for value in want)
        got_names = sorted(value.name for value in got)
        if want_names != got_names:
            raise BctError(f"the models have different {kind}: {want_names} and {got_names}")


def _check_feeds(session: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> None:
    expected = {value.name for value in session.get_inputs()}
    missing = sorted(expected - feeds.keys())
    unknown = sorted(feeds.keys() - expected)
    if missing or unknown:
        raise BctError(f"input feeds do not match the model: missing {missing}, unknown {unknown}")
    empty = sorted(name for name, array in feeds.items() if array.size == 0)
    if empty:
        raise BctError(f"input feeds {empty} hold no values")
