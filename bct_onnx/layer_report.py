"""Where the error comes from: intermediate values of the compressed graph against float32.

Every value that both graphs contain under one name (the outputs of the float graph's nodes)
is read from both runs and compared. Where compression inserted a quantizer on a value, the
dequantized copy is compared instead, so each row shows the error in the value that the next node reads.
Rows come in the float graph's node order, so the row where the SQNR drops is the block that
hurts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import onnx

from bct_onnx.report import sqnr_db
from bct_onnx.validate import row_cosine, session_with_outputs

# Name of the DequantizeLinear output that the activation pass inserts after value ``v``.
QUANTIZED_COPY = "{name}/DequantizeLinear_output"


@dataclass(frozen=True, kw_only=True)
class LayerComparison:
    """The error of one intermediate value."""

    name: str
    op: str  # the float graph's op that produces the value
    sqnr_db: float
    cosine: float


def compare_layers(
    reference_path: str | os.PathLike, candidate_path: str | os.PathLike, feeds: dict[str, np.ndarray]
) -> list[LayerComparison]:
    """Run both models on ``feeds`` and compare every float intermediate value they share."""
    reference = onnx.load_model(str(reference_path))
    candidate = onnx.load_model(str(candidate_path))
    candidate_values = {output for node in candidate.graph.node for output in node.output}
    pairs: dict[str, tuple[str, str]] = {}  # reference name -> (candidate name, op)
    for node in reference.graph.node:
        for name in node.output:
            copy = QUANTIZED_COPY.format(name=name)
            if copy in candidate_values:
                pairs[name] = (copy, node.op_type)
            elif name in candidate_values and node.op_type not in ("Constant", "Shape"):
                pairs[name] = (name, node.op_type)

    expected = _run_with_outputs(reference, list(pairs), feeds)
    actual = _run_with_outputs(candidate, [copy for copy, _ in pairs.values()], feeds)
    rows = []
    for name, (copy, op) in pairs.items():
        want, got = expected[name], actual[copy]
        if want.dtype.kind != "f" or want.shape != got.shape or want.size == 0:
            continue
        rows_want = want.reshape(-1, want.shape[-1] if want.ndim else 1).astype(np.float64)
        rows_got = got.reshape(rows_want.shape).astype(np.float64)
        cosine = float(np.mean(row_cosine(rows_want, rows_got)))
        rows.append(LayerComparison(name=name, op=op, sqnr_db=sqnr_db(want, got.astype(np.float64)), cosine=cosine))
    return rows


def format_layers(rows: list[LayerComparison]) -> str:
    """Return the comparison as a plain-text table."""
    header = f"{'value':<64} {'op':<20} {'SQNR dB':>8} {'cosine':>9}"
    lines = [header, "-" * len(header)]
    for row in rows:
        name = row.name if len(row.name) <= 64 else "…" + row.name[-63:]
        lines.append(f"{name:<64} {row.op:<20} {row.sqnr_db:>8.1f} {row.cosine:>9.5f}")
    return "\n".join(lines)


def _run_with_outputs(model: onnx.ModelProto, names: list[str], feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    wanted = list(dict.fromkeys(names))
    return dict(zip(wanted, session_with_outputs(model, wanted).run(wanted, feeds)))
