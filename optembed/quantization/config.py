"""Hyperparameters of quantizer training."""

from __future__ import annotations

import importlib.util
import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

from optembed.errors import ConfigError
from optembed.validation import check_non_negative, check_positive

COMPRESS_METHODS = ("pq", "int8")  # product quantization | row-wise int8 tables (optembed.quantization.methods)
DEFAULT_METHOD = COMPRESS_METHODS[0]  # product quantization: its artifacts came before there was a choice
POPULARITY = ("log", "linear", "none")
KMEANS_BACKENDS = ("torch", "faiss")
CODE_DTYPES = {"uint8": 256, "uint16": 65536}  # dtype -> largest codebook it can index
MAX_CODEBOOK = 65536  # codes are stored as uint8 (K <= 256) or uint16


@dataclass(frozen=True)
class QuantizerConfig:
    """``groups`` sub-vectors per row (or ``ceil(D / sub_dim)`` when ``sub_dim`` is set), at most
    ``codebook`` entries per group; each field's own codebook size is bounded by ``codebook_share``
    (see :func:`optembed.quantization.plan.plan_field`).

    Loss = popularity-weighted reconstruction
    - ``balance_weight`` * normalised entropy of the batch's code histogram (hard counts forward,
      soft assignments backward)
    + ``contrastive_weight`` * InfoNCE(row -> its own quantized vector, temperature ``temperature``).
    """

    groups: int = 4
    codebook: int = 256
    popularity: str = "log"
    balance_weight: float = 0.1
    contrastive_weight: float = 0.1
    temperature: float = 0.1
    soft_temperature: float = 0.1  # of the soft assignments that carry the balance term's gradient
    steps: int = 300
    kmeans_iters: int = 10  # popularity-weighted Lloyd iterations before the steps
    kmeans_sample: int = 256  # rows per codebook entry k-means trains on (drawn by weight); 0: all rows
    kmeans_backend: str = "torch"  # torch | faiss (faiss-cpu/gpu installed: its k-means and nearest-entry search)
    max_epochs: float = 10.0  # at most this many passes over a table's rows (small tables need few steps)
    batch_size: int = 4096
    lr: float = 0.01
    seed: int = 0
    code_dtype: str = "auto"  # uint8 up to 256 entries, else uint16
    sub_dim: int | None = None  # when set, a field of width D gets ceil(D / sub_dim) groups (overrides groups)
    codebook_share: float = 0.25  # a field's codebooks cost at most this fraction of its codes' bytes

    def validate(self) -> None:
        if self.groups < 1:
            raise ConfigError(f"--groups must be at least 1, got {self.groups}")
        if not 2 <= self.codebook <= MAX_CODEBOOK:
            raise ConfigError(
                f"--codebook must be in 2..{MAX_CODEBOOK} so a code fits in uint16, got {self.codebook}"
            )
        if self.code_dtype != "auto" and self.code_dtype not in CODE_DTYPES:
            raise ConfigError(f"unknown --code-dtype '{self.code_dtype}'; choose auto, uint8 or uint16")
        if self.code_dtype in CODE_DTYPES and self.codebook > CODE_DTYPES[self.code_dtype]:
            raise ConfigError(
                f"--codebook {self.codebook} does not fit {self.code_dtype} codes (at most "
                f"{CODE_DTYPES[self.code_dtype]} entries); use a smaller codebook or --code-dtype uint16"
            )
        if self.kmeans_iters < 0:
            raise ConfigError(f"--kmeans-iters must be at least 0, got {self.kmeans_iters}")
        if self.kmeans_backend not in KMEANS_BACKENDS:
            raise ConfigError(f"unknown --kmeans-backend '{self.kmeans_backend}'; choose {' or '.join(KMEANS_BACKENDS)}")
        if self.kmeans_backend == "faiss" and importlib.util.find_spec("faiss") is None:
            raise ConfigError("--kmeans-backend faiss needs the faiss package: pip install faiss-cpu")
        if self.kmeans_sample < 0:
            raise ConfigError(f"--kmeans-sample must be at least 0 (0: all rows), got {self.kmeans_sample}")
        if self.sub_dim is not None and self.sub_dim < 1:
            raise ConfigError(f"--sub-dim must be at least 1, got {self.sub_dim}")
        check_positive("--codebook-share", self.codebook_share)
        if self.popularity not in POPULARITY:
            raise ConfigError(f"unknown --popularity '{self.popularity}'; choose {', '.join(POPULARITY)}")
        check_non_negative("--balance-weight", self.balance_weight)
        check_non_negative("--contrastive-weight", self.contrastive_weight)
        check_positive("--temperature", self.temperature)
        check_positive("soft_temperature", self.soft_temperature)
        check_positive("--quantizer-lr", self.lr)
        check_positive("max_epochs", self.max_epochs)
        if self.steps < 0 or self.batch_size < 2:
            raise ConfigError("--quantizer-steps must be >= 0 and the quantizer batch size >= 2")

    def code_dtype_for(self, codebook: int) -> str:
        """The code dtype of a ``codebook``-entry codebook: ``code_dtype`` when forced, else the
        smallest that indexes it (uint8 up to 256 entries, else uint16)."""
        if self.code_dtype != "auto":
            return self.code_dtype
        return "uint8" if codebook <= 256 else "uint16"

    def torch_code_dtype(self) -> torch.dtype:
        return torch.uint8 if self.code_dtype_for(self.codebook) == "uint8" else torch.uint16

    def steps_for(self, rows: int) -> int:
        """Optimizer steps for a table of ``rows`` rows: ``steps``, capped at ``max_epochs`` passes."""
        return min(self.steps, max(1, math.ceil(self.max_epochs * rows / self.batch_size)))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
