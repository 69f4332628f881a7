"""Embedding masks: the row mask (feature pruning) and the field-wise dimension mask."""

from optembed.masks.dim_mask import apply_candidates, apply_widths, prefix_mask, sample_widths
from optembed.masks.row_mask import NORMS, RowPruner, row_norms
from optembed.masks.step import LongTailStep, long_tail_grad, long_tail_step

__all__ = [
    "NORMS",
    "LongTailStep",
    "RowPruner",
    "apply_candidates",
    "apply_widths",
    "long_tail_grad",
    "long_tail_step",
    "prefix_mask",
    "row_norms",
    "sample_widths",
]
