"""Tokenizing text for the models: one loader and one encoder for every caller."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from bct_onnx.errors import BctError, first_line
from bct_onnx.glue import Example


def load_tokenizer(folder: str | os.PathLike | None):
    """Return the Hugging Face tokenizer saved in ``folder``.

    Raises:
        BctError: no folder is given, transformers is missing, or the folder has no tokenizer.
    """
    if folder is None:
        raise BctError("tokenizing text needs a tokenizer: pass --tokenizer DIR (a Hugging Face model folder)")
    try:
        from transformers import AutoTokenizer
    except ImportError as error:
        raise BctError("tokenizing text needs transformers: pip install 'bct-onnx[export]'") from error
    if not Path(folder).is_dir():
        raise BctError(f"tokenizer folder not found: {folder}")
    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as error:
        raise BctError(f"cannot load a tokenizer from {folder}: {first_line(error)}") from error


def encode_examples(
    tokenizer, examples: Sequence[Example], *, max_length: int, padding: bool | str = True, return_tensors: str = "np"
):
    """Tokenize ``examples``, as text pairs when every example has a second text.

    ``padding`` is the tokenizer's: True pads to the longest example, "max_length" to
    ``max_length``. Longer examples are truncated to ``max_length``.
    """
    pairs = [example.text_b for example in examples]
    return tokenizer(
        [example.text_a for example in examples],
        pairs if all(pair is not None for pair in pairs) else None,
        padding=padding,
        truncation=True,
        max_length=max_length,
        return_tensors=return_tensors,
    )
