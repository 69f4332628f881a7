"""AUC against a brute-force pair count, hand cases, and logloss against its formula."""

from __future__ import annotations

import math

import pytest
import torch

from optembed.metrics import auc, logloss


def brute_auc(labels: torch.Tensor, scores: torch.Tensor) -> float:
    pos = scores[labels == 1]
    neg = scores[labels == 0]
    diff = pos[:, None] - neg[None, :]
    wins = (diff > 0).double().sum() + 0.5 * (diff == 0).double().sum()
    return float(wins / (pos.numel() * neg.numel()))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("n", [2, 7, 50, 997])
def test_auc_matches_brute_force_with_ties(seed: int, n: int) -> None:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    labels[0], labels[-1] = 0, 1  # both classes present
    scores = torch.round(torch.rand(n, generator=g) * 10) / 10  # many ties
    assert auc(labels, scores) == pytest.approx(brute_auc(labels, scores), abs=1e-12)


def test_auc_matches_brute_force_continuous_scores() -> None:
    g = torch.Generator().manual_seed(7)
    labels = (torch.rand(500, generator=g) < 0.2).long()
    scores = torch.randn(500, generator=g) + labels.float()
    assert auc(labels.float(), scores) == pytest.approx(brute_auc(labels, scores), abs=1e-12)


@pytest.mark.parametrize(
    ("labels", "scores", "expected"),
    [
        ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.75),
        ([0, 1], [0.2, 0.9], 1.0),
        ([0, 1], [0.9, 0.2], 0.0),
        ([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5], 0.5),
        # pos {0.3, 0.5}, neg {0.3, 0.1, 0.5}: 0.3 -> 1 + 0.5; 0.5 -> 2 + 0.5 => 4 / 6
        ([1, 0, 1, 0, 0], [0.3, 0.3, 0.5, 0.1, 0.5], 4 / 6),
    ],
)
def test_auc_hand_cases(labels: list[int], scores: list[float], expected: float) -> None:
    assert auc(torch.tensor(labels), torch.tensor(scores)) == pytest.approx(expected)


def test_auc_single_class_is_nan() -> None:
    assert math.isnan(auc(torch.ones(5), torch.rand(5)))
    assert math.isnan(auc(torch.zeros(0), torch.zeros(0)))


def test_auc_is_invariant_to_monotone_transform() -> None:
    g = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 2, (300,), generator=g)
    logits = torch.round(torch.randn(300, generator=g, dtype=torch.float64) * 4) / 4
    # float64 so that sigmoid keeps distinct logits distinct (float32 saturates near 1)
    assert auc(labels, logits) == pytest.approx(auc(labels, torch.sigmoid(logits)), abs=1e-12)


def test_logloss_matches_formula() -> None:
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0])
    logits = torch.tensor([2.0, -1.0, -0.5, 30.0])
    p = [1 / (1 + math.exp(-z)) for z in logits.tolist()]
    per = [
        -(y * math.log(q) + (1 - y) * math.log(1 - q)) if q < 1 else 30.0
        for y, q in zip(labels.tolist(), p)
    ]
    # the last term: -log(1 - sigmoid(30)) = 30 + log(1 + e^-30)
    per[3] = 30.0 + math.log1p(math.exp(-30.0))
    assert logloss(labels, logits) == pytest.approx(sum(per) / 4, rel=1e-12)


def test_logloss_is_stable_for_extreme_logits() -> None:
    value = logloss(torch.tensor([0.0, 1.0]), torch.tensor([200.0, -200.0]))
    assert value == pytest.approx(200.0)
