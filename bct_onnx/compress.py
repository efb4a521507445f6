"""The compression entry points: a model in memory, or a file to a file."""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from bct_onnx.config import CompressConfig
from bct_onnx.errors import UnsupportedModelError
from bct_onnx.graph import CREATED_BY_KEY
from bct_onnx.modelio import (
    PROTOBUF_LIMIT_BYTES,
    check_output_path,
    external_data_files,
    load_model,
    model_file_bytes,
    save_model,
    text_writer,
)
from bct_onnx.opset import upgrade_opset
from bct_onnx.passes import PassContext, PassResult, default_pipeline, run_pipeline
from bct_onnx.report import CompressionReport, TensorReport

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CompressedModel:
    """A compressed model in memory, with what each pass did to it."""

    model: onnx.ModelProto
    tensors: list[TensorReport]
    passes: list[PassResult]


def compress_model(
    model: onnx.ModelProto,
    *,
    config: CompressConfig = CompressConfig(),
    calibration: Sequence[dict[str, np.ndarray]] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> CompressedModel:
    """Compress a model held in memory and return the new model; ``model`` is not changed.

    ``calibration`` contains batches of input feeds; recipes that quantize activations need it.
    ``progress`` is called with (batches done, batches in all) during calibration.

    Raises:
        UnsupportedModelError: the opset cannot be upgraded, or nothing in the model can be
            compressed.
        BctError: activations are to be quantized and ``calibration`` is empty.
    """
    model = upgrade_opset(_copy(model))
    _warn_unmatched_patterns(model, config.exclude)
    graph = gs.import_onnx(_infer_shapes(model))
    context = PassContext(graph=graph, config=config, calibration_batches=list(calibration or []))
    results = run_pipeline(default_pipeline(progress), context)
    if not context.tensor_reports:
        raise UnsupportedModelError(f"nothing to compress: {_describe_skips(results)}")

    compressed = gs.export_onnx(graph)
    # Intermediate shapes are left out: any ONNX tool infers them again, and with long exporter
    # names they cost about 1% of a compressed MiniLM-L6 file.
    del compressed.graph.value_info[:]
    _restore_model_fields(compressed, model)
    _add_functions(compressed, context.functions.values())
    for node in compressed.graph.node:
        if node.name in context.created_by:
            entry = node.metadata_props.add()
            entry.key, entry.value = CREATED_BY_KEY, context.created_by[node.name]
    return CompressedModel(compressed, context.tensor_reports, results)


def _warn_unmatched_patterns(model: onnx.ModelProto, patterns: tuple[str, ...]) -> None:
    """Log a warning for every exclusion pattern that matches no node or initializer name."""
    names = [node.name for node in model.graph.node] + [tensor.name for tensor in model.graph.initializer]
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
            logger.warning("exclusion pattern %r matches no node or weight name; nothing is excluded by it", pattern)


def _add_functions(model: onnx.ModelProto, functions: Iterable[onnx.FunctionProto]) -> None:
    """Store the integer operators' function bodies and import their domain."""
    for function in functions:
        model.functions.append(function)
        if all(entry.domain != function.domain for entry in model.opset_import):
            model.opset_import.append(onnx.helper.make_opsetid(function.domain, 1))


def compress(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    *,
    config: CompressConfig = CompressConfig(),
    calibration: Sequence[dict[str, np.ndarray]] | None = None,
    progress: Callable[[int, int], None] | None = None,
    report_path: str | os.PathLike | None = None,
) -> CompressionReport:
    """Compress the ONNX file ``input_path`` into ``output_path`` and return the report.

    The input is never modified. With ``report_path`` the report is also written there as JSON.
    The output keeps its initializers in ``<output>.data`` when
    the input used external data or the result would exceed protobuf's 2 GiB limit.
    """
    output = check_output_path(input_path, output_path, report_path=report_path)
    model = load_model(input_path)
    external_data = bool(external_data_files(input_path))
    compressed = compress_model(model, config=config, calibration=calibration, progress=progress)
    _check(compressed.model)
    with contextlib.ExitStack() as stack:
        # Staged before the model is written: a report folder that cannot be written leaves no model.
        write_report = stack.enter_context(text_writer(report_path)) if report_path is not None else None
        save_model(compressed.model, output, external_data=external_data)
        report = CompressionReport(
            input_path=str(input_path),
            output_path=str(output),
            file_bytes_before=model_file_bytes(input_path),
            file_bytes_after=model_file_bytes(output),
            tensors=compressed.tensors,
            passes={result.pass_name: result.rewritten for result in compressed.passes},
        )
        if write_report is not None:
            write_report(report.to_json() + "\n")
    return report


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def _infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return ``model`` with inferred value shapes; a model shape inference rejects is kept as is."""
    try:
        return onnx.shape_inference.infer_shapes(model, data_prop=True)
    except (onnx.shape_inference.InferenceError, ValueError) as error:
        logger.warning("shape inference failed, continuing without inferred shapes: %s", error)
        return model


def _restore_model_fields(compressed: onnx.ModelProto, original: onnx.ModelProto) -> None:
    """Copy what onnx-graphsurgeon drops on export: IR version, metadata, docs, overridable initializers."""
    compressed.ir_version = original.ir_version
    compressed.producer_name = original.producer_name or compressed.producer_name
    compressed.producer_version = original.producer_version or compressed.producer_version
    compressed.doc_string = original.doc_string
    compressed.model_version = original.model_version
    del compressed.metadata_props[:]
    compressed.metadata_props.extend(original.metadata_props)
    # An initializer listed among the graph inputs is a default that the caller may override.
    # Those still present (weights left in float) stay inputs, after the other inputs.
    initializer_names = {initializer.name for initializer in compressed.graph.initializer}
    present = {value.name for value in compressed.graph.input}
    overridable = [value for value in original.graph.input if value.name in initializer_names and value.name not in present]
    compressed.graph.input.extend(overridable)


def _describe_skips(results: list[PassResult]) -> str:
    reasons = Counter()
    for result in results:
        reasons.update(result.skipped)
    if not reasons:
        return "the model has no MatMul, Gemm or Gather on a constant"
    return "; ".join(f"{count} node(s) left because {reason}" for reason, count in reasons.items())


def _check(model: onnx.ModelProto) -> None:
    """Run the ONNX checker on the result, with shape inference when every op's schema is known.

    Ops of domains such as com.microsoft have no schema in onnx, so full checking would reject
    models that ONNX Runtime runs. Models of 2 GiB or more cannot be checked in memory.
    """
    if model.ByteSize() >= PROTOBUF_LIMIT_BYTES:
        return
    known = {"", "ai.onnx"} | {function.domain for function in model.functions}
    full_check = all(node.domain in known for node in model.graph.node)
    try:
        onnx.checker.check_model(model, full_check=full_check)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        raise UnsupportedModelError(f"the compressed model fails the ONNX checker: {str(error).strip().splitlines()[0]}") from error
