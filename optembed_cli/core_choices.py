"""Fixed choices whose names the core keeps in modules that import torch.

Only the commands that take these options import this module, when they run or show their
help; ``optembed --help`` never does.
"""

from __future__ import annotations

from optembed.embedders.autodim import TRANSFORMS
from optembed.embedders.pep import GRANULARITIES
from optembed.embedders.qr import OPERATIONS
from optembed.evolution.row_levels import ROW_RANKS
from optembed.models.base import MODES
from optembed.models.config import MODEL_NAMES, NORMS
from optembed.quantization.config import CODE_DTYPES, COMPRESS_METHODS, KMEANS_BACKENDS, POPULARITY
from optembed_cli.options import choices
from pipelines import baseline

Model = choices("Model", MODEL_NAMES)
Mode = choices("Mode", MODES)
Norm = choices("Norm", NORMS)
CodeDtype = choices("CodeDtype", ("auto", *CODE_DTYPES))
CompressMethod = choices("CompressMethod", COMPRESS_METHODS)
Popularity = choices("Popularity", POPULARITY)
KmeansBackend = choices("KmeansBackend", KMEANS_BACKENDS)
RowRank = choices("RowRank", ROW_RANKS)
BaselineMethod = choices("BaselineMethod", baseline.METHODS)
QrOperation = choices("QrOperation", OPERATIONS)
PepGranularity = choices("PepGranularity", GRANULARITIES)
AutoDimTransform = choices("AutoDimTransform", TRANSFORMS)
