"""Supernet width sampling with a share of samples at the full width (``--full-width-share``)."""

from __future__ import annotations

import pytest
import torch

from optembed.masks.dim_mask import sample_widths
from optembed.training.config import TrainConfig


def test_share_zero_is_the_papers_uniform_draw() -> None:
    a = sample_widths(500, 7, 16, torch.Generator().manual_seed(3))
    b = sample_widths(500, 7, 16, torch.Generator().manual_seed(3), full_share=0.0)
    assert torch.equal(a, b) and int(a.min()) >= 1 and int(a.max()) <= 16


def test_share_one_trains_every_sample_at_full_width() -> None:
    w = sample_widths(300, 5, 8, torch.Generator().manual_seed(1), full_share=1.0)
    assert bool((w == 8).all())


def test_a_share_sets_whole_samples_to_full_width() -> None:
    n, fields, dim, share = 20000, 6, 16, 0.5
    w = sample_widths(n, fields, dim, torch.Generator().manual_seed(2), full_share=share)
    full_rows = (w == dim).all(dim=1).float().mean().item()
    # a sample is all-full when chosen (share) or, rarely, when every uniform draw is dim
    expected = share + (1 - share) * (1 / dim) ** fields
    assert full_rows == pytest.approx(expected, abs=0.015)
    partial = w[~(w == dim).all(dim=1)]
    assert partial.float().mean().item() == pytest.approx((dim + 1) / 2, abs=0.2)  # the rest stays uniform


def test_the_share_is_a_fraction_and_absent_from_old_fingerprints() -> None:
    assert "full_width_share" not in TrainConfig().to_params()
    assert TrainConfig(full_width_share=0.5).to_params()["full_width_share"] == 0.5
    with pytest.raises(Exception, match="full-width-share"):
        TrainConfig(full_width_share=1.5).validate()


def test_sandwich_loss_is_the_mean_of_the_sampled_and_the_full_width_loss() -> None:
    import torch.nn.functional as F

    from optembed.models.config import ModelConfig
    from optembed.models.registry import build_model
    from optembed.training.trainer import Trainer

    torch.manual_seed(0)
    model = build_model([30, 20, 10], ModelConfig("fnn", embed_dim=8, mlp_dims=(16,), dropout=0.0, batch_norm=False, init_std=0.5), "dims-only")
    x = torch.randint(0, 10, (64, 3), dtype=torch.int32, generator=torch.Generator().manual_seed(1))
    y = (torch.rand(64, generator=torch.Generator().manual_seed(2)) < 0.3).float()
    trainer = Trainer(model, TrainConfig(seed=4, sandwich=True, alpha=0.0), torch.device("cpu"))
    state = trainer.generator.get_state()
    loss = trainer.loss(x, y)
    widths = sample_widths(64, 3, 8, torch.Generator().manual_seed(0).set_state(state))
    sampled = F.binary_cross_entropy_with_logits(model(x, widths), y)
    full = F.binary_cross_entropy_with_logits(model(x, torch.full((64, 3), 8)), y)
    assert loss.item() == pytest.approx(0.5 * (sampled.item() + full.item()), rel=1e-6)
    assert abs(sampled.item() - full.item()) > 1e-3  # the two halves differ: a real check
    plain = Trainer(model, TrainConfig(seed=4, alpha=0.0), torch.device("cpu"))
    plain.generator.set_state(state)
    assert plain.loss(x, y).item() == pytest.approx(sampled.item(), rel=1e-6)  # without it, the paper's loss
    assert "sandwich" not in TrainConfig().to_params() and TrainConfig(sandwich=True).to_params()["sandwich"] is True
