"""Small helpers over onnx-graphsurgeon that hide its naming and track inserted nodes.

In onnx-graphsurgeon a value's ``inputs`` are the nodes that produce it and its ``outputs`` are
the nodes that consume it. The helpers here use the ONNX words instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx_graphsurgeon as gs
from onnx import numpy_helper
from onnx_graphsurgeon.ir.tensor import LazyValues

# Key of the node metadata entry that records which pass inserted a node.
CREATED_BY_KEY = "bct_onnx.pass"


def producer(value: gs.Tensor) -> gs.Node | None:
    """Return the node that produces ``value``, or None for graph inputs and constants."""
    return value.inputs[0] if value.inputs else None


def consumers(value: gs.Tensor) -> list[gs.Node]:
    """Return the nodes that read ``value``."""
    return list(value.outputs)


def constant_array(value: gs.Tensor) -> np.ndarray | None:
    """Return the values of a constant (initializer), or None when ``value`` is computed."""
    if isinstance(value, gs.Constant):
        return np.asarray(value.values)
    return None


class NodeFactory:
    """Creates nodes and values with unique names, and records the nodes it created.

    Every name is ``<anchor>/<suffix>``, where the anchor is the node or value being rewritten,
    so a graph viewer groups inserted nodes with what they replace. The pass that made a node
    goes into the node's metadata (``CREATED_BY_KEY``) rather than into its name, because long
    names cost about 1% of a compressed MiniLM-L6 file.
    """

    def __init__(self, graph: gs.Graph, pass_name: str) -> None:
        self._graph = graph
        self._pass_name = pass_name
        self._taken = {node.name for node in graph.nodes} | set(graph.tensors().keys())
        self.created_nodes: list[str] = []

    @property
    def created_by(self) -> dict[str, str]:
        """Map every node this factory created to the name of its pass."""
        return dict.fromkeys(self.created_nodes, self._pass_name)

    def name(self, anchor: str, suffix: str) -> str:
        """Return a name not yet used in the graph."""
        base = f"{anchor}/{suffix}"
        candidate, index = base, 1
        while candidate in self._taken:
            candidate = f"{base}_{index}"
            index += 1
        self._taken.add(candidate)
        return candidate

    def constant(self, anchor: str, suffix: str, values: np.ndarray) -> gs.Constant:
        """Return a new initializer holding ``values``.

        The values are converted to a TensorProto here because onnx-graphsurgeon 0.6 writes
        INT4 and UINT4 arrays one byte per value instead of packing two values per byte.
        """
        name = self.name(anchor, suffix)
        return gs.Constant(name, values=LazyValues(numpy_helper.from_array(values, name)))

    def node(
        self,
        op: str,
        anchor: str,
        inputs: Sequence[gs.Tensor],
        *,
        attrs: dict | None = None,
        output: gs.Variable | None = None,
        domain: str | None = None,
    ) -> gs.Variable:
        """Append an ``op`` node to the graph and return its (single) output value."""
        name = self.name(anchor, op)
        if output is None:
            output = gs.Variable(self.name(anchor, f"{op}_output"))
        node = gs.Node(
            op, name=name, attrs=dict(attrs or {}), inputs=list(inputs), outputs=[output], domain=domain
        )
        self._graph.nodes.append(node)
        self.created_nodes.append(name)
        return output
