"""CTR backbones (FNN, DeepFM, DCN, IPNN) over a maskable embedding table."""

from optembed.embedders.table import SupernetMode
from optembed.models.base import MODES, CTRModel
from optembed.models.config import MODEL_NAMES, ModelConfig
from optembed.models.dcn import DCN
from optembed.models.deepfm import DeepFM
from optembed.models.fnn import FNN
from optembed.models.ipnn import IPNN
from optembed.models.registry import build_model

__all__ = [
    "DCN",
    "FNN",
    "IPNN",
    "MODEL_NAMES",
    "MODES",
    "CTRModel",
    "DeepFM",
    "ModelConfig",
    "SupernetMode",
    "build_model",
]
