"""DeepFM: first-order linear term + FM second-order term + MLP, summed into one logit."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from optembed.embedders.packed import PackedEmbeddings
from optembed.layers.embedding import FieldEmbedding
from optembed.layers.interactions import fm_second_order, fm_second_order_masked, fm_second_order_packed
from optembed.layers.mlp import MLP
from optembed.models.base import CTRModel
from optembed.models.candidates import CandidateBatch


class DeepFM(CTRModel):
    """The linear term is a scalar weight per feature (the ids the embedder hands the head) plus
    a bias; it is not subject to the row or width masks, which act on the table ``E`` only.
    Several tasks share the linear and FM terms; each has its own bias and MLP output.
    """

    def build_head(self) -> None:
        cfg = self.cfg
        self.linear = FieldEmbedding(self.embedder.head_cardinalities, 1, init_std=cfg.init_std)
        self.bias = nn.Parameter(torch.zeros(() if self.tasks == 1 else (self.tasks,)))
        in_dim = self.n_fields * cfg.embed_dim
        self.mlp = MLP(in_dim, cfg.mlp_dims, cfg.dropout, cfg.batch_norm, out_dim=self.tasks, kept_inputs=self.mlp_inputs(in_dim))

    def additive_id_tables(self) -> list[FieldEmbedding]:
        return [self.linear]

    def head(self, emb: Tensor, x: Tensor) -> Tensor:
        first = self.linear(x).sum(dim=(1, 2))
        deep = self.task_logits(self.mlp(emb.flatten(1)))
        # summed in this order (one task: bit for bit the one-task model's logits)
        return self.bias + self.per_task(first) + self.per_task(fm_second_order(emb)) + deep

    def head_packed(self, emb: PackedEmbeddings, x: Tensor) -> Tensor:
        """:meth:`head` on the packed columns: the MLP's first layer reads them as they are, the FM
        term sums each width's block (:func:`fm_second_order_packed`); nothing is padded to ``D``."""
        first = self.linear(x).sum(dim=(1, 2))
        flat = emb.flat
        deep = self.task_logits(self.mlp.forward_packed(flat))
        return self.bias + self.per_task(first) + self.per_task(fm_second_order_packed(emb.blocks, flat)) + deep

    def head_candidates(self, emb: Tensor, x: Tensor, cands: CandidateBatch) -> Tensor:
        first = self.linear(x).sum(dim=(1, 2))  # the same for every candidate
        fm = fm_second_order_masked(emb, cands.masks(emb))
        deep = self.candidate_logits(cands.through_mlp(self.mlp, emb), cands.size, x.shape[0])
        return self.bias + self.per_task(first) + self.per_task(fm) + deep
