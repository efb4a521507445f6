"""The ``bct-onnx`` command line: thin subcommands over the library API."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import signal
import sys
import tempfile
import warnings
from pathlib import Path

import click
from tqdm import tqdm

from bct_onnx.cli_options import CALIBRATION_OPTIONS, COMPRESS_OPTIONS, add_options, config_from_options
from bct_onnx.compress import compress
from bct_onnx.errors import BctError, ValidationFailedError
from bct_onnx.inspection import inspect_model
from bct_onnx.modelio import check_output_path
from bct_onnx.validate import load_feeds, random_feeds, validate

logger = logging.getLogger("bct_onnx")


class _Group(click.Group):
    """Click group that reports every error as one ``error:`` line on stderr.

    Invalid options exit with status 2, as click's usage errors do; bad input and failed checks
    exit with status 1.
    """

    def main(self, *args, **kwargs):  # noqa: D102 (click's signature)
        kwargs["standalone_mode"] = False
        _exit_cleanly_on_sigterm()
        try:
            status = super().main(*args, **kwargs)
        except click.UsageError as error:
            _fail(f"{error.format_message()} (see --help)", 2)
        except click.ClickException as error:
            _fail(error.format_message(), error.exit_code)
        except click.exceptions.Abort:  # click's form of Ctrl-C
            _fail("interrupted", 130)
        except BctError as error:
            _fail(str(error), 1)
        sys.exit(status if isinstance(status, int) else 0)


def _exit_cleanly_on_sigterm() -> None:
    """Turn SIGTERM into an exception, so that temporary output folders are removed on the way out.

    Python's default SIGTERM action ends the process at once, without running any cleanup.
    """

    def stop(signum: int, frame) -> None:
        click.echo("error: stopped by SIGTERM", err=True)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def _fail(message: str, status: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(status)


@click.group(cls=_Group)
@click.version_option(package_name="bct-onnx")
@click.option("-v", "--verbose", count=True, help="More log output (-v: one line per pass, -vv: also each node left in float and why).")
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


@main.command("compress")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Compressed model file to write.")
@click.option("--report", "report_path", type=click.Path(path_type=Path), help="Also write the report as JSON here.")
@add_options(COMPRESS_OPTIONS)
@add_options(CALIBRATION_OPTIONS)
def compress_command(model: Path, output: Path, report_path: Path | None, **options) -> None:
    """Compress MODEL into a smaller ONNX file that stock ONNX Runtime runs."""
    config = config_from_options(options)
    calibration_file = Path(options["calibration"]) if options["calibration"] else None
    if calibration_file is not None and calibration_file.is_file():  # fail before calibrating
        check_output_path(model, output, report_path=report_path, other_inputs=[calibration_file])
    if options["error_compensation"] and not options["calibration"]:
        raise click.UsageError("--error-compensation needs --calibration SOURCE")
    wants_data = config.needs_calibration or (options["calibration"] and config.error_compensation)
    if options["calibration"] and not wants_data:
        logger.warning("--calibration is not used: this recipe without error compensation needs no data")
    batches = _calibration_batches(model, options) if wants_data else None
    with _progress_bar("calibrating") as progress:
        report = compress(
            model, output, config=config, calibration=batches, progress=progress, report_path=report_path
        )
    click.echo(report.format_table())


def _calibration_batches(model: Path, options: dict) -> list:
    if not options["calibration"]:
        raise click.UsageError("quantizing activations needs --calibration SOURCE")
    from bct_onnx.calibration_data import load_calibration_batches

    return load_calibration_batches(
        options["calibration"],
        model,
        samples=options["calibration_samples"],
        sequence_length=options["sequence_length"],
        tokenizer=options["tokenizer"],
        glue_dir=options["glue_dir"],
    )


@contextlib.contextmanager
def _progress_bar(label: str, *, unit: str = "batch"):
    """Yield a (done, total) callback that draws a tqdm bar on stderr once work starts."""
    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is not None and (total != bar.total or done < bar.n):  # the next pass over the data
            bar.close()
            bar = None
        if bar is None:
            bar = tqdm(total=total, desc=label, unit=unit, file=sys.stderr, leave=False, disable=None)
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        if bar is not None:
            bar.close()


@main.command("validate")
@click.argument("reference", type=click.Path(path_type=Path))
@click.argument("candidate", type=click.Path(path_type=Path))
@click.option("--inputs", type=click.Path(path_type=Path), help=".npz of input feeds; default: random token ids.")
@click.option("--min-cosine", type=click.FloatRange(-1.0, 1.0),
              help="Exit with status 1 when any output's mean cosine is below this.")
@click.option("--layers/--no-layers", default=False,
              help="Also compare every intermediate value the two graphs share (SQNR and cosine).")
@click.option("--task", help="Score both models on this GLUE task's labelled split instead (e.g. sst2).")
@click.option("--data", type=click.Path(dir_okay=False, path_type=Path),
              help="Score both models on your own labelled TSV, CSV or JSONL file instead.")
@click.option("--split", help="GLUE split for --task [dev].")
@click.option("--glue-dir", type=click.Path(file_okay=False, path_type=Path), help="GLUE data folder [$BCT_GLUE_DIR].")
@click.option("--text-column", "text_columns", multiple=True,
              help="Text column(s) of --data, once or twice for pairs [text or sentence, then text_b or sentence2].")
@click.option("--label-column", help="Label column of --data [label].")
@click.option("--tokenizer", type=click.Path(file_okay=False, path_type=Path),
              help="Hugging Face tokenizer folder [the folder REFERENCE was exported from].")
@click.option("--limit", type=click.IntRange(min=1), help="Score only the first N examples.")
@click.option("--max-drop", type=float, help="Exit with status 1 when the task metric drops by more points than this.")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def validate_command(reference: Path, candidate: Path, **options) -> None:
    """Compare CANDIDATE with the float model REFERENCE: outputs on the same inputs, or a task metric."""
    _check_validate_options(options)
    if options["task"] or options["data"]:
        _validate_task(reference, candidate, options)
        return
    feeds = load_feeds(options["inputs"]) if options["inputs"] is not None else None
    report = validate(reference, candidate, feeds=feeds, min_cosine=options["min_cosine"])
    layers = None
    if options["layers"]:
        from bct_onnx.layer_report import compare_layers

        layers = compare_layers(reference, candidate, feeds if feeds is not None else random_feeds(reference))
    click.echo(_format_validation(report, layers, as_json=options["as_json"]))
    if not report.passed:
        raise ValidationFailedError(f"an output's cosine is below {options['min_cosine']}")


_TASK_ONLY = {"split": "--split", "glue_dir": "--glue-dir", "text_columns": "--text-column",
              "label_column": "--label-column", "tokenizer": "--tokenizer", "limit": "--limit", "max_drop": "--max-drop"}
_OUTPUTS_ONLY = {"inputs": "--inputs", "min_cosine": "--min-cosine", "layers": "--layers"}


def _check_validate_options(options: dict) -> None:
    """Reject options that the chosen kind of validation would silently ignore."""

    def given(flags: dict[str, str]) -> str:
        return ", ".join(flag for name, flag in flags.items() if options[name] not in (None, False, ()))

    if options["min_cosine"] is not None and math.isnan(options["min_cosine"]):
        raise click.BadParameter("must be a number from -1 to 1", param_hint="--min-cosine")
    if options["task"] and options["data"]:
        raise click.UsageError("--task and --data exclude each other: score a GLUE task or your own file")
    if options["task"] or options["data"]:
        if given(_OUTPUTS_ONLY):
            raise click.UsageError(f"{given(_OUTPUTS_ONLY)}: output comparison options; leave them out with --task/--data")
    elif given(_TASK_ONLY):
        raise click.UsageError(f"{given(_TASK_ONLY)}: task scoring options; they need --task or --data")


def _format_validation(report, layers, *, as_json: bool) -> str:
    from bct_onnx.layer_report import format_layers

    if as_json:
        data = json.loads(report.to_json())
        if layers is not None:
            data["layers"] = [dataclasses.asdict(row) for row in layers]
        return json.dumps(data, indent=2)
    return report.format_table() + ("\n\n" + format_layers(layers) if layers is not None else "")


def _validate_task(reference: Path, candidate: Path, options: dict) -> None:
    from bct_onnx.glue import load_glue_split, load_labelled_file
    from bct_onnx.task_validation import validate_task

    kind = None
    if options["data"]:
        labelled = load_labelled_file(options["data"], text_columns=tuple(options["text_columns"]) or None,
                                      label_column=options["label_column"] or "label")
        examples, kind = list(labelled.examples), labelled.kind
    else:
        examples = load_glue_split(options["task"], options["split"] or "dev", glue_dir=options["glue_dir"])
    examples = examples[: options["limit"]] if options["limit"] else examples
    report = validate_task(reference, candidate, examples, task=options["task"], kind=kind,
                           tokenizer=options["tokenizer"], max_drop=options["max_drop"])
    click.echo(report.to_json() if options["as_json"] else report.format_table())
    if not report.passed:
        raise ValidationFailedError(f"the {report.metric} dropped by {report.drop:.2f} points, more than {report.max_drop}")


@main.command("finetune")
@click.argument("task")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="ONNX file to write the fine-tuned sequence classifier to.")
@click.option("--model", "model_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Hugging Face model folder to start from [the built-in MiniLM-L6].")
@click.option("--glue-dir", type=click.Path(file_okay=False, path_type=Path), help="GLUE data folder [$BCT_GLUE_DIR].")
@click.option("--epochs", type=float, default=3.0, show_default=True, help="Passes over the training split.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Examples per step.")
@click.option("--learning-rate", type=float, default=1e-4, show_default=True, help="Peak AdamW learning rate.")
@click.option("--max-length", type=click.IntRange(min=8), default=128, show_default=True, help="Tokens per example.")
@click.option("--seed", type=int, default=42, show_default=True, help="Seed for initialisation and shuffling.")
@click.option("--train-limit", type=click.IntRange(min=1), help="Train on the first N examples only.")
@click.pass_context
def finetune_command(ctx: click.Context, task: str, output: Path, model_dir: Path | None, glue_dir: Path | None,
                     **hyperparameters) -> None:
    """Fine-tune a checkpoint on GLUE TASK on the CPU (cached), then export it to ONNX."""
    from bct_onnx.export import ExportConfig, Task, default_model_dir, export_model
    from bct_onnx.finetune import FinetuneConfig, finetune

    _quiet_export_libraries(ctx)
    try:
        config = FinetuneConfig(task=task, **hyperparameters)
    except ValueError as error:
        raise click.BadParameter(str(error)) from error
    with _progress_bar("fine-tuning", unit="step") as progress:
        checkpoint = finetune(model_dir or default_model_dir(), config, glue_dir=glue_dir, progress=progress)
    path = export_model(checkpoint, output, config=ExportConfig(task=Task.SEQUENCE_CLASSIFICATION))
    click.echo(f"fine-tuned checkpoint: {checkpoint}\nexported to {path}")


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
@add_options(COMPRESS_OPTIONS)
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
