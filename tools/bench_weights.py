"""Benchmark weight compression on MiniLM-L6: size, STS-B agreement, conversion cost, latency.

Exports the built-in MiniLM-L6 (cached), compresses it with 4-bit and 8-bit weights, and prints
float32 and compressed numbers side by side:

* whole-file size and ratio;
* STS-B dev: mean cosine between float32 and compressed mean-pooled sentence embeddings, and
  the zero-shot Spearman correlation of the embeddings' cosine with the gold scores;
* conversion time and peak resident memory of ``bct-onnx compress`` (a child process);
* ONNX Runtime latency at batch 1 and 16, sequence 128, float32 and compressed in one run.

Usage: python tools/bench_weights.py [--glue-dir DIR] [--markdown docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

import onnxruntime as ort
from benchlib import (
    DEFAULT_GLUE_DIR,
    FOLD_WEIGHTS,
    cached_export,
    compress_and_score,
    format_latency_table,
    measure_latency,
    write_section,
)

RECIPES = {"4-bit": ["--weight-bits", "4"], "8-bit": ["--weight-bits", "8"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--glue-dir", type=Path, default=DEFAULT_GLUE_DIR, help="GLUE-format data folder")
    parser.add_argument("--markdown", type=Path, help="also write the results as Markdown to this file")
    args = parser.parse_args()

    float_path = cached_export()
    rows, conversions, tokenizer = compress_and_score(float_path, RECIPES, args.glue_dir)
    variants = {"float32": (float_path, {})}
    for label, conversion in conversions.items():
        variants[label] = (conversion.path, {})
        variants[f"{label}, weights folded at load"] = (conversion.path, FOLD_WEIGHTS)
    latencies = measure_latency(variants, tokenizer)

    text = format_markdown(rows, conversions, latencies)
    print(text)
    if args.markdown:
        write_section(args.markdown, "weights", text)


def format_markdown(rows, conversions, latencies) -> str:
    lines = [
        "## Weight compression of MiniLM-L6 (feature extraction)",
        "",
        "Produced by `python tools/bench_weights.py --markdown docs/benchmarks.md` on "
        f"{platform.machine()} with {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"onnxruntime {ort.__version__}.",
        "",
        "| model | file size | ratio | mean cosine to fp32 (STS-B dev) | STS-B dev Spearman × 100 |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['size'] / 2**20:.2f} MiB | {row['ratio']:.3f}x | "
            f"{row['cosine']:.4f} | {row['spearman']:.2f} |"
        )
    lines += ["", "| conversion | time | peak resident memory |", "|---|---:|---:|"]
    for label, conversion in conversions.items():
        lines.append(f"| {label} | {conversion.seconds:.1f} s | {conversion.peak_rss_mib:.0f} MiB |")
    lines += format_latency_table(
        latencies,
        "\"Weights folded at load\" sets the ONNX Runtime session option `session.disable_quant_qdq=1`, so each weight is dequantized once when the session starts:",
    )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
