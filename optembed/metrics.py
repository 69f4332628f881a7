"""Evaluation metrics, vectorised in torch: exact ROC AUC (ties handled), logloss, the logloss of
the constant base-rate prediction, and DeLong standard errors and intervals of AUCs."""

from __future__ import annotations

import math
from statistics import NormalDist

import torch
import torch.nn.functional as F
from torch import Tensor


def auc(labels: Tensor, scores: Tensor) -> float:
    """Exact ROC AUC, the Mann-Whitney statistic with ties counted as one half.

    ``AUC = P(score_pos > score_neg) + 0.5 * P(score_pos == score_neg)`` over all
    positive/negative pairs. Scores are sorted once and grouped into runs of equal
    values; each positive in a run beats every negative in lower runs and ties with the
    negatives of its own run (equivalent to average ranks). The counts are exact int64.
    Labels are 0/1 (anything > 0.5 counts as positive). Works on any device.

    Returns ``nan`` when only one class is present (AUC is undefined), including empty input.
    """
    y = torch.as_tensor(labels).reshape(-1)
    s = torch.as_tensor(scores, device=y.device).reshape(-1)
    if y.numel() != s.numel():
        raise ValueError(f"auc: {y.numel()} labels but {s.numel()} scores")
    pos = (y > 0.5) if y.is_floating_point() else (y > 0)
    n_pos = int(pos.sum())
    n_neg = pos.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    sorted_scores, order = torch.sort(s)
    pos_sorted = pos[order].long()
    _, counts = torch.unique_consecutive(sorted_scores, return_counts=True)
    ends = torch.cumsum(counts, 0) - 1
    pos_cum = torch.cumsum(pos_sorted, 0)[ends]
    pos_run = torch.diff(pos_cum, prepend=pos_cum.new_zeros(1))
    neg_run = counts - pos_run
    neg_below = torch.cumsum(neg_run, 0) - neg_run
    twice_wins = int((pos_run * (2 * neg_below + neg_run)).sum())
    return twice_wins / (2.0 * n_pos * n_neg)


def logloss(labels: Tensor, logits: Tensor) -> float:
    """Mean binary cross-entropy computed from logits (numerically stable), in float64."""
    y = torch.as_tensor(labels).reshape(-1).double()
    z = torch.as_tensor(logits, device=y.device).reshape(-1).double()
    return float(F.binary_cross_entropy_with_logits(z, y))


def base_rate_logloss(labels: Tensor, rate: float) -> float:
    """Logloss of predicting the probability ``rate`` for every row (the base rate: usually the
    training split's positive ratio). With ``q`` the share of positive ``labels`` it is
    ``-(q log rate + (1 - q) log(1 - rate))``; ``rate`` is clipped into ``[1e-12, 1 - 1e-12]`` so a
    one-class training split gives a large finite number. ``nan`` for no labels."""
    y = torch.as_tensor(labels).reshape(-1)
    if y.numel() == 0:
        return math.nan
    pos = (y > 0.5) if y.is_floating_point() else (y > 0)
    return constant_logloss(float(pos.double().mean()), rate)


def constant_logloss(positive_ratio: float, rate: float) -> float:
    """Logloss of the constant prediction ``rate`` on rows whose share of positives is
    ``positive_ratio`` (see :func:`base_rate_logloss`)."""
    p = min(max(float(rate), 1e-12), 1.0 - 1e-12)
    q = float(positive_ratio)
    return -(q * math.log(p) + (1.0 - q) * math.log1p(-p))


def midranks(values: Tensor) -> Tensor:
    """The 1-based ranks of ``values`` with ties given the mean of the ranks they span (the
    midrank), in float64, in the input's order. One sort and one pass over the runs of equal
    values: a run starting at sorted position ``a`` (0-based) of length ``c`` gets
    ``a + (c + 1) / 2``."""
    v = torch.as_tensor(values).reshape(-1)
    if v.numel() == 0:
        return torch.zeros(0, dtype=torch.float64, device=v.device)
    ordered, order = torch.sort(v)
    _, counts = torch.unique_consecutive(ordered, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    run_rank = starts.double() + (counts.double() + 1.0) / 2.0
    ranks = torch.empty(v.numel(), dtype=torch.float64, device=v.device)
    ranks[order] = torch.repeat_interleave(run_rank, counts)
    return ranks


def auc_components(labels: Tensor, scores: Tensor) -> tuple[Tensor, Tensor]:
    """DeLong's structural components of the AUC: per positive, the share of negatives it beats
    (ties count one half); per negative, the share of positives that beat it. Both average to
    the AUC. Paired differences of these give the standard error of an AUC difference measured
    on the same rows (:func:`paired_auc_se`). Returns ``(v10 (n_pos,), v01 (n_neg,))`` in float64.

    The fast midrank algorithm (Sun and Xu, 2014): with ``r`` the midranks of all scores and
    ``r_pos``, ``r_neg`` those within each class, a positive beats ``r - r_pos`` negatives
    (a tie counting one half) and a negative is beaten by ``n_pos - (r - r_neg)`` positives:
    three sorts instead of the ``n_pos x n_neg`` comparisons.
    """
    y = torch.as_tensor(labels).reshape(-1)
    s = torch.as_tensor(scores, device=y.device).reshape(-1).double()
    if y.numel() != s.numel():
        raise ValueError(f"auc_components: {y.numel()} labels but {s.numel()} scores")
    pos = (y > 0.5) if y.is_floating_point() else (y > 0)
    sp, sn = s[pos], s[~pos]
    n_pos, n_neg = sp.numel(), sn.numel()
    if n_pos == 0 or n_neg == 0:
        return sp.new_empty(0), sn.new_empty(0)
    ranks = midranks(s)
    v10 = (ranks[pos] - midranks(sp)) / n_neg
    v01 = 1.0 - (ranks[~pos] - midranks(sn)) / n_pos
    return v10, v01


def paired_auc_se(a: tuple[Tensor, Tensor], b: tuple[Tensor, Tensor]) -> float:
    """Standard error of ``AUC_a - AUC_b`` for two score vectors on the same rows (DeLong),
    from their :func:`auc_components`; ``nan`` when a class has fewer than two rows."""
    d10, d01 = a[0] - b[0], a[1] - b[1]
    if d10.numel() < 2 or d01.numel() < 2:
        return math.nan
    var = float(d10.var()) / d10.numel() + float(d01.var()) / d01.numel()
    return math.sqrt(max(var, 0.0))


def auc_se(components: tuple[Tensor, Tensor]) -> float:
    """DeLong's standard error of one AUC from its :func:`auc_components`:
    ``sqrt(var(v10) / n_pos + var(v01) / n_neg)`` (sample variances); ``nan`` when a class has
    fewer than two rows."""
    v10, v01 = components
    if v10.numel() < 2 or v01.numel() < 2:
        return math.nan
    var = float(v10.var()) / v10.numel() + float(v01.var()) / v01.numel()
    return math.sqrt(max(var, 0.0))


def z_value(level: float) -> float:
    """The two-sided normal quantile of a ``level`` interval (1.95996... for 0.95)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return NormalDist().inv_cdf(0.5 + level / 2.0)


def normal_interval(value: float, se: float, level: float = 0.95) -> tuple[float, float]:
    """``value -/+ z * se`` clipped into ``[0, 1]``; ``(nan, nan)`` when either is ``nan``."""
    z = z_value(level)  # a bad level is an error even when the interval is undefined
    if value != value or se != se:
        return math.nan, math.nan
    half = z * se
    return max(0.0, value - half), min(1.0, value + half)


def auc_ci(labels: Tensor, scores: Tensor, level: float = 0.95) -> tuple[float, float]:
    """A ``level`` confidence interval ``(low, high)`` of the AUC of ``scores``: the normal
    interval around the AUC with DeLong's variance (:func:`auc_se`), clipped into ``[0, 1]``;
    ``(nan, nan)`` when a class has fewer than two rows."""
    return normal_interval(auc(labels, scores), auc_se(auc_components(labels, scores)), level)
