"""The configuration shared by the Python API and the command line, and the named recipes."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass

from bct_onnx.blockwise import Rounding, ScaleFormat
from bct_onnx.calibration import CalibrationMethod

SUPPORTED_WEIGHT_BITS = (4, 8)
SUPPORTED_ACTIVATION_BITS = (4, 8)


class IntegerOperator(enum.Enum):
    """The float operators that BCT can replace with integer ones."""

    GELU = "gelu"
    SOFTMAX = "softmax"
    LAYER_NORM = "layernorm"


ALL_INTEGER_OPERATORS = frozenset(IntegerOperator)


class Recipe(enum.Enum):
    """Named sets of defaults; ``CompressConfig.from_recipe`` turns one into a config."""

    BCT = "bct"  # 4-bit weights, 8-bit activations, integer GELU/Softmax/LayerNorm
    W8A8 = "w8a8"  # 8-bit weights and activations, integer GELU/Softmax/LayerNorm
    WEIGHTS_ONLY = "weights-only"  # 4-bit weights, float activations, no calibration needed


@dataclass(frozen=True, kw_only=True)
class CompressConfig:
    """Options of ``bct_onnx.compress`` and ``bct-onnx compress``.

    The defaults are the data-free weights-only recipe measured on MiniLM-L6: 4-bit symmetric
    blocks of 64 along the reduction axis, MSE-optimal clipping and 8-bit block scales.
    ``activation_bits`` other than None quantizes activations too, which needs calibration data.
    """

    weight_bits: int = 4
    embedding_bits: int | None = None  # None: the same as weight_bits
    block_size: int = 64
    symmetric: bool = True
    rounding: Rounding = Rounding.MSE
    scale_format: ScaleFormat = ScaleFormat.UINT8
    embeddings: bool = True  # also compress the tables read by Gather
    exclude: tuple[str, ...] = ()  # fnmatch patterns over node and weight names
    activation_bits: int | None = None
    activation_block_size: int = 1  # channels per activation block; 1 is a scale per channel
    integer_operators: frozenset[IntegerOperator] = frozenset()
    calibration_method: CalibrationMethod = CalibrationMethod.MSE
    error_compensation: bool = True  # GPTQ weight rounding, when calibration data is given

    def __post_init__(self) -> None:
        self._coerce_enums()
        for name in ("weight_bits", "block_size", "activation_block_size"):
            if isinstance(getattr(self, name), bool) or not isinstance(getattr(self, name), int):
                raise TypeError(f"{name} must be an int, got {getattr(self, name)!r}")
        if self.weight_bits not in SUPPORTED_WEIGHT_BITS:
            raise ValueError(f"weight bits must be 4 or 8, got {self.weight_bits}")
        if self.embedding_bits is not None and self.embedding_bits not in SUPPORTED_WEIGHT_BITS:
            raise ValueError(f"embedding bits must be 4 or 8, got {self.embedding_bits}")
        if self.block_size < 2:
            raise ValueError(f"block size must be at least 2, got {self.block_size}")
        if self.activation_bits is not None and self.activation_bits not in SUPPORTED_ACTIVATION_BITS:
            raise ValueError(f"activation bits must be 4 or 8, got {self.activation_bits}")
        if self.activation_block_size < 1:
            raise ValueError(f"activation block size must be at least 1, got {self.activation_block_size}")
        if self.integer_operators and self.activation_bits is None:
            raise ValueError("integer operators need quantized activations: set activation bits")
        if isinstance(self.exclude, str) or not isinstance(self.exclude, tuple):
            raise TypeError("exclude must be a tuple of patterns")

    def _coerce_enums(self) -> None:
        """Accept enum values given by name ("mse", "uint8"), as a config file would spell them."""
        for name, enum_type in (
            ("rounding", Rounding),
            ("scale_format", ScaleFormat),
            ("calibration_method", CalibrationMethod),
        ):
            value = getattr(self, name)
            if not isinstance(value, enum_type):
                try:
                    object.__setattr__(self, name, enum_type(value))
                except ValueError as error:
                    choices = ", ".join(item.value for item in enum_type)
                    raise ValueError(f"{name} must be one of {choices}, got {value!r}") from error
        operators = frozenset(
            item if isinstance(item, IntegerOperator) else IntegerOperator(item) for item in self.integer_operators
        )
        object.__setattr__(self, "integer_operators", operators)

    @property
    def needs_calibration(self) -> bool:
        return self.activation_bits is not None

    @classmethod
    def from_recipe(cls, recipe: Recipe, **overrides: object) -> CompressConfig:
        """Return the config of ``recipe`` with ``overrides`` (field name to value) applied."""
        presets = {
            Recipe.BCT: dict(weight_bits=4, activation_bits=8, integer_operators=ALL_INTEGER_OPERATORS),
            Recipe.W8A8: dict(weight_bits=8, activation_bits=8, integer_operators=ALL_INTEGER_OPERATORS),
            Recipe.WEIGHTS_ONLY: dict(weight_bits=4),
        }
        unknown = set(overrides) - {field.name for field in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(f"unknown config fields: {sorted(unknown)}")
        return cls(**{**presets[recipe], **overrides})
