"""Hyperparameters of the evolutionary width search."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from optembed.errors import ConfigError
from optembed.validation import check_number


@dataclass(frozen=True)
class EvolutionConfig:
    """Population ``population`` of random candidates, then ``generations`` rounds of selection.

    Each round keeps the ``topk`` best candidates (the elites) and adds ``crossover`` children
    and ``mutation`` mutants bred from them. ``None`` counts share ``population - topk``
    between the two (crossover gets the odd one). ``param_budget`` (embedding parameters under
    the row mask) and ``target_sparsity`` bound the candidates; the tighter one wins.
    ``max_auc_drop``: the accuracy bound, one value for every task or a tuple of one per task of a
    multi-task supernet (the primary task's first; :mod:`optembed.evolution.objectives`).
    """

    population: int = 40
    generations: int = 30
    topk: int = 15
    crossover: int | None = None
    mutation: int | None = None
    mutation_prob: float = 0.1
    param_budget: int | None = None
    target_sparsity: float | None = None
    seed: int = 0
    # None: the paper's max-AUC search; else the smallest within this of the best (a tuple: one per task)
    max_auc_drop: float | tuple[float, ...] | None = 0.001
    noise_z: float = 1.0  # standard errors of a paired AUC difference subtracted before the tolerance test

    def counts(self) -> tuple[int, int]:
        """``(crossover, mutation)`` children per generation."""
        rest = max(self.population - self.topk, 0)
        n_c = self.crossover if self.crossover is not None else rest - rest // 2
        n_m = self.mutation if self.mutation is not None else rest - n_c
        return n_c, n_m

    def validate(self) -> None:
        if self.population < 1:
            raise ConfigError(f"--population must be at least 1, got {self.population}")
        if self.generations < 0:
            raise ConfigError(f"--generations must be at least 0, got {self.generations}")
        if not 1 <= self.topk <= self.population:
            raise ConfigError(f"--topk must be in 1..population ({self.population}), got {self.topk}")
        for name, value in (("crossover", self.crossover), ("mutation", self.mutation)):
            if value is not None and value < 0:
                raise ConfigError(f"--{name} must be at least 0, got {value}")
        n_c, n_m = self.counts()
        if n_c > 0 and self.topk < 2:
            raise ConfigError("crossover needs two distinct parents: use --topk 2 or more, or --crossover 0")
        if self.generations > 0 and n_c + n_m == 0:
            raise ConfigError("every generation would repeat the last: give --crossover or --mutation a count")
        check_number("--mutation-prob", self.mutation_prob, 0.0, 1.0, low_open=True)
        if self.param_budget is not None and self.param_budget < 1:
            raise ConfigError(f"--param-budget must be positive, got {self.param_budget}")
        check_number("--noise-z", self.noise_z, 0.0, 10.0)
        drops = self.max_auc_drop if isinstance(self.max_auc_drop, tuple | list) else (self.max_auc_drop,)
        if not drops:
            raise ConfigError("--max-auc-drop needs at least one value")
        for drop in drops:
            check_number("--max-auc-drop", drop, 0.0, 0.5, high_open=True, optional=len(drops) == 1)
        check_number("--target-sparsity", self.target_sparsity, 0.0, 1.0, high_open=True, optional=True)

    def budget(self, total_rows: int, dim: int) -> int | None:
        """The largest allowed number of embedding parameters, or ``None`` for no bound."""
        bounds = []
        if self.param_budget is not None:
            bounds.append(self.param_budget)
        if self.target_sparsity is not None:
            bounds.append(int((1.0 - self.target_sparsity) * total_rows * dim))
        return min(bounds) if bounds else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
