"""torch layers with generated weights, and whole-model compression."""

from .compress import adntn_layers, compress_model, format_summary
from .conv import ADNTNConv2d
from .fit import fit_to_weight, relative_error
from .linear import ADNTNLinear, GeneratedWeight

__all__ = [
    "ADNTNConv2d",
    "ADNTNLinear",
    "GeneratedWeight",
    "adntn_layers",
    "compress_model",
    "fit_to_weight",
    "format_summary",
    "relative_error",
]
