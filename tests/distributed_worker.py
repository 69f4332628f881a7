"""Helpers of tests/test_distributed.py: a tiny planted data set and a training run that works the
same in one process and in every rank of a gloo process group (spawned by torch.multiprocessing)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from optembed.data.tensors import SplitTensors
from optembed.models.config import ModelConfig
from optembed.models.registry import build_model
from optembed.training.config import TrainConfig
from optembed.training.runtime import Runtime, runtime_from_env, single
from optembed.training.trainer import Trainer

CARDS = [30, 20, 12, 8]
MODEL = ModelConfig("deepfm", embed_dim=4, mlp_dims=(16,), batch_norm=False, dropout=0.0)  # dropout masks are drawn per rank: no exact equality


def planted(rows: int, seed: int) -> SplitTensors:
    """Ids per field and labels from a logistic model of two fields' ids (learnable signal)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.stack([torch.randint(0, c, (rows,), generator=gen) for c in CARDS], dim=1).to(torch.int32)
    logit = (x[:, 0] % 5).float() - 2.0 + 0.5 * ((x[:, 1] % 3).float() - 1.0)
    y = (torch.rand(rows, generator=gen) < torch.sigmoid(logit)).float()
    return SplitTensors(x, y)


def train(runtime: Runtime, settings: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], list[float]]:
    """Train from seeded weights; ``(initial state, final state, validation AUC per epoch)``."""
    torch.manual_seed(7)
    model = build_model(CARDS, MODEL, settings.get("mode", "optembed"))
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    cfg = TrainConfig(**settings.get("train", {}))
    trainer = Trainer(model, cfg, runtime.device, runtime=runtime)
    result = trainer.fit(planted(settings["rows"], 1), planted(600, 2))
    final = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return start, final, [float(r["val_auc"]) for r in result.history]


def one_process(settings: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], list[float]]:
    return train(single(torch.device("cpu")), settings)


def rank_main(rank: int, world: int, port: int, settings: dict[str, Any], out: str) -> None:
    """Entry of a spawned rank: join the group through the launcher's variables, train, save."""
    os.environ.update(
        {"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1",
         "MASTER_PORT": str(port)}
    )
    torch.set_num_threads(1)
    runtime = runtime_from_env("cpu")
    _, final, aucs = train(runtime, settings)
    torch.save({"state": final, "aucs": aucs}, Path(out) / f"rank{rank}.pt")
    # a spawned process ends without running atexit handlers (the runtime's leave among them): leave
    # the group here, or gloo's threads can outlive it and abort the process on its way out
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
