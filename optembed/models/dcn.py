"""DCN: a cross network and an MLP in parallel on the flattened embeddings, then a linear layer."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from optembed.embedders.packed import PackedEmbeddings
from optembed.layers.interactions import CrossNetwork
from optembed.layers.mlp import MLP
from optembed.models.base import CTRModel
from optembed.models.candidates import CandidateBatch


class DCN(CTRModel):
    def build_head(self) -> None:
        cfg = self.cfg
        in_dim = self.n_fields * cfg.embed_dim
        self.cross = CrossNetwork(in_dim, cfg.cross_layers)
        self.deep = MLP(in_dim, cfg.mlp_dims, cfg.dropout, cfg.batch_norm, out_dim=None, kept_inputs=self.mlp_inputs(in_dim))
        self.out = nn.Linear(in_dim + self.deep.output_dim, self.tasks)

    def head(self, emb: Tensor, x: Tensor) -> Tensor:
        flat = emb.flatten(1)
        both = torch.cat([self.cross(flat), self.deep(flat)], dim=1)
        return self.task_logits(self.out(both))

    def head_packed(self, emb: PackedEmbeddings, x: Tensor) -> Tensor:
        """The deep tower reads the packed columns; the cross network, whose biases make the
        padded columns nonzero from its first layer on, the zero-padded block."""
        both = torch.cat([self.cross(emb.padded().flatten(1)), self.deep.forward_packed(emb.flat)], dim=1)
        return self.task_logits(self.out(both))

    def head_candidates(self, emb: Tensor, x: Tensor, cands: CandidateBatch) -> Tensor:
        cross = self.cross(cands.stacked(emb).flatten(1))
        both = torch.cat([cross, cands.through_mlp(self.deep, emb)], dim=1)
        return self.candidate_logits(self.out(both), cands.size, x.shape[0])
