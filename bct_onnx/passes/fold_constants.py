"""Folds computations on constants into initializers, so constant weights look constant.

Exporters often hand a weight to MatMul through ``Transpose``, ``Cast``, ``Reshape`` or a
``Constant`` node. Folding evaluates each such chain once (with ONNX Runtime, through
onnx-graphsurgeon) and replaces it by its result, so that the quantization passes see a plain
initializer. Shape computations on static shapes fold as well.
"""

from __future__ import annotations

import logging

from bct_onnx.passes.base import GraphPass, PassContext, PassResult

logger = logging.getLogger(__name__)

# Folded results larger than this stay as computations: a folded Expand or ConstantOfShape can
# be far larger than the graph that computes it.
_MAX_FOLDED_BYTES = 256 << 20


class FoldConstants(GraphPass):
    """Replaces every constant subgraph by the initializer it computes."""

    name = "fold_constants"

    def run(self, context: PassContext) -> PassResult:
        graph = context.graph
        before = len(graph.nodes)
        graph.fold_constants(size_threshold=_MAX_FOLDED_BYTES, error_ok=True)
        graph.cleanup(remove_unused_graph_inputs=False)
        return PassResult(self.name, before - len(graph.nodes), {})
