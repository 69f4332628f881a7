"""FNN: the flattened field embeddings fed to an MLP."""

from __future__ import annotations

from torch import Tensor

from optembed.embedders.packed import PackedEmbeddings
from optembed.layers.mlp import MLP
from optembed.models.base import CTRModel
from optembed.models.candidates import CandidateBatch


class FNN(CTRModel):
    def build_head(self) -> None:
        cfg = self.cfg
        in_dim = self.n_fields * cfg.embed_dim
        self.mlp = MLP(in_dim, cfg.mlp_dims, cfg.dropout, cfg.batch_norm, out_dim=self.tasks, kept_inputs=self.mlp_inputs(in_dim))

    def head(self, emb: Tensor, x: Tensor) -> Tensor:
        return self.task_logits(self.mlp(emb.flatten(1)))

    def head_packed(self, emb: PackedEmbeddings, x: Tensor) -> Tensor:
        return self.task_logits(self.mlp.forward_packed(emb.flat))

    def head_candidates(self, emb: Tensor, x: Tensor, cands: CandidateBatch) -> Tensor:
        return self.candidate_logits(cands.through_mlp(self.mlp, emb), cands.size, x.shape[0])
