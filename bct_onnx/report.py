"""The compression report: one row per compressed tensor and the whole-file sizes."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True, kw_only=True)
class TensorReport:
    """Size and error of one compressed weight or embedding table."""

    name: str
    kind: str  # "matmul", "gemm" or "embedding"
    shape: tuple[int, ...]
    bits: int
    block_size: int
    bytes_before: int
    bytes_after: int  # codes, scales, zero points and scales of scales together
    scale_bytes: int  # the part of bytes_after spent on scales and zero points
    sqnr_db: float  # signal-to-quantization-noise ratio of the dequantized tensor


@dataclass(frozen=True, kw_only=True)
class CompressionReport:
    """The result of compressing one model file."""

    input_path: str
    output_path: str
    file_bytes_before: int
    file_bytes_after: int
    tensors: list[TensorReport] = field(default_factory=list)
    passes: dict[str, int] = field(default_factory=dict)  # pass name -> nodes rewritten

    @property
    def ratio(self) -> float:
        return self.file_bytes_before / self.file_bytes_after

    def to_json(self) -> str:
        """Return the report as JSON, with the ratio and scale overhead included."""
        data = asdict(self)
        data["ratio"] = round(self.ratio, 4)
        data["scale_bytes"] = sum(tensor.scale_bytes for tensor in self.tensors)
        for tensor in data["tensors"]:
            # JSON has no infinity: an exact round trip is written as null.
            if not math.isfinite(tensor["sqnr_db"]):
                tensor["sqnr_db"] = None
        return json.dumps(data, indent=2, allow_nan=False)

    def format_table(self) -> str:
        """Return the report as a plain-text table for a terminal."""
        header = f"{'tensor':<56} {'kind':<9} {'shape':<13} {'bits':>4} {'block':>5} {'before':>10} {'after':>10} {'SQNR dB':>8}"
        lines = [header, "-" * len(header)]
        for row in self.tensors:
            shape = "x".join(str(dim) for dim in row.shape)
            lines.append(
                f"{_shorten(row.name, 56):<56} {row.kind:<9} {shape:<13} {row.bits:>4} {row.block_size:>5} "
                f"{format_bytes(row.bytes_before):>10} {format_bytes(row.bytes_after):>10} {row.sqnr_db:>8.1f}"
            )
        scale_bytes = sum(row.scale_bytes for row in self.tensors)
        lines += [
            "",
            f"compressed tensors: {len(self.tensors)}, of which scales and zero points: {format_bytes(scale_bytes)}",
            f"file size: {format_bytes(self.file_bytes_before)} -> {format_bytes(self.file_bytes_after)} "
            f"(compression ratio {self.ratio:.3f}x)",
        ]
        return "\n".join(lines)


def sqnr_db(reference, approximation) -> float:
    """Return 10·log10(‖reference‖² / ‖reference − approximation‖²); +inf when exact."""
    signal = float((reference.astype("float64") ** 2).sum())
    noise = float(((reference.astype("float64") - approximation) ** 2).sum())
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def format_bytes(count: int) -> str:
    """Return ``count`` bytes in KiB or MiB with one decimal."""
    if count >= 1 << 20:
        return f"{count / (1 << 20):.1f} MiB"
    if count >= 1 << 10:
        return f"{count / (1 << 10):.1f} KiB"
    return f"{count} B"


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1) :]
