"""Integer-only GELU, Softmax and LayerNormalization for BCT-compressed models.

Each operator lives in domain ``ai.onnx.contrib`` (version 1) and has three implementations
that return the same bits. The NumPy reference kernel defines it. Stock ONNX Runtime runs the
ONNX function body that the model stores. A session that loads the onnxruntime-extensions
library runs the Python kernel instead.
docs/operators.md describes the arithmetic, the overflow bounds and the error bounds.

``custom_op_session_options()`` registers the Python kernels on first use (``register_kernels``).
"""

from bct_onnx.integer_ops.custom_ops import custom_op_session_options, kernel_calls, register_kernels
from bct_onnx.integer_ops.functions import (
    DOMAIN,
    DOMAIN_VERSION,
    OP_TYPES,
    function_proto,
    function_protos,
    make_node,
)
from bct_onnx.integer_ops.reference import (
    LayerNormParameters,
    gelu_table,
    integer_gelu,
    integer_layer_norm,
    integer_softmax,
    integer_sqrt,
    layer_norm_parameters,
    max_softmax_length,
    softmax_table,
)

__all__ = [
    "DOMAIN",
    "DOMAIN_VERSION",
    "OP_TYPES",
    "LayerNormParameters",
    "custom_op_session_options",
    "function_proto",
    "function_protos",
    "gelu_table",
    "integer_gelu",
    "integer_layer_norm",
    "integer_softmax",
    "integer_sqrt",
    "kernel_calls",
    "layer_norm_parameters",
    "make_node",
    "max_softmax_length",
    "register_kernels",
    "softmax_table",
]
