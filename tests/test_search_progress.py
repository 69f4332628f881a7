"""The row-level search's progress bar never counts more steps than its total, and ends full."""

from __future__ import annotations

import torch

from optembed.data.tensors import SplitTensors
from optembed.evolution import EvolutionConfig
from optembed.models.config import ModelConfig
from optembed.models.registry import build_model
from pipelines.search import SearchStage, _row_phase

CARDS = [12, 9, 7, 15]


class RecordingTask:
    def __init__(self, total: float | None) -> None:
        self.total = total
        self.completed = 0.0
        self.seen: list[tuple[float, float | None]] = []

    def advance(self, amount: float = 1.0) -> None:
        self.completed += amount
        self.seen.append((self.completed, self.total))

    def update(self, *, description: str | None = None, total: float | None = None) -> None:
        if total is not None:
            self.total = total
        self.seen.append((self.completed, self.total))

    def close(self) -> None:
        return None


class RecordingReporter:
    def __init__(self) -> None:
        self.tasks: list[RecordingTask] = []

    def task(self, description: str, total: float | None = None, unit: str = "it") -> RecordingTask:
        self.tasks.append(RecordingTask(total))
        return self.tasks[-1]

    def message(self, text: str) -> None:
        return None


def test_row_phase_progress_never_passes_its_total() -> None:
    torch.manual_seed(0)
    model = build_model(CARDS, ModelConfig("fnn", embed_dim=4, mlp_dims=(8,)), "optembed").eval()
    n = 600
    x = torch.stack([torch.randint(0, c, (n,)) for c in CARDS], 1).to(torch.int32)
    y = (torch.rand(n) < 0.4).float()
    rows = int(model.embedder.embedding.num_rows)
    # a tolerance that accepts every level: the mask phase tries every field
    config = SearchStage(evolution=EvolutionConfig(max_auc_drop=1.0), row_levels=(0.5, 0.25))
    rep = RecordingReporter()
    _row_phase(model, SplitTensors(x, y), torch.device("cpu"), torch.ones(rows, dtype=torch.bool), config, rep)
    (task,) = rep.tasks
    assert all(done <= total for done, total in task.seen if total is not None), task.seen
    assert task.completed == task.total  # the bar ends full
    assert task.completed > len(CARDS)  # both phases counted: single-field scoring and the mask
