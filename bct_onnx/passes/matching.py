"""Match results and small structural checks shared by the pattern rules.

A rule's ``match`` function starts at one anchor node and returns either a match, which
carries every fact the rewrite needs, or a ``NoMatch`` that gives the reason and the node where the check failed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from bct_onnx.graph import constant_array, consumers, producer

# Relative tolerance for recognising constants such as 0.5, 1, sqrt(2) and 1/sqrt(2), which
# exporters write in float32 or float16.
CONSTANT_TOLERANCE = 1e-3


@dataclass(frozen=True)
class NoMatch:
    """The reason a rule does not apply, and the node where the check failed."""

    reason: str
    node: str = ""

    def __bool__(self) -> bool:
        return False


def is_scalar(value: gs.Tensor, expected: float) -> bool:
    """Return True when ``value`` is a constant whose every element is ``expected``."""
    array = constant_array(value)
    if array is None or array.size == 0:
        return False
    return bool(np.allclose(array.astype(np.float64), expected, rtol=CONSTANT_TOLERANCE, atol=0.0))


def other_input(node: gs.Node, value: gs.Tensor) -> gs.Tensor | None:
    """Return the input of a two-input node that is not ``value``, or None when neither is."""
    if len(node.inputs) != 2:
        return None
    first, second = node.inputs
    if first is value:
        return second
    if second is value:
        return first
    return None


def sole_consumer(value: gs.Tensor, op: str | tuple[str, ...]) -> gs.Node | None:
    """Return the only node reading ``value`` when it is of type ``op``."""
    readers = consumers(value)
    ops = (op,) if isinstance(op, str) else op
    if len(readers) == 1 and readers[0].op in ops:
        return readers[0]
    return None


def produced_by(value: gs.Tensor, op: str | tuple[str, ...]) -> gs.Node | None:
    """Return the producer of ``value`` when it is of type ``op``."""
    node = producer(value)
    ops = (op,) if isinstance(op, str) else op
    return node if node is not None and node.op in ops else None


def reduces_last_axis(node: gs.Node, rank: int | None) -> bool:
    """Return True when a ReduceMean-like node reduces only the last axis, keeping dims."""
    axes = node.attrs.get("axes")
    if axes is None and len(node.inputs) > 1:
        axes = constant_array(node.inputs[1])
    if axes is None or not node.attrs.get("keepdims", 1):
        return False
    axes = [int(axis) for axis in np.atleast_1d(axes)]
    if len(axes) != 1:
        return False
    return axes[0] == -1 or (rank is not None and axes[0] == rank - 1)


def value_rank(value: gs.Tensor) -> int | None:
    """Return the rank of ``value`` when shape inference has inferred it."""
    shape = getattr(value, "shape", None)
    return len(shape) if shape is not None else None
