"""AUC against a brute-force pair count, hand cases, logloss against its formula, DeLong's
components, variances and intervals against their O(n_pos x n_neg) definition, the base rate."""

from __future__ import annotations

import math
from statistics import NormalDist

import pytest
import torch

from optembed.metrics import auc, auc_ci, auc_components, auc_se, base_rate_logloss, logloss, midranks, paired_auc_se


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


# --- DeLong: structural components, variances and intervals against the O(n_pos x n_neg) definition


def brute_components(labels: torch.Tensor, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """psi(x, y) = 1 if x > y, 1/2 if equal, 0 else, over every positive x and negative y."""
    pos = scores[labels == 1].double()
    neg = scores[labels == 0].double()
    psi = (pos[:, None] > neg[None, :]).double() + 0.5 * (pos[:, None] == neg[None, :]).double()
    return psi.mean(dim=1), psi.mean(dim=0)


def brute_variance(v10: torch.Tensor, v01: torch.Tensor) -> float:
    """DeLong's variance from its definition: sum of squares over (m - 1), per class."""
    m, n = v10.numel(), v01.numel()
    s10 = float(((v10 - v10.mean()) ** 2).sum()) / (m - 1)
    s01 = float(((v01 - v01.mean()) ** 2).sum()) / (n - 1)
    return s10 / m + s01 / n


def random_case(seed: int, n: int, ties: bool) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(n, generator=g) < 0.35).long()
    labels[:2], labels[-2:] = 0, 1  # at least two rows of each class
    scores = torch.randn(n, generator=g, dtype=torch.float64) + 0.8 * labels
    if ties:
        scores = torch.round(scores * 2) / 2  # a handful of distinct values: many ties within and across classes
    return labels, scores


def test_midranks_match_the_mean_of_tied_positions() -> None:
    values = torch.tensor([3.0, 1.0, 3.0, 2.0, 3.0, 1.0])
    # sorted: 1 1 2 3 3 3 -> positions 1,2 | 3 | 4,5,6 -> midranks 1.5 | 3 | 5
    assert midranks(values).tolist() == [5.0, 1.5, 5.0, 3.0, 5.0, 1.5]
    g = torch.Generator().manual_seed(4)
    x = torch.randint(0, 6, (300,), generator=g).double()
    brute = torch.stack([(x < v).sum() + ((x == v).sum() + 1) / 2 for v in x]).double()
    assert torch.equal(midranks(x), brute)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_delong_components_and_variance_match_brute_force(seed: int, ties: bool) -> None:
    labels, scores = random_case(seed, 157, ties)
    v10, v01 = auc_components(labels, scores)
    b10, b01 = brute_components(labels, scores)
    assert torch.allclose(v10, b10, atol=1e-12) and torch.allclose(v01, b01, atol=1e-12)
    assert float(v10.mean()) == pytest.approx(auc(labels, scores), abs=1e-12)
    assert auc_se((v10, v01)) ** 2 == pytest.approx(brute_variance(b10, b01), rel=1e-10)
    lo, hi = auc_ci(labels, scores)
    half = 1.959963984540054 * math.sqrt(brute_variance(b10, b01))
    a = float(b10.mean())
    assert (lo, hi) == pytest.approx((max(0.0, a - half), min(1.0, a + half)), abs=1e-10)
    assert lo < auc(labels, scores) < hi


def test_delong_hand_case() -> None:
    # positives 0.9, 0.4; negatives 0.5, 0.1: v10 = [1, 1/2], v01 = [1/2, 1]; AUC 3/4
    # var = var([1, .5]) / 2 + var([.5, 1]) / 2 = 0.125 / 2 + 0.125 / 2 = 0.125
    labels, scores = torch.tensor([1, 1, 0, 0]), torch.tensor([0.9, 0.4, 0.5, 0.1])
    v10, v01 = auc_components(labels, scores)
    assert v10.tolist() == [1.0, 0.5] and v01.tolist() == [0.5, 1.0]
    assert auc_se((v10, v01)) == pytest.approx(math.sqrt(0.125))
    lo, hi = auc_ci(labels, scores)
    assert lo == pytest.approx(0.75 - 1.959963984540054 * math.sqrt(0.125)) and hi == 1.0  # clipped


@pytest.mark.parametrize("ties", [False, True])
def test_paired_delong_matches_brute_force_covariance(ties: bool) -> None:
    labels, a = random_case(5, 211, ties)
    g = torch.Generator().manual_seed(9)
    b = a + torch.randn(a.shape, generator=g, dtype=torch.float64)  # a correlated second model
    if ties:
        b = torch.round(b * 2) / 2
    (a10, a01), (b10, b01) = brute_components(labels, a), brute_components(labels, b)
    m, n = a10.numel(), a01.numel()
    c10 = torch.cov(torch.stack([a10, b10]))  # 2 x 2 sample covariances (over m - 1)
    c01 = torch.cov(torch.stack([a01, b01]))
    var = float(c10[0, 0] + c10[1, 1] - 2 * c10[0, 1]) / m + float(c01[0, 0] + c01[1, 1] - 2 * c01[0, 1]) / n
    got = paired_auc_se(auc_components(labels, a), auc_components(labels, b))
    assert got == pytest.approx(math.sqrt(var), rel=1e-10)
    assert got < math.hypot(auc_se((a10, a01)), auc_se((b10, b01)))  # pairing removes the shared variance


def test_delong_interval_covers_the_true_auc() -> None:
    # binormal scores, unit variances, means 0 and d: the true AUC is Phi(d / sqrt 2)
    d, n_pos, n_neg, trials = 1.0, 150, 250, 400
    true_auc = NormalDist().cdf(d / math.sqrt(2.0))
    g = torch.Generator().manual_seed(11)
    labels = torch.cat([torch.ones(n_pos), torch.zeros(n_neg)])
    covered = 0
    for _ in range(trials):
        scores = torch.randn(n_pos + n_neg, generator=g, dtype=torch.float64) + d * labels
        lo, hi = auc_ci(labels, scores)
        covered += lo <= true_auc <= hi
    assert 0.92 <= covered / trials <= 0.98  # 95% nominal; a binomial sd of 1.1% over 400 trials


def test_delong_undefined_for_a_class_of_one_row() -> None:
    labels, scores = torch.tensor([1, 0, 0, 0]), torch.tensor([0.9, 0.1, 0.2, 0.3])
    assert math.isnan(auc_se(auc_components(labels, scores)))
    assert all(math.isnan(x) for x in auc_ci(labels, scores))
    with pytest.raises(ValueError):
        auc_ci(labels, scores, level=1.0)


def test_base_rate_logloss_by_hand() -> None:
    # training positive rate 0.25 predicted for 10 rows of which 3 are positive:
    # -(0.3 ln 0.25 + 0.7 ln 0.75) = 0.3 * 1.3862944 + 0.7 * 0.2876821 = 0.6172658
    labels = torch.tensor([1, 0, 0, 1, 0, 0, 0, 1, 0, 0])
    assert base_rate_logloss(labels, 0.25) == pytest.approx(0.6172658, abs=1e-7)
    constant = torch.full((10,), math.log(0.25 / 0.75))  # the same prediction, as logits
    assert base_rate_logloss(labels, 0.25) == pytest.approx(logloss(labels, constant), abs=1e-7)
    assert math.isfinite(base_rate_logloss(labels, 0.0)) and math.isnan(base_rate_logloss(torch.zeros(0), 0.5))
