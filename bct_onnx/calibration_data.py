"""Calibration inputs: a GLUE task, a text file, or an .npz of input feeds, as batches of feeds."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import onnx

from bct_onnx.calibration import split_batches
from bct_onnx.errors import BctError
from bct_onnx.modelio import export_source
from bct_onnx.glue import Example
from bct_onnx.text import encode_examples, load_tokenizer
from bct_onnx.validate import load_feeds

logger = logging.getLogger(__name__)

GLUE_PREFIX = "glue:"


def load_calibration_batches(
    source: str,
    model_path: str | os.PathLike,
    *,
    samples: int = 256,
    sequence_length: int = 128,
    batch_size: int = 8,
    tokenizer: str | os.PathLike | None = None,
    glue_dir: str | os.PathLike | None = None,
) -> list[dict[str, np.ndarray]]:
    """Return up to ``samples`` calibration samples from ``source``, in batches of input feeds.

    ``source`` is ``glue:TASK`` (the task's train split, or dev where there is no train split),
    a ``.npz`` of feeds named like the model's inputs, or a text file with one sample per line.
    Text is tokenized with ``tokenizer`` (a Hugging Face tokenizer folder), by default the
    folder the model was exported from when bct-onnx exported it.

    Raises:
        BctError: the source cannot be read, or no tokenizer is known for text.
    """
    if samples < 1 or batch_size < 1 or sequence_length < 2:
        raise BctError("calibration samples, batch size and sequence length must be positive")
    input_names = _input_names(model_path)
    if source.endswith(".npz"):
        feeds = load_feeds(source)
        batches = split_batches({name: feeds[name][:samples] for name in _checked(feeds, input_names)}, batch_size)
        if not batches:
            raise BctError(f"calibration feeds in {source} hold no samples")
        return batches
    texts = _texts(source, samples, glue_dir)
    folder = tokenizer or export_source(model_path)
    return _tokenize(texts, folder, input_names, sequence_length, batch_size)


def _texts(source: str, samples: int, glue_dir: str | os.PathLike | None) -> list[tuple[str, str | None]]:
    if source.startswith(GLUE_PREFIX):
        from bct_onnx.glue import GlueDataError, load_glue_split

        task = source[len(GLUE_PREFIX) :]
        try:
            examples = load_glue_split(task, "train", glue_dir=glue_dir, limit=samples)
        except GlueDataError:
            examples = load_glue_split(task, "dev", glue_dir=glue_dir, limit=samples)
            logger.warning(
                "GLUE task %s has no train split here; calibrating on its dev split, which "
                "`validate --task` also scores", task,
            )
        return [(example.text_a, example.text_b) for example in examples]
    path = Path(source)
    if not path.is_file():
        raise BctError(f"calibration source not found: {source} (expected glue:TASK, a .npz or a text file)")
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError as error:
        raise BctError(f"calibration text file is not UTF-8 text: {source}") from error
    texts = [(line, None) for line in lines if line][:samples]
    if not texts:
        raise BctError(f"calibration text file is empty: {source}")
    return texts


def _tokenize(
    texts: list[tuple[str, str | None]],
    folder: str | os.PathLike,
    input_names: list[str],
    sequence_length: int,
    batch_size: int,
) -> list[dict[str, np.ndarray]]:
    examples = [Example(text_a, text_b, 0) for text_a, text_b in texts]
    encoded = encode_examples(load_tokenizer(folder), examples, max_length=sequence_length, padding="max_length")
    feeds = {name: np.asarray(encoded[name], np.int64) for name in _checked(encoded, input_names)}
    return split_batches(feeds, batch_size)


def _checked(feeds, input_names: list[str]) -> list[str]:
    missing = [name for name in input_names if name not in feeds]
    if missing:
        raise BctError(f"calibration data has no values for model inputs {missing}")
    return input_names


def _input_names(model_path: str | os.PathLike) -> list[str]:
    model = onnx.load_model(str(model_path), load_external_data=False)
    initializers = {tensor.name for tensor in model.graph.initializer}
    return [value.name for value in model.graph.input if value.name not in initializers]
