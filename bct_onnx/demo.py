"""The demo job on the built-in model: export, compress, and validate on real sentences."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from bct_onnx.compress import compress
from bct_onnx.config import CompressConfig
from bct_onnx.report import CompressionReport
from bct_onnx.validate import ValidationReport, validate

# Mean cosine per token between float32 and compressed hidden states that the demo requires.
# The default 4-bit recipe reaches about 0.96 on these sentences.
DEMO_MIN_COSINE = 0.9

DEMO_SENTENCES = (
    "The quarterly report shows revenue growing faster than costs.",
    "A dog is running through the tall grass after a ball.",
    "Please restart the server before applying the security patch.",
    "She played the violin at the concert last night.",
    "Heavy rain is expected across the region this weekend.",
    "The recipe needs two cups of flour and a pinch of salt.",
    "Quantized models trade a little accuracy for much smaller files.",
    "The train to the airport leaves every fifteen minutes.",
)


def run_demo(
    folder: Path, config: CompressConfig, *, progress: Callable[[str], None] = lambda message: None
) -> tuple[CompressionReport, ValidationReport]:
    """Export MiniLM-L6 into ``folder``, compress it with ``config``, and compare the two."""
    from transformers import AutoTokenizer

    from bct_onnx.export import ExportConfig, default_model_dir, export_model

    float_path = folder / "minilm-l6.onnx"
    compressed_path = folder / "minilm-l6.bct.onnx"
    progress(f"[1/3] exporting MiniLM-L6 to {float_path}")
    export_model(default_model_dir(), float_path, config=ExportConfig())
    tokenizer = AutoTokenizer.from_pretrained(default_model_dir())
    encoded = tokenizer(list(DEMO_SENTENCES), padding=True, return_tensors="np")
    feeds = {name: np.asarray(values, np.int64) for name, values in encoded.items()}

    progress(f"[2/3] compressing it to {compressed_path}")
    # A recipe that quantizes activations calibrates on the demo sentences themselves.
    calibration = [feeds] if config.needs_calibration else None
    compression = compress(float_path, compressed_path, config=config, calibration=calibration)

    progress(f"[3/3] comparing both models on {len(DEMO_SENTENCES)} sentences")
    validation = validate(float_path, compressed_path, feeds=feeds, min_cosine=DEMO_MIN_COSINE)
    return compression, validation
