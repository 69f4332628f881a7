"""The base-rate warning: a model whose logloss is above that of predicting the training positive
rate for every row. Hand-computed base rates; a constant-biased model warns, a good one does not."""

from __future__ import annotations

import math

import torch
from torch import nn

from optembed.metrics import auc, auc_components, auc_se, base_rate_logloss, logloss, normal_interval
from optembed.training.diagnostics import worse_than_base_rate
from pipelines.evaluate import MIN_CLASS_ROWS, evaluation_warnings, split_summary

# 1,000 test rows, 300 positive; the training positive rate is 0.25:
# base = -(0.3 ln 0.25 + 0.7 ln 0.75) = 0.3 * 1.3862944 + 0.7 * 0.2876821 = 0.6172658
TRAIN_RATE = 0.25
BASE = 0.6172658


class Constant(nn.Module):
    """A model that ignores its input: one logit for every row (a biased constant)."""

    def __init__(self, probability: float) -> None:
        super().__init__()
        self.register_buffer("bias", torch.tensor(math.log(probability / (1.0 - probability))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(x.shape[0])


class Oracle(nn.Module):
    """A model that reads the planted logit from its input's only column."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0]


def planted_test() -> tuple[torch.Tensor, torch.Tensor]:
    """Rows whose single feature is a strong planted logit; exactly 300 of 1,000 are positive."""
    g = torch.Generator().manual_seed(0)
    y = torch.zeros(1000)
    y[torch.randperm(1000, generator=g)[:300]] = 1.0
    x = (3.0 * (2.0 * y - 1.0) + torch.randn(1000, generator=g)).unsqueeze(1)
    return x, y


def row(variant: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[dict, tuple]:
    with torch.no_grad():
        z = model(x)
    comps = auc_components(y, z)
    value, se = auc(y, z), auc_se(comps)
    return {"id": variant, "variant": variant, "test_auc": value, "test_auc_se": se,
            "test_auc_ci": list(normal_interval(value, se)), "test_logloss": logloss(y, z)}, comps


def test_base_rate_of_the_split_by_hand() -> None:
    _, y = planted_test()
    split = split_summary(y, TRAIN_RATE)
    assert (split["rows"], split["positives"], split["negatives"]) == (1000, 300, 700)
    assert split["base_rate_logloss"] == base_rate_logloss(y, TRAIN_RATE)
    assert abs(split["base_rate_logloss"] - BASE) < 1e-7


def test_constant_biased_model_warns_and_a_good_one_does_not() -> None:
    x, y = planted_test()
    split = split_summary(y, TRAIN_RATE)
    # the constant 0.6: -(0.3 ln 0.6 + 0.7 ln 0.4) = 0.1532477 + 0.6414035 = 0.7946512 > 0.6172658
    biased, biased_c = row("biased", Constant(0.6), x, y)
    assert abs(biased["test_logloss"] - 0.7946512) < 1e-6
    good, good_c = row("good", Oracle(), x, y)
    assert good["test_logloss"] < BASE
    lines = evaluation_warnings([good, biased], split, {"good": good_c, "biased": biased_c})
    worse = [w for w in lines if "worse than predicting" in w]
    assert len(worse) == 1 and worse[0].startswith("biased: test logloss 0.7947 (base rate 0.6173)")
    # the two models are far apart (AUC ~1 vs 0.5): no "cannot tell apart" line
    assert not any("cannot tell" in w for w in lines)


def test_the_training_rate_itself_is_no_warning() -> None:
    # the constant at the training rate has exactly the base rate's logloss: not worse
    x, y = planted_test()
    split = split_summary(y, TRAIN_RATE)
    same, comps = row("constant", Constant(TRAIN_RATE), x, y)
    assert abs(same["test_logloss"] - BASE) < 1e-6
    assert worse_than_base_rate("constant", {"test": (same["test_logloss"] - 1e-9, split["base_rate_logloss"])}) is None


def test_warning_names_each_worse_split_once() -> None:
    line = worse_than_base_rate("original", {"val": (0.70, 0.62), "test": (0.71, 0.63)})
    assert line is not None and "\n" not in line
    assert "validation logloss 0.7000 (base rate 0.6200) and test logloss 0.7100 (base rate 0.6300) are worse" in line
    only_val = worse_than_base_rate("original", {"val": (0.70, 0.62), "test": (0.50, 0.63)})
    assert only_val is not None and "test logloss" not in only_val and " is worse" in only_val
    assert worse_than_base_rate("original", {"val": (float("nan"), 0.62), "test": (None, 0.63)}) is None


def test_close_models_on_a_small_split_are_flagged_by_name() -> None:
    # two noisy copies of one score: their AUCs differ by noise only
    g = torch.Generator().manual_seed(3)
    y = (torch.rand(4000, generator=g) < 0.3).float()
    base = y + 1.5 * torch.randn(4000, generator=g)
    a, b = base + 0.05 * torch.randn(4000, generator=g), base + 0.05 * torch.randn(4000, generator=g)
    split = split_summary(y, 0.3)
    ra, ca = row("model-a", Oracle(), a.unsqueeze(1), y)
    rb, cb = row("model-b", Oracle(), b.unsqueeze(1), y)
    lines = evaluation_warnings([ra, rb], split, {"model-a": ca, "model-b": cb})
    close = [w for w in lines if "cannot tell the two best models apart" in w]
    assert len(close) == 1 and "model-a" in close[0] and "model-b" in close[0]
    # far fewer rows of a class than MIN_CLASS_ROWS: the small-split line instead
    few = split_summary(y[:300], 0.3)
    assert min(few["positives"], few["negatives"]) < MIN_CLASS_ROWS
    ra, ca = row("model-a", Oracle(), a[:300].unsqueeze(1), y[:300])
    rb, cb = row("model-b", Oracle(), b[:300].unsqueeze(1), y[:300])
    lines = evaluation_warnings([ra, rb], few, {"model-a": ca, "model-b": cb})
    assert any("fewer than" in w and "of a class" in w for w in lines)
