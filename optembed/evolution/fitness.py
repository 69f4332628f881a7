"""Fitness of width candidates: validation AUC of the supernet under each candidate's widths.

:class:`BatchedScorer` looks every validation batch up once and scores many candidates on it
together (the backbone's first layer shared through column blocks, or the candidates stacked
along the batch dimension); :class:`NaiveScorer` makes one full pass per candidate (the
reference behaviour, kept as the yardstick for tests and benchmarks).

A model of ``T > 1`` tasks gives ``(C, T)`` AUCs (and standard errors), the primary task's in
column 0; one task gives ``(C,)`` as always.
"""

from __future__ import annotations

import numpy as np
import torch

from optembed.data.tensors import SplitTensors
from optembed.layers.prefix_linear import PrefixLinear
from optembed.metrics import auc, auc_components, paired_auc_se
from optembed.models.base import CTRModel
from optembed.models.candidates import CandidateBatch
from optembed.training.evaluate import autocast, evaluate, predict
from optembed.training.tasks import split_columns


def task_aucs(labels: torch.Tensor, logits: torch.Tensor) -> list[float]:
    """Every task's AUC of ``(N,)`` or ``(N, T)`` labels and logits (the primary task's first)."""
    return [auc(y, z) for y, z in zip(split_columns(labels), split_columns(logits), strict=True)]


def task_components(labels: torch.Tensor, logits: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every task's DeLong components (:func:`optembed.metrics.auc_components`)."""
    return [auc_components(y, z) for y, z in zip(split_columns(labels), split_columns(logits), strict=True)]


def shaped(rows: list[list[float]], tasks: int) -> np.ndarray:
    """Per-candidate lists of per-task values as ``(C,)`` for one task, ``(C, T)`` for several."""
    out = np.asarray(rows, dtype=np.float64).reshape(len(rows), tasks)
    return out[:, 0] if tasks == 1 else out


class BatchedScorer:
    """Scores ``(C, n)`` candidates with one embedding lookup per validation batch.

    With ``block`` set (the default), the backbone's first linear layer over the embeddings is
    computed for all candidates of a group at once from whole blocks of ``block`` columns per
    field (:class:`optembed.models.candidates.CandidateBatch`): exact up to rounding, and far
    fewer multiply-adds than stacking the masked inputs (``block=None``). A validation batch then
    holds as many rows as keep that layer's block table (fields x blocks x rows x units floats)
    within ``table_bytes``, small enough on a CPU to stay in its cache. Without ``block``,
    ``rows_per_pass`` bounds the rows one backbone call sees (candidates x batch rows).
    ``group`` bounds the candidates stacked in one call. The logits of all candidates are kept
    on ``device`` (``C x N`` floats, ``C x N x T`` for ``T`` tasks) and ranked there.
    """

    def __init__(
        self,
        model: CTRModel,
        split: SplitTensors,
        device: torch.device,
        rows_per_pass: int = 131072,
        group: int = 64,
        amp: str = "none",
        block: int | None = 16,
        table_bytes: int | None = None,
    ) -> None:
        if rows_per_pass < 1 or group < 1:
            raise ValueError("rows_per_pass and group must be positive")
        if block is not None and block < 1:
            raise ValueError("block must be positive")
        self.model = model.eval()
        self.table = model.table_embedder()
        self.split = split
        self.device = device
        self.rows_per_pass = rows_per_pass
        self.group = group
        self.amp = amp
        self.block = block
        if table_bytes is None:
            table_bytes = (512 << 20) if device.type == "cuda" else (32 << 20)
        self.table_bytes = table_bytes
        self.labels = split.y.to(device)
        self.tasks = int(model.tasks)

    def batch_rows(self, n_cand: int) -> int:
        """Validation rows per backbone call for ``n_cand`` candidates."""
        group = min(self.group, n_cand)
        if self.block is None:
            return max(1, self.rows_per_pass // group)
        units = self.model.cfg.mlp_dims[0] if self.model.cfg.mlp_dims else 1  # the first layer's width
        per_row = PrefixLinear.table_bytes_per_row(self.model.n_fields, self.model.embed_dim, self.block, units)
        return max(1, min(self.rows_per_pass // group, self.table_bytes // per_row))

    @torch.inference_mode()
    def logits(self, candidates: np.ndarray) -> torch.Tensor:
        """``(C, N)`` validation logits of every candidate (``(C, N, T)`` for several tasks)."""
        cand = torch.as_tensor(candidates, dtype=torch.long, device=self.device)
        n_cand = cand.shape[0]
        group = min(self.group, n_cand)
        groups = [CandidateBatch(cand[g : g + group], self.block) for g in range(0, n_cand, group)]
        shape = (n_cand, len(self.split)) + ((self.tasks,) if self.tasks > 1 else ())
        out = torch.empty(shape, dtype=torch.float32, device=self.device)
        start = 0
        for xb, _ in self.split.batches(self.batch_rows(n_cand), self.device):
            rows = xb.shape[0]
            xb = self.table.ids(xb)
            with autocast(self.device, self.amp):
                emb = self.table.rows(xb)
                for g, cands in enumerate(groups):
                    z = self.model.head_candidates(emb, xb, cands)
                    out[g * group : g * group + cands.size, start : start + rows] = z.float()
            start += rows
        return out

    def __call__(self, candidates: np.ndarray) -> np.ndarray:
        z = self.logits(candidates)
        if self.tasks == 1:
            return np.array([auc(self.labels, z[i]) for i in range(z.shape[0])], dtype=np.float64)
        return shaped([task_aucs(self.labels, z[i]) for i in range(z.shape[0])], self.tasks)


class PairedScorer:
    """A :class:`BatchedScorer` that also gives each candidate's standard error of its AUC
    difference to a fixed ``reference`` candidate (DeLong, the same validation rows), so the
    accuracy-bounded search can tell a real AUC difference from noise. With several tasks both are
    ``(C, T)``: each task's AUC and its paired error against the reference on that task."""

    def __init__(self, scorer: BatchedScorer, reference: np.ndarray) -> None:
        self.scorer = scorer
        self.reference = np.asarray(reference, dtype=np.int64).reshape(1, -1)
        self._ref: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def __call__(self, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        labels = self.scorer.labels
        tasks = self.scorer.tasks
        if tasks == 1:
            if self._ref is None:
                self._ref = [auc_components(labels, self.scorer.logits(self.reference)[0])]
            z = self.scorer.logits(candidates)
            scores = np.array([auc(labels, z[i]) for i in range(z.shape[0])], dtype=np.float64)
            errors = np.array([paired_auc_se(auc_components(labels, z[i]), self._ref[0]) for i in range(z.shape[0])])
            return scores, np.nan_to_num(errors, nan=0.0)
        if self._ref is None:
            self._ref = task_components(labels, self.scorer.logits(self.reference)[0])
        z = self.scorer.logits(candidates)
        score_rows, error_rows = [], []
        for i in range(z.shape[0]):
            parts = task_components(labels, z[i])
            score_rows.append(task_aucs(labels, z[i]))
            error_rows.append([paired_auc_se(p, r) for p, r in zip(parts, self._ref, strict=True)])
        return shaped(score_rows, tasks), np.nan_to_num(shaped(error_rows, tasks), nan=0.0)


class NaiveScorer:
    """One full validation pass per candidate (``(C, T)`` AUCs for a model of several tasks)."""

    def __init__(self, model: CTRModel, split: SplitTensors, device: torch.device, batch_size: int = 32768) -> None:
        self.model = model.eval()
        self.split = split
        self.device = device
        self.batch_size = batch_size

    def __call__(self, candidates: np.ndarray) -> np.ndarray:
        tasks = int(self.model.tasks)
        scores = []
        for row in candidates:
            widths = torch.as_tensor(row, dtype=torch.long, device=self.device)
            if tasks == 1:
                scores.append(evaluate(self.model, self.split, self.device, self.batch_size, widths=widths)["auc"])
            else:
                logits = predict(self.model, self.split, self.device, self.batch_size, widths)
                scores.append(task_aucs(self.split.y.to(self.device), logits))
        return np.asarray(scores, dtype=np.float64)
