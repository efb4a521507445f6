"""Benchmark the BCT recipes on MiniLM-L6: STS-B agreement, calibration memory, latency.

Exports the built-in MiniLM-L6 (cached), compresses it with the default BCT recipe (4-bit
weights, 8-bit activations, integer GELU/Softmax/LayerNorm) and with W8A8, both calibrated on
256 STS-B train sentences of 128 tokens, and prints side by side with float32 and the
weights-only recipe:

* file size and ratio, and the integer operators in each graph;
* STS-B dev: mean cosine of mean-pooled sentence embeddings to float32, and the zero-shot
  Spearman correlation of the embeddings' cosine with the gold scores;
* peak resident memory of each ``bct-onnx compress`` child process, and the extra memory of
  calibration against the weights-only run;
* latency at batch 1 and 16, sequence 128, with the function bodies (stock ONNX Runtime) and
  with the integer operators' Python kernels registered.

Usage: python tools/bench_recipes.py [--glue-dir DIR] [--markdown docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import os
import platform
from collections import Counter
from pathlib import Path

import onnx
import onnxruntime as ort
from benchlib import (
    CUSTOM_OPS,
    DEFAULT_GLUE_DIR,
    cached_export,
    compress_and_score,
    format_latency_table,
    measure_latency,
    write_section,
)

CALIBRATION = ["--calibration", "glue:stsb", "--calibration-samples", "256", "--sequence-length", "128"]
INTEGER_OPS = ("IntegerGelu", "IntegerSoftmax", "IntegerLayerNormalization")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--glue-dir", type=Path, default=DEFAULT_GLUE_DIR, help="GLUE-format data folder")
    parser.add_argument("--markdown", type=Path, help="also write the results into this Markdown file")
    args = parser.parse_args()

    recipes = {
        "weights-only": ["--recipe", "weights-only"],
        "bct": ["--recipe", "bct", *CALIBRATION, "--glue-dir", str(args.glue_dir)],
        "w8a8": ["--recipe", "w8a8", *CALIBRATION, "--glue-dir", str(args.glue_dir)],
    }
    float_path = cached_export()
    rows, conversions, tokenizer = compress_and_score(float_path, recipes, args.glue_dir)

    variants = {"float32": (float_path, {})}
    for label in ("bct", "w8a8"):
        variants[f"{label}, function bodies"] = (conversions[label].path, {})
        variants[f"{label}, custom-op kernels"] = (conversions[label].path, {CUSTOM_OPS: "1"})
    latencies = measure_latency(variants, tokenizer)

    text = format_markdown(rows, conversions, latencies)
    print(text)
    if args.markdown:
        write_section(args.markdown, "recipes", text)


def integer_op_counts(path: Path) -> str:
    counts = Counter(node.op_type for node in onnx.load_model(str(path), load_external_data=False).graph.node)
    return ", ".join(f"{counts[op]} {op.removeprefix('Integer')}" for op in INTEGER_OPS)


def format_markdown(rows, conversions, latencies) -> str:
    baseline = conversions["weights-only"].peak_rss_mib
    lines = [
        "## BCT recipes on MiniLM-L6 (feature extraction)",
        "",
        "Produced by `python tools/bench_recipes.py --markdown docs/benchmarks.md` on "
        f"{platform.machine()} with {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"onnxruntime {ort.__version__}. Calibration: 256 STS-B train sentences, 128 tokens, MSE ranges.",
        "",
        "| model | file size | ratio | integer operators | mean cosine to fp32 (STS-B dev) "
        "| STS-B dev Spearman × 100 | drop vs fp32 |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    reference = rows[0]["spearman"]
    for row in rows:
        label = row["model"]
        ops = integer_op_counts(conversions[label].path) if label in conversions else "-"
        lines.append(
            f"| {label} | {row['size'] / 2**20:.2f} MiB | {row['ratio']:.3f}x | {ops} | {row['cosine']:.4f} | "
            f"{row['spearman']:.2f} | {reference - row['spearman']:.2f} |"
        )
    lines += ["", "| compress run | time | peak resident memory | extra over weights-only |", "|---|---:|---:|---:|"]
    for label, conversion in conversions.items():
        extra = conversion.peak_rss_mib - baseline
        lines.append(f"| {label} | {conversion.seconds:.1f} s | {conversion.peak_rss_mib:.0f} MiB | {extra:.0f} MiB |")
    lines += format_latency_table(
        latencies,
        "\"Custom-op kernels\" registers the onnxruntime-extensions library with the integer operators' Python kernels:",
    )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
