"""Shared pieces of the MiniLM-L6 benchmarks: export cache, STS-B, conversion, latency."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from scipy.stats import spearmanr

from bct_onnx.export import ExportConfig, default_model_dir, export_model
from bct_onnx.modelio import model_file_bytes
from bct_onnx.validate import row_cosine

REPO = Path(__file__).resolve().parents[1]
DEFAULT_GLUE_DIR = Path(os.environ.get("BCT_GLUE_DIR", REPO.parent / "shared" / "data" / "glue"))
CACHE_DIR = Path(os.environ.get("BCT_CACHE_DIR", Path.home() / ".cache" / "bct-onnx"))
LATENCY_RUNS = 20

# ONNX Runtime keeps DequantizeLinear nodes unfolded so that its QDQ fusions can see them. This
# session option turns those optimizations off, so constant folding dequantizes every weight
# once at load: float32 speed and memory, with the small file on disk.
FOLD_WEIGHTS = {"session.disable_quant_qdq": "1"}


@dataclass(frozen=True)
class Conversion:
    path: Path
    seconds: float
    peak_rss_mib: float


def cached_export() -> Path:
    path = CACHE_DIR / "minilm-l6-feature-extraction.onnx"
    if not path.exists():
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        export_model(default_model_dir(), path, config=ExportConfig())
    return path


def load_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_model_dir())


def read_stsb(path: Path) -> tuple[list[str], np.ndarray]:
    """Return the 2·N sentences of STS-B dev (all first sentences, then all second) and N scores."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    first = [row["sentence1"] for row in rows]
    second = [row["sentence2"] for row in rows]
    return first + second, np.array([float(row["score"]) for row in rows])


def embed(model_path: Path, tokenizer, sentences: list[str], batch: int = 64) -> np.ndarray:
    """Return mean-pooled last_hidden_state embeddings of ``sentences``."""
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    names = {value.name for value in session.get_inputs()}
    pooled = []
    for start in range(0, len(sentences), batch):
        encoded = tokenizer(sentences[start : start + batch], padding=True, truncation=True, return_tensors="np")
        feeds = {name: encoded[name].astype(np.int64) for name in names}
        hidden = session.run(["last_hidden_state"], feeds)[0]
        mask = feeds["attention_mask"][..., None].astype(np.float32)
        pooled.append((hidden * mask).sum(axis=1) / mask.sum(axis=1))
    return np.concatenate(pooled)


def size_and_quality(label, float_path, path, float_embeddings, embeddings, gold) -> dict:
    pairs = len(gold)
    similarity = row_cosine(embeddings[:pairs], embeddings[pairs:])
    return {
        "model": label,
        "size": model_file_bytes(path),
        "ratio": model_file_bytes(float_path) / model_file_bytes(path),
        "cosine": float(np.mean(row_cosine(float_embeddings, embeddings))),
        "spearman": 100 * float(spearmanr(similarity, gold).statistic),
    }


def convert(float_path: Path, label: str, options: list[str]) -> Conversion:
    """Run ``bct-onnx compress`` in a child process and measure its time and peak memory."""
    output = CACHE_DIR / f"minilm-l6.{label}.bct.onnx"
    command = [sys.executable, "-m", "bct_onnx", "-q", "compress", str(float_path), "-o", str(output), *options]
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"compress failed for {label} (status {status})")
    return Conversion(output, seconds, usage.ru_maxrss / 1024)


CUSTOM_OPS = "bct_onnx.custom_ops"  # a variant key: register the integer operators' kernels


def custom_op_options() -> ort.SessionOptions:
    from bct_onnx.integer_ops import custom_op_session_options

    return custom_op_session_options()


def measure_latency(variants: dict[str, tuple[Path, dict]], tokenizer) -> dict[tuple[str, int], float]:
    """Return median milliseconds per run for each model at batch 1 and 16, sequence 128.

    The models take turns run by run, so load changes on the machine hit all of them alike.
    """
    sessions = {}
    for label, (path, config) in variants.items():
        options = custom_op_options() if config.get(CUSTOM_OPS) else ort.SessionOptions()
        options.intra_op_num_threads = os.cpu_count() or 1
        for key, value in config.items():
            if key != CUSTOM_OPS:
                options.add_session_config_entry(key, value)
        sessions[label] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    results = {}
    for batch in (1, 16):
        rng = np.random.default_rng(0)
        feeds = {
            "input_ids": rng.integers(1000, tokenizer.vocab_size, (batch, 128)).astype(np.int64),
            "attention_mask": np.ones((batch, 128), np.int64),
            "token_type_ids": np.zeros((batch, 128), np.int64),
        }
        timings = {label: [] for label in sessions}
        for label, session in sessions.items():
            session.run(None, feeds)  # warm-up
        for _ in range(LATENCY_RUNS):
            for label, session in sessions.items():
                start = time.perf_counter()
                session.run(None, feeds)
                timings[label].append(1000 * (time.perf_counter() - start))
        for label, values in timings.items():
            results[(label, batch)] = float(np.median(values))
    return results


def write_section(path: Path, key: str, text: str) -> None:
    """Replace the section between ``<!-- begin KEY -->`` and ``<!-- end KEY -->`` in ``path``.

    The section is appended when the file does not have it yet, so each benchmark rewrites only
    its own part of a shared page.
    """
    begin, end = f"<!-- begin {key} -->", f"<!-- end {key} -->"
    block = f"{begin}\n{text.rstrip()}\n{end}\n"
    current = path.read_text() if path.exists() else ""
    if begin in current and end in current:
        head, _, tail = current.partition(begin)
        _, _, tail = tail.partition(end)
        path.write_text(head + block + tail.lstrip("\n"))
    else:
        path.write_text(current + ("\n" if current else "") + block)


def format_latency_table(latencies: dict[tuple[str, int], float], note: str) -> list[str]:
    """Return Markdown lines: the latency of every variant at batch 1 and 16, and its ratio to float32."""
    lines = [
        "",
        f"Latency, median of {LATENCY_RUNS} runs, sequence 128 (models alternate run by run). {note}",
        "",
        "| model | batch 1 | batch 16 | batch 1 vs fp32 | batch 16 vs fp32 |",
        "|---|---:|---:|---:|---:|",
    ]
    for label in dict.fromkeys(label for label, _ in latencies):
        one, sixteen = latencies[(label, 1)], latencies[(label, 16)]
        lines.append(
            f"| {label} | {one:.1f} ms | {sixteen:.1f} ms | {one / latencies[('float32', 1)]:.2f}x | "
            f"{sixteen / latencies[('float32', 16)]:.2f}x |"
        )
    return lines


def compress_and_score(float_path: Path, recipes: dict[str, list[str]], glue_dir: Path):
    """Compress the float model with each recipe's CLI options and score every model on STS-B dev.

    Returns the rows of ``size_and_quality`` (float32 first), the conversions by label, and the
    tokenizer for later latency runs.
    """
    sentences, gold = read_stsb(glue_dir / "STS-B" / "dev.tsv")
    tokenizer = load_tokenizer()
    float_embeddings = embed(float_path, tokenizer, sentences)
    rows = [size_and_quality("float32", float_path, float_path, float_embeddings, float_embeddings, gold)]
    conversions = {}
    for label, options in recipes.items():
        conversions[label] = convert(float_path, label, options)
        embeddings = embed(conversions[label].path, tokenizer, sentences)
        rows.append(size_and_quality(label, float_path, conversions[label].path, float_embeddings, embeddings, gold))
    return rows, conversions, tokenizer
