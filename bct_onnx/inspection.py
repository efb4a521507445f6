"""Read-only inspection: a model's contents and what BCT would compress in it."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from bct_onnx.config import CompressConfig
from bct_onnx.graph import constant_array
from bct_onnx.modelio import load_model
from bct_onnx.opset import upgrade_opset
from bct_onnx.passes import FoldConstants, PassContext
from bct_onnx.passes.quantize_embeddings_blockwise import explain_embedding_skip
from bct_onnx.passes.quantize_weights_blockwise import explain_weight_skip, weight_reduction_axis
from bct_onnx.report import format_bytes


@dataclass(frozen=True, kw_only=True)
class NodeVerdict:
    """Whether BCT compresses the constant of one MatMul, Gemm or Gather, and why not."""

    node: str
    op: str
    constant: str | None
    compressed: bool
    reason: str | None


@dataclass(frozen=True, kw_only=True)
class Inspection:
    """A model's operators, its parameter bytes by kind, and BCT's verdict on each candidate."""

    opset: dict[str, int]
    op_counts: dict[str, int]
    parameter_bytes: dict[str, int]
    verdicts: list[NodeVerdict] = field(default_factory=list)

    def format_text(self) -> str:
        """Return the inspection as plain text for a terminal."""
        lines = ["opset: " + ", ".join(f"{domain or 'ai.onnx'} {version}" for domain, version in self.opset.items())]
        lines.append("operators: " + ", ".join(f"{op} {count}" for op, count in sorted(self.op_counts.items())))
        lines.append("parameters:")
        lines += [f"  {kind:<22} {format_bytes(size):>10}" for kind, size in self.parameter_bytes.items()]
        compressed = [verdict for verdict in self.verdicts if verdict.compressed]
        lines.append(f"compressed by BCT: {len(compressed)} node(s)")
        lines += [f"  {verdict.op:<7} {verdict.node}  ({verdict.constant})" for verdict in compressed]
        kept = [verdict for verdict in self.verdicts if not verdict.compressed]
        lines.append(f"left in float: {len(kept)} node(s)")
        lines += [f"  {verdict.op:<7} {verdict.node}: {verdict.reason}" for verdict in kept]
        return "\n".join(lines)


def inspect_model(path: str | os.PathLike, *, config: CompressConfig = CompressConfig()) -> Inspection:
    """Load ``path`` and report what ``bct-onnx compress`` with ``config`` would compress."""
    model = load_model(path)
    opset = {entry.domain: entry.version for entry in model.opset_import}
    op_counts = Counter(node.op_type for node in model.graph.node)
    graph = gs.import_onnx(upgrade_opset(model))  # refuses the opsets that compress refuses
    FoldConstants().run(PassContext(graph=graph, config=config))
    verdicts = [_verdict(node, config) for node in graph.nodes if node.op in ("MatMul", "Gemm", "Gather")]
    return Inspection(
        opset=opset,
        op_counts=dict(op_counts),
        parameter_bytes=_parameter_bytes(graph),
        verdicts=verdicts,
    )


def _verdict(node: gs.Node, config: CompressConfig) -> NodeVerdict:
    if weight_reduction_axis(node) is not None:
        reason = explain_weight_skip(node, config.exclude)
        constant = node.inputs[1].name if len(node.inputs) > 1 else None
    elif not config.embeddings:
        reason, constant = "embeddings are not compressed (--no-embeddings)", node.inputs[0].name
    else:
        reason = explain_embedding_skip(node, config)
        constant = node.inputs[0].name
    return NodeVerdict(node=node.name, op=node.op, constant=constant, compressed=reason is None, reason=reason)


def _parameter_bytes(graph: gs.Graph) -> dict[str, int]:
    """Sum initializer bytes by the op that reads them: MatMul/Gemm weights, tables, the rest."""
    kinds: dict[str, str] = {}
    for node in graph.nodes:
        for index, value in enumerate(node.inputs):
            if constant_array(value) is None or value.name in kinds:
                continue
            if node.op in ("MatMul", "Gemm") and index == 1:
                kinds[value.name] = "MatMul/Gemm weights"
            elif node.op == "Gather" and index == 0:
                kinds[value.name] = "embedding tables"
    sizes: Counter[str] = Counter()
    for name, value in graph.tensors().items():
        if isinstance(value, gs.Constant):
            sizes[kinds.get(name, "other constants")] += int(np.asarray(value.values).nbytes)
    return dict(sizes)
