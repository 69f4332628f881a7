"""Fitness of width candidates: validation AUC of the supernet under each candidate's widths.

:class:`BatchedScorer` looks every validation batch up once and runs the backbone on many
candidates stacked along the batch dimension; :class:`NaiveScorer` makes one full pass per
candidate (the reference behaviour, kept as the yardstick for tests and benchmarks).
"""

from __future__ import annotations

import numpy as np
import torch

from optembed.data.tensors import SplitTensors
from optembed.masks.dim_mask import apply_candidates
from optembed.metrics import auc
from optembed.models.base import CTRModel
from optembed.training.evaluate import autocast, evaluate


class BatchedScorer:
    """Scores ``(C, n)`` candidates with one embedding lookup per validation batch.

    ``rows_per_pass`` bounds the rows one backbone call sees (candidates x batch rows), which
    bounds the activation memory; ``group`` bounds the candidates stacked in one call. The
    logits of all candidates are kept on ``device`` (``C x N`` floats) and ranked there.
    """

    def __init__(
        self,
        model: CTRModel,
        split: SplitTensors,
        device: torch.device,
        rows_per_pass: int = 131072,
        group: int = 64,
        amp: str = "none",
    ) -> None:
        if rows_per_pass < 1 or group < 1:
            raise ValueError("rows_per_pass and group must be positive")
        self.model = model.eval()
        self.split = split
        self.device = device
        self.rows_per_pass = rows_per_pass
        self.group = group
        self.amp = amp
        self.labels = split.y.to(device)

    @torch.inference_mode()
    def logits(self, candidates: np.ndarray) -> torch.Tensor:
        """``(C, N)`` validation logits of every candidate."""
        cand = torch.as_tensor(candidates, dtype=torch.long, device=self.device)
        n_cand = cand.shape[0]
        group = min(self.group, n_cand)
        batch = max(1, self.rows_per_pass // group)
        out = torch.empty(n_cand, len(self.split), dtype=torch.float32, device=self.device)
        start = 0
        for xb, _ in self.split.batches(batch, self.device):
            rows = xb.shape[0]
            xb = self.model.remap(xb)
            with autocast(self.device, self.amp):
                emb = self.model.embed(xb)
                for g in range(0, n_cand, group):
                    chunk = cand[g : g + group]
                    stacked = apply_candidates(emb, chunk, flatten=True)
                    z = self.model.head(stacked, xb.repeat(chunk.shape[0], 1))
                    out[g : g + chunk.shape[0], start : start + rows] = z.view(chunk.shape[0], rows).float()
            start += rows
        return out

    def __call__(self, candidates: np.ndarray) -> np.ndarray:
        z = self.logits(candidates)
        return np.array([auc(self.labels, z[i]) for i in range(z.shape[0])], dtype=np.float64)


class NaiveScorer:
    """One full validation pass per candidate."""

    def __init__(self, model: CTRModel, split: SplitTensors, device: torch.device, batch_size: int = 32768) -> None:
        self.model = model.eval()
        self.split = split
        self.device = device
        self.batch_size = batch_size

    def __call__(self, candidates: np.ndarray) -> np.ndarray:
        scores = []
        for row in candidates:
            widths = torch.as_tensor(row, dtype=torch.long, device=self.device)
            scores.append(evaluate(self.model, self.split, self.device, self.batch_size, widths=widths)["auc"])
        return np.asarray(scores, dtype=np.float64)
