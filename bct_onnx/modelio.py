"""Loading and saving ONNX models safely: clear errors in, atomic writes out."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx.external_data_helper import uses_external_data

from bct_onnx.errors import ModelLoadError, OutputError, first_line

# Protobuf cannot serialise a message of 2 GiB or more, so larger models must keep their
# initializers in an external data file.
PROTOBUF_LIMIT_BYTES = 2**31 - 1

# Metadata key under which bct_onnx.export records the model folder it exported.
EXPORT_SOURCE_KEY = "bct_onnx.export.source"


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Load an ONNX model and its external data, refusing data files outside its folder.

    Raises:
        ModelLoadError: the file is missing, is not ONNX, is truncated, or points outside its
            folder for external data.
    """
    path = Path(path)
    if path.is_dir():
        raise ModelLoadError(f"model path is a folder, expected an .onnx file: {path}")
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}")
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except (DecodeError, RuntimeError, ValueError, OSError) as error:
        raise ModelLoadError(f"{path} is not a readable ONNX model ({error})") from error
    if not model.graph.node:
        raise ModelLoadError(f"{path} is not a readable ONNX model (its graph has no nodes)")

    _check_external_data_locations(model, path.parent)
    try:
        onnx.load_external_data_for_model(model, str(path.parent))
    except (OSError, ValueError, onnx.checker.ValidationError) as error:
        raise ModelLoadError(f"cannot read the external data of {path}: {error}") from error
    if model.ByteSize() < PROTOBUF_LIMIT_BYTES:
        try:
            onnx.checker.check_model(model)
        except onnx.checker.ValidationError as error:
            raise ModelLoadError(f"{path} is not a valid ONNX model: {first_line(error)}") from error
    return model


def external_data_files(path: str | os.PathLike) -> set[str]:
    """Return the external data file names that the model at ``path`` refers to."""
    model = onnx.load_model(str(path), load_external_data=False)
    return {
        entry.value
        for tensor in model.graph.initializer
        if uses_external_data(tensor)
        for entry in tensor.external_data
        if entry.key == "location"
    }


def export_source(path: str | os.PathLike) -> str | None:
    """Return the Hugging Face model folder that ``bct-onnx export`` recorded, if it still exists."""
    model = onnx.load_model(str(path), load_external_data=False)
    source = next((entry.value for entry in model.metadata_props if entry.key == EXPORT_SOURCE_KEY), None)
    return source if source and Path(source).is_dir() else None


def model_file_bytes(path: str | os.PathLike) -> int:
    """Return the size of a model file plus the external data files it refers to."""
    path = Path(path)
    return path.stat().st_size + sum((path.parent / name).stat().st_size for name in external_data_files(path))


def _check_external_data_locations(model: onnx.ModelProto, folder: Path) -> None:
    root = folder.resolve()
    for tensor in model.graph.initializer:
        if not uses_external_data(tensor):
            continue
        location = next((entry.value for entry in tensor.external_data if entry.key == "location"), "")
        target = (root / location).resolve()
        if not location or Path(location).is_absolute() or not target.is_relative_to(root):
            raise ModelLoadError(
                f"initializer {tensor.name!r} points to external data {location!r} outside the "
                f"model's folder {root}; move the data file next to the model"
            )
        if not target.is_file():
            raise ModelLoadError(f"external data file not found for {tensor.name!r}: {target}")


def check_output_path(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    *,
    report_path: str | os.PathLike | None = None,
    other_inputs: Iterable[str | os.PathLike] = (),
) -> Path:
    """Return ``output_path`` as a Path after checking that the model can be written there.

    The output, its ``.data`` file and the report must not overwrite the input model, any
    external data file it reads or ``other_inputs`` (such as a calibration file), nor each other.

    Raises:
        OutputError: a path collides with the input or another output, or a folder is missing
            or not writable.
    """
    output = Path(output_path)
    protected = {Path(input_path).resolve()}
    protected |= {(Path(input_path).parent / name).resolve() for name in _external_data_names(input_path)}
    protected |= {Path(path).resolve() for path in other_inputs}
    data_file = output.parent / f"{output.name}.data"
    for path, role in ((output, "output path"), (data_file, "output data file")):
        if path.resolve() in protected:
            raise OutputError(f"{role} {path} would overwrite an input file; choose another file name")
    check_output_folder(output)
    if report_path is not None:
        report = Path(report_path)
        if report.resolve() in protected | {output.resolve(), data_file.resolve()}:
            raise OutputError(f"report path {report} would overwrite an input or the model; choose another file name")
        check_output_folder(report)
    return output


def check_output_folder(path: Path) -> None:
    """Raise OutputError unless ``path`` can be written: its folder exists and is writable, and it is no folder."""
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"output folder does not exist: {folder}")
    if not os.access(folder, os.W_OK):
        raise OutputError(f"output folder is not writable: {folder}")
    if path.is_dir():
        raise OutputError(f"output path is a folder, expected a file name: {path}")


def _external_data_names(path: str | os.PathLike) -> set[str]:
    try:
        return external_data_files(path)
    except (OSError, DecodeError, ValueError):
        return set()


@contextlib.contextmanager
def text_writer(path: str | os.PathLike) -> Iterator[Callable[[str], None]]:
    """Yield a function that writes text to ``path`` atomically.

    The temporary folder is created on entry, so a folder that cannot be written fails before the
    caller writes any other output.
    """
    path = Path(path)
    with _temporary_folder(path.parent) as staging:

        def write(text: str) -> None:
            staged = staging / path.name
            try:
                staged.write_text(text)
                os.replace(staged, path)
            except OSError as error:
                raise OutputError(f"cannot write {path}: {error.strerror or error}") from error

        yield write


def save_model(model: onnx.ModelProto, path: str | os.PathLike, *, external_data: bool) -> None:
    """Write ``model`` to ``path`` atomically, with initializers in ``<name>.data`` if asked.

    The model goes to temporary files in the output folder first and is renamed into place only
    when complete, so a failure never leaves a half-written model behind. With external data,
    onnx moves the tensors of ``model`` itself to the file, so ``model`` is spent afterwards.
    """
    path = Path(path)
    external_data = external_data or model.ByteSize() >= PROTOBUF_LIMIT_BYTES
    data_name = f"{path.name}.data"
    with _temporary_folder(path.parent) as staging:
        staged_model = staging / path.name
        try:
            if external_data:
                onnx.save_model(
                    model,
                    str(staged_model),
                    save_as_external_data=True,
                    all_tensors_to_one_file=True,
                    location=data_name,
                    size_threshold=1024,
                )
            else:
                onnx.save_model(model, str(staged_model))
            if (staging / data_name).exists():
                os.replace(staging / data_name, path.parent / data_name)
            os.replace(staged_model, path)
        except OSError as error:
            raise OutputError(f"cannot write {path}: {error.strerror or error}") from error


@contextlib.contextmanager
def _temporary_folder(parent: Path) -> Iterator[Path]:
    try:
        folder = tempfile.TemporaryDirectory(prefix=".bct-onnx-", dir=parent)
    except OSError as error:
        raise OutputError(f"cannot write to {parent}: {error}") from error
    with folder as name:
        yield Path(name)
