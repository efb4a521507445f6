"""The pass contract and the pipeline that runs passes in order."""

from __future__ import annotations

import abc
import logging
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from bct_onnx.calibration import ActivationScales
from bct_onnx.config import CompressConfig
from bct_onnx.report import TensorReport

logger = logging.getLogger(__name__)


@dataclass
class PassContext:
    """The state that passes share while they rewrite one graph."""

    graph: gs.Graph
    config: CompressConfig
    tensor_reports: list[TensorReport] = field(default_factory=list)
    created_by: dict[str, str] = field(default_factory=dict)  # inserted node name -> pass name
    calibration_batches: list[dict[str, np.ndarray]] | None = None  # input feeds, batch by batch
    activation_scales: dict[str, ActivationScales] = field(default_factory=dict)  # value name -> scales
    weight_input_moments: dict[str, np.ndarray] = field(default_factory=dict)  # MatMul input -> sum of v v^T
    functions: dict[str, onnx.FunctionProto] = field(default_factory=dict)  # op type -> function body


@dataclass(frozen=True)
class PassResult:
    """Counts of the nodes one pass rewrote and left unchanged."""

    pass_name: str
    rewritten: int
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count of unchanged nodes


class GraphPass(abc.ABC):
    """One rewrite of the graph; ``run`` checks its preconditions first, then rewrites."""

    name: str = ""

    @abc.abstractmethod
    def run(self, context: PassContext) -> PassResult:
        """Rewrite ``context.graph`` in place and return what changed."""


def run_pipeline(passes: list[GraphPass], context: PassContext) -> list[PassResult]:
    """Run ``passes`` in order on one graph, logging one line per pass."""
    results = []
    for graph_pass in passes:
        result = graph_pass.run(context)
        context.graph.cleanup().toposort()
        skipped = ", ".join(f"{count} {reason}" for reason, count in result.skipped.items())
        logger.info(
            "%s: rewrote %d%s", result.pass_name, result.rewritten, f" (left: {skipped})" if skipped else ""
        )
        results.append(result)
    return results
