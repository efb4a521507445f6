"""The ``bct-onnx`` command line: thin subcommands over the library API."""

from __future__ import annotations

import logging
import sys
import tempfile
import warnings
from pathlib import Path

import click

from bct_onnx.blockwise import Rounding, ScaleFormat
from bct_onnx.compress import compress
from bct_onnx.config import CompressConfig
from bct_onnx.errors import BctError, ValidationFailedError
from bct_onnx.inspection import inspect_model
from bct_onnx.validate import load_feeds, validate

logger = logging.getLogger("bct_onnx")


class _Group(click.Group):
    """Click group that turns user-facing errors into one line on stderr and exit status 1."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except BctError as error:
            click.echo(f"error: {error}", err=True)
            ctx.exit(1)


@click.group(cls=_Group)
@click.version_option(package_name="bct-onnx")
@click.option("-v", "--verbose", count=True, help="More log output (-v: one line per pass, -vv: every node).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors and results.")
@click.pass_context
def main(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """Compress transformer ONNX models with blockwise low-bit quantization (BCT)."""
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    ctx.obj = {"verbose": verbose}


def _quiet_export_libraries(ctx: click.Context) -> None:
    """Hide torch's and transformers' export chatter unless -v is given.

    torch 2.13 warns about torchvision ops it skips, tree-spec deprecations and merged axis
    names on every export, and transformers draws a progress bar for loading the weights.
    None of it calls for action on the models bct-onnx exports.
    """
    if ctx.obj["verbose"]:
        return
    import torch  # noqa: F401  (torch configures its loggers on import, so adjust them after)
    from transformers.utils import logging as transformers_logging

    warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.")
    warnings.filterwarnings("ignore", category=FutureWarning)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    transformers_logging.disable_progress_bar()


def compress_options(function):
    """Attach the options shared by ``compress`` and ``demo``; they build one CompressConfig."""
    defaults = CompressConfig()
    options = [
        click.option("--weight-bits", type=click.Choice(["4", "8"]), default=str(defaults.weight_bits),
                     show_default=True, help="Bits per weight and embedding value."),
        click.option("--block-size", type=click.IntRange(min=2), default=defaults.block_size, show_default=True,
                     help="Values per block along the reduction axis (the hidden axis for embeddings)."),
        click.option("--symmetric/--asymmetric", default=defaults.symmetric, show_default=True,
                     help="Symmetric codes, or codes with a zero point per block."),
        click.option("--rounding", type=click.Choice([item.value for item in Rounding]),
                     default=defaults.rounding.value, show_default=True,
                     help="nearest: scale from the block's range; mse: scale with least squared error."),
        click.option("--scale-format", type=click.Choice([item.value for item in ScaleFormat]),
                     default=defaults.scale_format.value, show_default=True,
                     help="Storage of block scales; uint8 stores 8-bit codes times one float shared along the non-blocked axis."),
        click.option("--embeddings/--no-embeddings", default=defaults.embeddings, show_default=True,
                     help="Also compress tables read by Gather (word, position, token type)."),
        click.option("--exclude", multiple=True, metavar="PATTERN",
                     help="Leave nodes or weights whose name matches this fnmatch pattern in float; repeatable."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def config_from_options(options: dict) -> CompressConfig:
    """Build the CompressConfig from the values of ``compress_options``."""
    return CompressConfig(
        weight_bits=int(options["weight_bits"]),
        block_size=options["block_size"],
        symmetric=options["symmetric"],
        rounding=Rounding(options["rounding"]),
        scale_format=ScaleFormat(options["scale_format"]),
        embeddings=options["embeddings"],
        exclude=tuple(options["exclude"]),
    )


@main.command("compress")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Compressed model file to write.")
@click.option("--report", "report_path", type=click.Path(path_type=Path), help="Also write the report as JSON here.")
@compress_options
def compress_command(model: Path, output: Path, report_path: Path | None, **options) -> None:
    """Compress MODEL into a smaller ONNX file that stock ONNX Runtime runs."""
    report = compress(model, output, config=config_from_options(options))
    click.echo(report.format_table())
    if report_path is not None:
        report_path.write_text(report.to_json() + "\n")


@main.command("validate")
@click.argument("reference", type=click.Path(path_type=Path))
@click.argument("candidate", type=click.Path(path_type=Path))
@click.option("--inputs", type=click.Path(path_type=Path), help=".npz of input feeds; default: random token ids.")
@click.option("--min-cosine", type=float, help="Exit with status 1 when any output's mean cosine is below this.")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def validate_command(reference: Path, candidate: Path, inputs: Path | None, min_cosine: float | None, as_json: bool) -> None:
    """Compare CANDIDATE with the float model REFERENCE on the same inputs."""
    feeds = load_feeds(inputs) if inputs is not None else None
    report = validate(reference, candidate, feeds=feeds, min_cosine=min_cosine)
    click.echo(report.to_json() if as_json else report.format_table())
    if not report.passed:
        raise ValidationFailedError(f"an output's cosine is below {min_cosine}")


@main.command("inspect")
@click.argument("model", type=click.Path(path_type=Path))
def inspect_command(model: Path) -> None:
    """List MODEL's operators, parameter bytes, and what BCT would compress."""
    click.echo(inspect_model(model).format_text())


@main.command("export")
@click.argument("model")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="ONNX file to write.")
@click.option("--task", type=click.Choice(["feature-extraction", "sequence-classification"]),
              default="feature-extraction", show_default=True, help="Which model head to export.")
@click.option("--opset", type=int, help="ONNX opset to export at (default: the exporter's).")
@click.option("--exporter", type=click.Choice(["dynamo", "torchscript"]), default="dynamo", show_default=True,
              help="torch.onnx exporter to use.")
@click.pass_context
def export_command(ctx: click.Context, model: str, output: Path, task: str, opset: int | None, exporter: str) -> None:
    """Export MODEL (a Hugging Face model folder, or a hub id where a hub is reachable) to ONNX.

    Use "default" for the built-in MiniLM-L6 model. Needs the export extra:
    pip install 'bct-onnx[export]'.
    """
    from bct_onnx.export import Exporter, ExportConfig, Task, default_model_dir, export_model

    _quiet_export_libraries(ctx)
    source = default_model_dir() if model == "default" else model
    config = _export_config(ExportConfig, Task(task), Exporter(exporter), opset)
    path = export_model(source, output, config=config)
    click.echo(f"exported {source} to {path}")


@main.command("demo")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the exported and compressed models (default: a temporary folder).")
@compress_options
@click.pass_context
def demo_command(ctx: click.Context, workdir: Path | None, **options) -> None:
    """Export the built-in MiniLM-L6 model, compress it, and validate it against float32."""
    from bct_onnx.demo import run_demo

    _quiet_export_libraries(ctx)
    with tempfile.TemporaryDirectory(prefix="bct-onnx-demo-") as scratch:
        folder = workdir or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        compression, validation = run_demo(folder, config_from_options(options), progress=_echo_step)
        click.echo(compression.format_table())
        click.echo("\n" + validation.format_table())
        if not validation.passed:
            raise ValidationFailedError(f"the compressed model's cosine is below {validation.min_cosine}")


def _echo_step(message: str) -> None:
    click.echo(message, err=True)


def _export_config(config_type, task, exporter, opset):
    try:
        return config_type(task=task, exporter=exporter, opset=opset)
    except ValueError as error:
        raise click.BadParameter(str(error)) from error
