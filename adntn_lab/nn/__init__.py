"""torch layers with generated weights, whole-model compression, and deployment."""

from .attention import ADNTNMultiheadAttention
from .compress import (
    CompressionSummary,
    adntn_layers,
    compress_model,
    format_summary,
    generated_modules,
)
from .conv import ADNTNConv1d, ADNTNConv2d, ADNTNConv3d
from .conv1d import ADNTNConv1D
from .fit import fit_to_weight, relative_error
from .linear import ADNTNLinear, GeneratedWeight
from .serialize import decompress_model, load_compressed, read_header, save_compressed

__all__ = [
    "ADNTNConv1D",
    "ADNTNConv1d",
    "ADNTNConv2d",
    "ADNTNConv3d",
    "ADNTNLinear",
    "ADNTNMultiheadAttention",
    "CompressionSummary",
    "GeneratedWeight",
    "adntn_layers",
    "compress_model",
    "decompress_model",
    "fit_to_weight",
    "format_summary",
    "generated_modules",
    "load_compressed",
    "read_header",
    "relative_error",
    "save_compressed",
]
