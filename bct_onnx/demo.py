"""The demo job on the built-in model: export, compress, and validate on real sentences."""

from __future__ import annotations

import dataclasses
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

# Calibration data for the recipes that quantize activations: other sentences than the ones
# the demo validates on, so the reported cosine is not measured on the calibration data.
CALIBRATION_SENTENCES = (
    "The committee will publish its findings early next month.",
    "Two children are building a sandcastle near the water.",
    "Update the driver and reboot the machine to finish the install.",
    "The orchestra rehearsed the symphony for three hours.",
    "Strong winds knocked down several trees along the coast.",
    "Whisk the eggs with sugar until the mixture turns pale.",
    "Smaller networks answer faster on phones and laptops.",
    "The ferry crosses the bay twice every morning.",
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

    def feeds_of(sentences: tuple[str, ...]) -> dict[str, np.ndarray]:
        encoded = tokenizer(list(sentences), padding=True, return_tensors="np")
        return {name: np.asarray(values, np.int64) for name, values in encoded.items()}

    feeds = feeds_of(DEMO_SENTENCES)
    progress(f"[2/3] compressing it to {compressed_path}")
    calibration = None
    if config.needs_calibration:
        calibration = [feeds_of(CALIBRATION_SENTENCES)]
        # About 100 tokens are fewer input vectors than the 384 channels error compensation fits.
        config = dataclasses.replace(config, error_compensation=False)
    compression = compress(float_path, compressed_path, config=config, calibration=calibration)

    progress(f"[3/3] comparing both models on {len(DEMO_SENTENCES)} sentences")
    validation = validate(float_path, compressed_path, feeds=feeds, min_cosine=DEMO_MIN_COSINE)
    return compression, validation
