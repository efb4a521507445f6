"""The compression options of the command line, and how they become a CompressConfig.

Every option defaults to "not given", so that the chosen recipe's value applies unless the
user overrides it; the help text names the recipe defaults.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from bct_onnx.blockwise import Rounding, ScaleFormat
from bct_onnx.calibration import CalibrationMethod
from bct_onnx.config import CompressConfig, IntegerOperator, Recipe

BITS = click.Choice(["4", "8"])


def _choice(enum_type) -> click.Choice:
    return click.Choice([item.value for item in enum_type])


COMPRESS_OPTIONS = [
    click.option("--recipe", type=_choice(Recipe),
                 help="bct: 4-bit weights, 8-bit activations, integer GELU/Softmax/LayerNorm; w8a8: the same "
                      "with 8-bit weights; weights-only: 4-bit weights, float activations. "
                      "Default: bct with --calibration, weights-only without."),
    click.option("--weight-bits", type=BITS, help="Bits per MatMul/Gemm weight value [4; w8a8: 8]."),
    click.option("--embedding-bits", type=BITS, help="Bits per embedding table value [default: --weight-bits]."),
    click.option("--activation-bits", type=BITS, help="Bits per activation value [bct, w8a8: 8]."),
    click.option("--block-size", type=click.IntRange(min=2),
                 help="Weight values per block along the reduction axis (the hidden axis for embeddings) [64]."),
    click.option("--activation-block-size", type=click.IntRange(min=1), help="Activation channels per block; 1 gives every channel its own scale [1]."),
    click.option("--symmetric/--asymmetric", default=None, help="Weight codes without or with a zero point [symmetric]."),
    click.option("--rounding", type=_choice(Rounding),
                 help="nearest: scale from the block's range; mse: scale with least squared error [mse]."),
    click.option("--scale-format", type=_choice(ScaleFormat),
                 help="Storage of weight block scales; uint8 stores 8-bit codes times one float per block row [uint8]."),
    click.option("--embeddings/--no-embeddings", default=None,
                 help="Also compress tables read by Gather (word, position, token type) [on]."),
    click.option("--integer-ops", metavar="LIST",
                 help="Comma-separated integer operators to use: gelu, softmax, layernorm, or none "
                      "[bct, w8a8: all three]."),
    click.option("--error-compensation/--no-error-compensation", default=None,
                 help="Round weights so that their products with the calibration data change least (GPTQ); "
                      "needs --calibration [on with --calibration]."),
    click.option("--exclude", multiple=True, metavar="PATTERN",
                 help="Leave nodes or weights whose name matches this fnmatch pattern in float; repeatable."),
]

CALIBRATION_OPTIONS = [
    click.option("--calibration", metavar="SOURCE",
                 help="Calibration data: glue:TASK (e.g. glue:sst2), a text file with one sample per line, "
                      "or an .npz of input feeds."),
    click.option("--calibration-samples", type=click.IntRange(min=1), default=256, show_default=True,
                 help="Samples to calibrate on."),
    click.option("--calibration-method", type=_choice(CalibrationMethod), default="mse", show_default=True,
                 help="How activation ranges are chosen from the statistics."),
    click.option("--sequence-length", type=click.IntRange(min=2), default=128, show_default=True,
                 help="Tokens per calibration sample (padded or truncated)."),
    click.option("--tokenizer", type=click.Path(file_okay=False, path_type=Path),
                 help="Hugging Face tokenizer folder for text calibration data [the folder the model was exported from]."),
    click.option("--glue-dir", type=click.Path(file_okay=False, path_type=Path),
                 help="GLUE data folder for glue:TASK [$BCT_GLUE_DIR]."),
]


def add_options(options: list) -> Callable:
    """Return a decorator that attaches ``options`` to a click command."""

    def decorate(function: Callable) -> Callable:
        for option in reversed(options):
            function = option(function)
        return function

    return decorate


def config_from_options(options: dict) -> CompressConfig:
    """Build the CompressConfig: the recipe's values, overridden by every option given."""
    recipe_name = options.get("recipe") or ("bct" if options.get("calibration") else "weights-only")
    overrides = {
        "weight_bits": _int(options["weight_bits"]),
        "embedding_bits": _int(options["embedding_bits"]),
        "activation_bits": _int(options["activation_bits"]),
        "block_size": options["block_size"],
        "activation_block_size": options["activation_block_size"],
        "symmetric": options["symmetric"],
        "rounding": Rounding(options["rounding"]) if options["rounding"] else None,
        "scale_format": ScaleFormat(options["scale_format"]) if options["scale_format"] else None,
        "embeddings": options["embeddings"],
        "integer_operators": _integer_operators(options["integer_ops"]),
        "exclude": tuple(options["exclude"]) or None,
        "error_compensation": options["error_compensation"],
        "calibration_method": CalibrationMethod(options["calibration_method"])
        if options.get("calibration_method") else None,
    }
    given = {name: value for name, value in overrides.items() if value is not None}
    try:
        return CompressConfig.from_recipe(Recipe(recipe_name), **given)
    except ValueError as error:
        raise click.UsageError(str(error)) from error


def _int(value: str | None) -> int | None:
    return int(value) if value is not None else None


def _integer_operators(text: str | None) -> frozenset[IntegerOperator] | None:
    if text is None:
        return None
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    if names == ["none"]:
        return frozenset()
    try:
        return frozenset(IntegerOperator(name) for name in names)
    except ValueError as error:
        raise click.BadParameter(f"{text!r}: use gelu, softmax, layernorm or none", param_hint="--integer-ops") from error
