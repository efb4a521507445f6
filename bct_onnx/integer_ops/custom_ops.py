"""ONNX Runtime kernels of the integer operators, registered as onnxruntime-extensions Python ops.

``custom_op_session_options()`` registers one Python kernel per operator with
onnxruntime-extensions (which serves Python kernels in domain ``ai.onnx.contrib`` only) on its
first call, then returns session options that load the extensions library. A session created
with them runs these kernels in place of the model's function bodies. Each kernel calls the
NumPy reference kernel, so the two agree bit for bit by construction.

Registration waits for that first call because onnxruntime-extensions is slow to import and
because registering kernels after its library is loaded into a session crashes ONNX Runtime
1.32: created through this function, the order is always right.
"""

from __future__ import annotations

import collections

import numpy as np
import onnxruntime

from bct_onnx.integer_ops.reference import integer_gelu, integer_layer_norm, integer_softmax

# Calls of each kernel in this process, by op type. Tests read it to prove that ONNX Runtime
# ran the Python kernel and not the function body.
kernel_calls: collections.Counter[str] = collections.Counter()

_registered = False


def custom_op_session_options() -> onnxruntime.SessionOptions:
    """Create ONNX Runtime session options that run the integer operators' Python kernels.

    Raises:
        ImportError: onnxruntime-extensions is not installed.
    """
    try:
        import onnxruntime_extensions
    except ImportError as error:
        raise ImportError(
            "the integer operators' custom-op kernels need onnxruntime-extensions, which is not "
            "installed; run `pip install onnxruntime-extensions`, or create the session without "
            "custom-op options to run the function bodies"
        ) from error
    register_kernels()
    options = onnxruntime.SessionOptions()
    options.register_custom_ops_library(onnxruntime_extensions.get_library_path())
    return options


def _run_gelu(x: np.ndarray, table: np.ndarray, group: np.ndarray) -> np.ndarray:
    kernel_calls["IntegerGelu"] += 1
    return integer_gelu(x, table, group)


def _run_softmax(x: np.ndarray, table: np.ndarray) -> np.ndarray:
    kernel_calls["IntegerSoftmax"] += 1
    return integer_softmax(x, table)


def _run_layer_norm(
    x: np.ndarray,
    align: np.ndarray,
    multiplier: np.ndarray,
    bias: np.ndarray,
    epsilon_term: np.ndarray,
    *,
    fraction_bits: int,
    multiplier_bits: int,
) -> np.ndarray:
    kernel_calls["IntegerLayerNormalization"] += 1
    return integer_layer_norm(
        x, align, multiplier, bias, epsilon_term, fraction_bits=fraction_bits, multiplier_bits=multiplier_bits
    )


def register_kernels() -> None:
    """Register the three Python kernels with onnxruntime-extensions; later calls do nothing.

    Call it before your own ``SessionOptions`` load the extensions library, or let
    ``custom_op_session_options()`` do both.

    Raises:
        ImportError: onnxruntime-extensions is not installed.
    """
    global _registered
    if _registered:
        return
    import onnxruntime_extensions

    py_op = onnxruntime_extensions.PyOp
    declare = onnxruntime_extensions.onnx_op
    declare(
        op_type="IntegerGelu",
        inputs=[py_op.dt_int8, py_op.dt_int8, py_op.dt_int64],
        outputs=[py_op.dt_int8],
    )(_run_gelu)
    declare(
        op_type="IntegerSoftmax",
        inputs=[py_op.dt_int8, py_op.dt_int32],
        outputs=[py_op.dt_uint8],
    )(_run_softmax)
    declare(
        op_type="IntegerLayerNormalization",
        inputs=[py_op.dt_int8] + [py_op.dt_int64] * 4,
        outputs=[py_op.dt_int8],
        attrs={"fraction_bits": py_op.dt_int64, "multiplier_bits": py_op.dt_int64},
    )(_run_layer_norm)
    _registered = True
