"""Product quantization of trained embedding tables (MEC-style): codes plus shared codebooks."""

from optembed.quantization.config import QuantizerConfig
from optembed.quantization.pq import ProductQuantizer, code_dtype
from optembed.quantization.fit import FitStats, fit_quantizer, popularity_weights

__all__ = ["FitStats", "ProductQuantizer", "QuantizerConfig", "code_dtype", "fit_quantizer", "popularity_weights"]
