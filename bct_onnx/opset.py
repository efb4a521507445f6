"""Bringing a model to the opset that blockwise DequantizeLinear needs."""

from __future__ import annotations

import logging

import onnx
from onnx import version_converter

from bct_onnx.errors import UnsupportedModelError

logger = logging.getLogger(__name__)

# onnx raises its own ConvertError (not a RuntimeError) for graphs the converter cannot read.
_CONVERT_ERROR = getattr(version_converter, "ConvertError", RuntimeError)

# DequantizeLinear gained block_size and INT4/UINT4 inputs in opset 21.
BLOCKWISE_OPSET = 21

# The oldest opset the upgrade is tested from: torch's TorchScript exporter starts at 14.
OLDEST_SUPPORTED_OPSET = 14

# Opset 21 models must declare IR version 10 or newer.
BLOCKWISE_IR_VERSION = 10


def default_opset(model: onnx.ModelProto) -> int:
    """Return the version of the default ("" or "ai.onnx") domain that ``model`` imports."""
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    raise UnsupportedModelError("model imports no version of the default ONNX domain")


def upgrade_opset(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return ``model`` at opset 21 or newer, converting older models with the ONNX converter.

    Raises:
        UnsupportedModelError: the opset is older than 14, newer than the installed onnx
            package supports, or the converter cannot upgrade one of the model's operators.
    """
    opset = default_opset(model)
    newest = onnx.defs.onnx_opset_version()
    if opset > newest:
        raise UnsupportedModelError(
            f"model opset {opset} is newer than this onnx package supports ({newest}); upgrade onnx"
        )
    if opset < OLDEST_SUPPORTED_OPSET:
        raise UnsupportedModelError(
            f"model opset {opset} is not supported (oldest: {OLDEST_SUPPORTED_OPSET}); "
            "export the model again at opset 14 or newer"
        )
    if opset < BLOCKWISE_OPSET:
        logger.info("upgrading the model from opset %d to %d", opset, BLOCKWISE_OPSET)
        try:
            model = version_converter.convert_version(model, BLOCKWISE_OPSET)
        except (RuntimeError, ValueError, onnx.checker.ValidationError, _CONVERT_ERROR) as error:
            raise UnsupportedModelError(
                f"cannot upgrade the model from opset {opset} to {BLOCKWISE_OPSET}: {error}"
            ) from error
    model.ir_version = max(model.ir_version, BLOCKWISE_IR_VERSION)
    return model
