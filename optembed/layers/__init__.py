"""Neural-network building blocks shared by the CTR backbones."""

from optembed.layers.embedding import FieldEmbedding
from optembed.layers.interactions import (
    CrossNetwork,
    PairwiseInnerProduct,
    fm_second_order,
    fm_second_order_masked,
)
from optembed.layers.mlp import MLP

__all__ = [
    "MLP",
    "CrossNetwork",
    "FieldEmbedding",
    "PairwiseInnerProduct",
    "fm_second_order",
    "fm_second_order_masked",
]
