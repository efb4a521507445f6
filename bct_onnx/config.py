"""The configuration shared by the Python API and the command line."""

from __future__ import annotations

from dataclasses import dataclass

from bct_onnx.blockwise import Rounding, ScaleFormat

SUPPORTED_WEIGHT_BITS = (4, 8)


@dataclass(frozen=True, kw_only=True)
class CompressConfig:
    """Options of ``bct_onnx.compress`` and ``bct-onnx compress``.

    The defaults are the data-free recipe measured on MiniLM-L6: 4-bit symmetric blocks of 64
    along the reduction axis, MSE-optimal clipping, and 8-bit block scales.
    """

    weight_bits: int = 4
    block_size: int = 64
    symmetric: bool = True
    rounding: Rounding = Rounding.MSE
    scale_format: ScaleFormat = ScaleFormat.UINT8
    embeddings: bool = True  # also compress the tables read by Gather
    exclude: tuple[str, ...] = ()  # fnmatch patterns over node and weight names

    def __post_init__(self) -> None:
        if self.weight_bits not in SUPPORTED_WEIGHT_BITS:
            raise ValueError(f"weight bits must be 4 or 8, got {self.weight_bits}")
        if self.block_size < 2:
            raise ValueError(f"block size must be at least 2, got {self.block_size}")
        if isinstance(self.exclude, str) or not isinstance(self.exclude, tuple):
            raise TypeError("exclude must be a tuple of patterns")
