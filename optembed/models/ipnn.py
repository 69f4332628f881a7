"""IPNN: all pairwise inner products of field embeddings, with the flattened embeddings, to an MLP."""

from __future__ import annotations

import torch
from torch import Tensor

from optembed.embedders.packed import PackedEmbeddings
from optembed.layers.interactions import PairwiseInnerProduct
from optembed.layers.mlp import MLP
from optembed.models.base import CTRModel
from optembed.models.candidates import CandidateBatch


class IPNN(CTRModel):
    def build_head(self) -> None:
        cfg = self.cfg
        self.products = PairwiseInnerProduct(self.n_fields)
        in_dim = self.n_fields * cfg.embed_dim + self.products.output_dim
        self.mlp = MLP(in_dim, cfg.mlp_dims, cfg.dropout, cfg.batch_norm, out_dim=self.tasks, kept_inputs=self.mlp_inputs(in_dim))

    def head(self, emb: Tensor, x: Tensor) -> Tensor:
        features = torch.cat([emb.flatten(1), self.products(emb)], dim=1)
        return self.task_logits(self.mlp(features))

    def head_packed(self, emb: PackedEmbeddings, x: Tensor) -> Tensor:
        """The MLP reads the packed columns and the inner products, which are taken over the
        zero-padded block (a pair's product over the narrower width)."""
        features = torch.cat([emb.flat, self.products(emb.padded())], dim=1)
        return self.task_logits(self.mlp.forward_packed(features))

    def head_candidates(self, emb: Tensor, x: Tensor, cands: CandidateBatch) -> Tensor:
        products = self.products(cands.stacked(emb))
        return self.candidate_logits(cands.through_mlp(self.mlp, emb, extra=products), cands.size, x.shape[0])
