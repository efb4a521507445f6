"""GLUE benchmark: BCT against float32 and ONNX Runtime's own quantizers, in one run and one table.

For each task (SST-2, MRPC, CoLA, STS-B, RTE) the built-in MiniLM-L6 is fine-tuned on the task's
train split (cached under $BCT_CACHE_DIR), exported to ONNX, and turned into:

* float32, the reference;
* ONNX Runtime ``quantize_dynamic`` (int8 weights, dynamic int8 activations);
* ONNX Runtime ``MatMulNBitsQuantizer`` (4-bit blocks of 32, symmetric);
* BCT W8A8 and the BCT default recipe, calibrated on 256 train examples of the task.

Each is scored on the dev split with the GLUE metric, and timed at batch 1 and 32 (sequence 128,
same threads, warmed up, models alternating run by run). The table goes to
``docs/results/glue.md`` with this command and the machine, and a plot of drop against ratio to
``docs/results/glue.png``.

Usage: python tools/bench_glue.py [--tasks rte,mrpc,stsb,cola,sst2] [--glue-dir DIR] [--train-limit N]
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from benchlib import DEFAULT_GLUE_DIR, REPO, convert

from bct_onnx.export import ExportConfig, Task, default_model_dir, export_model
from bct_onnx.finetune import FinetuneConfig, cache_dir, finetune
from bct_onnx.glue import get_task, load_glue_split
from bct_onnx.metrics import task_metrics
from bct_onnx.modelio import model_file_bytes
from bct_onnx.task_validation import predict, tokenize_examples

DEFAULT_TASKS = ("rte", "mrpc", "stsb", "cola", "sst2")  # shortest fine-tuning first
METHODS = ("fp32", "ort-dynamic-int8", "ort-matmul-4bit", "bct-w8a8", "bct")
TASK_EPOCHS = {"sst2": 1.0}  # one pass over SST-2's 67k sentences already gives a stable model
LATENCY_RUNS = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(DEFAULT_TASKS), help="comma-separated GLUE tasks")
    parser.add_argument("--glue-dir", type=Path, default=DEFAULT_GLUE_DIR, help="GLUE-format data folder")
    parser.add_argument("--train-limit", type=int, help="fine-tune on the first N train examples only")
    parser.add_argument("--epochs", type=float,
                        help="fine-tuning epochs for every task [3; SST-2, with 67k examples: 1]")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "results" / "glue.md")
    args = parser.parse_args()

    cache = cache_dir()
    started_empty = not any(cache.glob("*/*"))
    rows = []
    for task in args.tasks.split(","):
        rows += benchmark_task(get_task(task).name, args)
        write_results(rows, args.output, cache, started_empty)  # after every task: a long run leaves partial results
    print(args.output.read_text())


def task_epochs(task: str, args) -> float:
    return args.epochs or TASK_EPOCHS.get(task, 3.0)


def benchmark_task(task: str, args) -> list[dict]:
    config = FinetuneConfig(task=task, epochs=task_epochs(task, args), train_limit=args.train_limit)
    checkpoint = finetune(default_model_dir(), config, glue_dir=args.glue_dir, progress=_print_progress(task))
    folder = cache_dir() / "glue" / checkpoint.name
    folder.mkdir(parents=True, exist_ok=True)
    float_path = folder / "fp32.onnx"
    if not float_path.exists():
        export_model(checkpoint, float_path, config=ExportConfig(task=Task.SEQUENCE_CLASSIFICATION))
    paths = build_methods(float_path, folder, task, args.glue_dir)

    examples = load_glue_split(task, "dev", glue_dir=args.glue_dir)
    batches = tokenize_examples(examples, checkpoint, 128)
    gold = np.array([example.label for example in examples])
    glue_task = get_task(task)
    latencies = measure_latency(paths, checkpoint)
    rows, reference = [], None
    for method, path in paths.items():
        metrics = task_metrics(glue_task, predict(path, batches, glue_task.kind), gold)
        score = 100 * metrics[glue_task.primary_metric]
        reference = score if reference is None else reference
        rows.append({
            "task": task, "epochs": config.epochs, "method": method, "metric": glue_task.primary_metric, "score": score,
            "drop": reference - score, "size": model_file_bytes(path),
            "ratio": model_file_bytes(float_path) / model_file_bytes(path),
            "batch1": latencies[(method, 1)], "batch32": latencies[(method, 32)],
        })
    return rows


def build_methods(float_path: Path, folder: Path, task: str, glue_dir: Path) -> dict[str, Path]:
    """Return the model file of every method, building those not cached yet."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    paths = {method: folder / f"{method}.onnx" for method in METHODS}
    paths["fp32"] = float_path
    if not paths["ort-dynamic-int8"].exists():
        quantize_dynamic(str(float_path), str(paths["ort-dynamic-int8"]), weight_type=QuantType.QInt8)
    if not paths["ort-matmul-4bit"].exists():
        quantizer = MatMulNBitsQuantizer(str(float_path), block_size=32, is_symmetric=True)
        quantizer.process()
        quantizer.model.save_model_to_file(str(paths["ort-matmul-4bit"]))
    calibration = ["--calibration", f"glue:{task}", "--glue-dir", str(glue_dir), "--calibration-samples", "256"]
    for method, recipe in (("bct-w8a8", "w8a8"), ("bct", "bct")):
        if not paths[method].exists():
            converted = convert(float_path, f"{task}.{method}", ["--recipe", recipe, *calibration])
            converted.path.replace(paths[method])
    return paths


def measure_latency(paths: dict[str, Path], tokenizer_dir: Path) -> dict[tuple[str, int], float]:
    """Return the median milliseconds per run at batch 1 and 32, sequence 128."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    sessions = {method: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                for method, path in paths.items()}
    results = {}
    for batch in (1, 32):
        rng = np.random.default_rng(0)
        feeds = {"input_ids": rng.integers(1000, 30000, (batch, 128)).astype(np.int64),
                 "attention_mask": np.ones((batch, 128), np.int64),
                 "token_type_ids": np.zeros((batch, 128), np.int64)}
        timings = {method: [] for method in sessions}
        for session in sessions.values():
            session.run(None, feeds)
        for _ in range(LATENCY_RUNS):
            for method, session in sessions.items():
                start = time.perf_counter()
                session.run(None, feeds)
                timings[method].append(1000 * (time.perf_counter() - start))
        results.update({(method, batch): float(np.median(values)) for method, values in timings.items()})
    return results


def write_results(rows: list[dict], output: Path, cache: Path, started_empty: bool) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    command = "python tools/bench_glue.py " + shlex.join(sys.argv[1:])
    cache_note = (f"The cache `{cache}` was empty at the start, so every model was fine-tuned, exported and "
                  "compressed in this run." if started_empty else
                  f"Checkpoints and models already in the cache `{cache}` were reused.")
    epochs = "; ".join(f"{task} {row['epochs']:g}" for task, row in {row["task"]: row for row in rows}.items())
    lines = [
        "# GLUE: BCT against float32 and ONNX Runtime's quantizers (MiniLM-L6)",
        "",
        f"Produced by `{command.strip()}` on {platform.machine()} with {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, onnxruntime {ort.__version__}. {cache_note}",
        "",
        "Each task's model is the built-in MiniLM-L6 fine-tuned on the task's train split "
        f"(epochs: {epochs}). The BCT models are calibrated on 256 train examples. "
        "Scores are the GLUE metric on the dev split × 100; drop is float32 minus the method, in "
        f"points; latency is the median of {LATENCY_RUNS} runs at sequence 128, all methods with "
        "the same threads and alternating run by run.",
        "",
        "| task | method | metric | score | drop | file size | ratio | batch 1 | batch 32 |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['task']} | {row['method']} | {row['metric']} | {row['score']:.2f} | {row['drop']:.2f} | "
            f"{row['size'] / 2**20:.2f} MiB | {row['ratio']:.3f}x | {row['batch1']:.1f} ms | {row['batch32']:.1f} ms |"
        )
    lines += ["", *goal_lines(rows)]
    output.write_text("\n".join(lines) + "\n\n![accuracy drop against compression ratio](glue.png)\n")
    plot(rows, output.with_suffix(".png"))


def goal_lines(rows: list[dict]) -> list[str]:
    """Return the goals of the benchmark, each with what this run measured and whether it is met."""
    def of(method: str) -> list[dict]:
        return [row for row in rows if row["method"] == method]

    def verdict(met: bool) -> str:
        return "met" if met else "**missed**"

    bct, w8a8, dynamic = of("bct"), of("bct-w8a8"), of("ort-dynamic-int8")
    worst = max(bct, key=lambda row: row["drop"])
    mean_w8a8 = float(np.mean([row["drop"] for row in w8a8]))
    mean_dynamic = float(np.mean([row["drop"] for row in dynamic]))
    lines = [
        "Goals:",
        "",
        f"- BCT ratio at least 7.9x: smallest {min(row['ratio'] for row in bct):.3f}x, "
        f"{verdict(all(row['ratio'] >= 7.9 for row in bct))}.",
        f"- BCT drop at most 0.9 points on every task: largest {worst['drop']:.2f} ({worst['task']}), "
        f"{verdict(worst['drop'] <= 0.9)}.",
        f"- BCT W8A8 mean drop at most 0.5 points: {mean_w8a8:.2f}, {verdict(mean_w8a8 <= 0.5)}.",
    ]
    for label, method in (("BCT", bct), ("BCT W8A8", w8a8)):
        mean = float(np.mean([row["drop"] for row in method]))
        ratio = min(row["ratio"] for row in method)
        better = mean < mean_dynamic and ratio > max(row["ratio"] for row in dynamic)
        lines.append(f"- {label} smaller mean drop than quantize_dynamic ({mean:.2f} against {mean_dynamic:.2f}) "
                     f"at a higher ratio: {verdict(better)}.")
    return lines


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for method in METHODS[1:]:
        points = [row for row in rows if row["method"] == method]
        axes.scatter([row["ratio"] for row in points], [row["drop"] for row in points], label=method)
        for row in points:
            axes.annotate(row["task"], (row["ratio"], row["drop"]), fontsize=7, xytext=(3, 3),
                          textcoords="offset points")
    axes.axhline(0.9, color="grey", linestyle="--", linewidth=0.8)
    axes.set_xlabel("compression ratio (whole file)")
    axes.set_ylabel("drop of the GLUE metric (points)")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _print_progress(task: str):
    def report(done: int, total: int) -> None:
        if done == total or done % 100 == 0:
            print(f"fine-tuning {task}: step {done}/{total}", file=sys.stderr, flush=True)

    return report


if __name__ == "__main__":
    main()
