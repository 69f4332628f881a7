"""Distillation from a teacher: the blended loss and its gradient against hand computations, a
planted teacher the student must follow, the teacher frozen and deterministic, and the stage's
checks (the teacher's data, its place in the fingerprint, the chain of the student)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from optembed.data.tensors import SplitTensors
from optembed.errors import ArtifactError, ConfigError
from optembed.models.config import ModelConfig
from optembed.models.registry import build_model
from optembed.training.config import TrainConfig
from optembed.training.distill import Teacher, distilled_bce
from optembed.training.trainer import Trainer
from pipelines import retrain
from pipelines.readers import resolve_chain
from pipelines.teacher import TEACHER_KEY
from tests.pipeline_fixtures import SMALL_MODEL, small_supernet, synthetic_preprocess

CPU = torch.device("cpu")
CARDS = [8, 8, 8]


def bce(z: float, t: float) -> float:
    """Binary cross-entropy of logit ``z`` against target ``t``, by hand."""
    p = 1.0 / (1.0 + math.exp(-z))
    return -(t * math.log(p) + (1.0 - t) * math.log(1.0 - p))


def test_blended_loss_and_gradient_by_hand() -> None:
    z = torch.tensor([0.3, -1.2, 2.0], requires_grad=True)
    y = torch.tensor([1.0, 0.0, 0.0])
    soft = torch.tensor([0.8, 0.1, 0.6])
    w = 0.3
    loss = distilled_bce(z, y, soft, w)
    expected = sum((1 - w) * bce(zi, yi) + w * bce(zi, pi) for zi, yi, pi in zip(z.tolist(), y.tolist(), soft.tolist())) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    # d/dz = sigmoid(z) - ((1 - w) y + w p), averaged over the batch
    target = (1 - w) * y + w * soft
    assert torch.allclose(z.grad, (torch.sigmoid(z.detach()) - target) / 3, atol=1e-7)
    # no teacher, or weight 0: the plain BCE exactly
    plain = torch.nn.functional.binary_cross_entropy_with_logits(z.detach(), y)
    assert distilled_bce(z.detach(), y, None, 0.7).item() == plain.item()
    assert distilled_bce(z.detach(), y, soft, 0.0).item() == plain.item()


def test_blended_loss_of_several_tasks_by_hand() -> None:
    z = torch.tensor([[0.5, -0.5], [1.0, 2.0]])
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    soft = torch.tensor([[0.9, 0.2], [0.4, 0.7]])
    weights = torch.tensor([1.0, 3.0])
    w = 0.5
    per_task = [
        sum((1 - w) * bce(z[i, t].item(), y[i, t].item()) + w * bce(z[i, t].item(), soft[i, t].item()) for i in range(2)) / 2
        for t in range(2)
    ]
    assert distilled_bce(z, y, soft, w, weights).item() == pytest.approx(per_task[0] + 3.0 * per_task[1], rel=1e-6)
    summed = distilled_bce(z, y, soft, w, weights, reduction="sum").item()
    assert summed == pytest.approx(2 * (per_task[0] + 3.0 * per_task[1]), rel=1e-6)


class Constant(nn.Module):
    """A teacher that believes every row has probability ``p`` (and has dropout, to show eval mode)."""

    tasks = 1

    def __init__(self, p: float) -> None:
        super().__init__()
        self.logit = nn.Parameter(torch.tensor(math.log(p / (1 - p))))
        self.drop = nn.Dropout(0.5)

    def forward(self, x: Tensor, widths: Tensor | None = None) -> Tensor:
        return self.drop(self.logit.expand(x.shape[0]).clone())


def split(n: int, seed: int, rate: float, ids: int = 8) -> SplitTensors:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, ids, (n, 3), generator=g, dtype=torch.int32)
    return SplitTensors(x, (torch.rand(n, generator=g) < rate).float())


def mean_probability(model: nn.Module, data: SplitTensors) -> float:
    model.eval()
    with torch.no_grad():
        return float(torch.sigmoid(model(data.x)).mean())


@pytest.mark.parametrize("w", [0.0, 0.5, 1.0])
def test_the_student_follows_a_planted_teacher(w: float) -> None:
    """Labels at rate 0.2 on rows that are all alike (one id per field); a teacher sure of 0.7
    everywhere: the student's probability settles at the blend (1 - w) 0.2 + w 0.7."""
    torch.manual_seed(0)
    model = build_model(CARDS, ModelConfig("fnn", embed_dim=4, mlp_dims=(8,), batch_norm=False, dropout=0.0))
    teacher = Teacher(Constant(0.7), CPU)
    cfg = TrainConfig(epochs=10, batch_size=256, lr=5e-2, patience=0, distill=w, embedding_l2=0.0, lr_decay=1.0)
    Trainer(model, cfg, CPU, teacher=teacher if w > 0 else None).fit(split(4000, 1, 0.2, 1), split(1000, 2, 0.2, 1))
    assert mean_probability(model, split(2000, 3, 0.2, 1)) == pytest.approx((1 - w) * 0.2 + w * 0.7, abs=0.03)


def test_the_teacher_is_frozen_and_deterministic() -> None:
    constant = Constant(0.3)
    teacher = Teacher(constant, CPU)
    x = torch.zeros(64, 3, dtype=torch.int32)
    first, second = teacher.targets(x), teacher.targets(x)
    assert torch.equal(first, second) and torch.allclose(first, torch.full((64,), 0.3))  # dropout off
    assert not constant.training and not constant.logit.requires_grad
    model = build_model(CARDS, ModelConfig("fnn", embed_dim=4, mlp_dims=(8,)))
    before = constant.logit.detach().clone()
    Trainer(model, TrainConfig(epochs=1, batch_size=256, distill=0.5), CPU, teacher=teacher).fit(split(1000, 1, 0.3), split(300, 2, 0.3))
    assert torch.equal(constant.logit.detach(), before)


def test_trainer_refuses_a_weight_without_teacher_and_a_task_mismatch() -> None:
    model = build_model(CARDS, ModelConfig("fnn", embed_dim=4, mlp_dims=(8,)))
    with pytest.raises(ConfigError, match="--distill 0.5 needs a teacher"):
        Trainer(model, TrainConfig(distill=0.5), CPU)
    two = build_model(CARDS, ModelConfig("fnn", embed_dim=4, mlp_dims=(8,), tasks=2))
    with pytest.raises(ConfigError, match="the teacher predicts 1 task"):
        Trainer(two, TrainConfig(distill=0.5), CPU, teacher=Teacher(Constant(0.5), CPU))
    with pytest.raises(ConfigError, match=r"--distill must be a weight in \[0, 1\]"):
        TrainConfig(distill=1.2).validate()


# -- the stage ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("distill")
    store, pre, _ = synthetic_preprocess(root, rows=6000)
    train = TrainConfig(epochs=1, batch_size=512)
    original = retrain.run(retrain.RetrainStage(source=pre.fingerprint, full=True, model=SMALL_MODEL, train=train, device="cpu"), store)
    sn = small_supernet(store, epochs=1)
    return {"store": store, "pre": pre, "original": original, "supernet": sn, "train": train, "root": root}


def test_a_distilled_retrain_names_its_teacher(trained: dict[str, object]) -> None:
    store, original, sn, train = trained["store"], trained["original"], trained["supernet"], trained["train"]
    plain = retrain.run(retrain.RetrainStage(source=sn.fingerprint, train=train, device="cpu"), store)  # type: ignore[attr-defined]
    taught = retrain.run(retrain.RetrainStage(
        source=sn.fingerprint, teacher=original.fingerprint, train=TrainConfig(epochs=1, batch_size=512, distill=0.5),  # type: ignore[attr-defined]
        device="cpu"), store)
    assert taught.fingerprint != plain.fingerprint
    # auto: a warm start on the labels alone, a fresh start under a teacher
    assert plain.params["init"] == "supernet" and taught.params["init"] == "fresh"  # type: ignore[attr-defined]
    assert taught.upstream[TEACHER_KEY] == original.fingerprint and TEACHER_KEY not in plain.upstream  # type: ignore[attr-defined]
    assert taught.metrics["teacher"] == original.fingerprint and taught.metrics["distill"] == 0.5  # type: ignore[attr-defined]
    assert "teacher" not in plain.metrics
    # the student's chain is its own (the teacher is not an ancestor of its data or masks)
    chain = resolve_chain(store, taught)  # type: ignore[arg-type]
    assert chain["supernet"].fingerprint == sn.fingerprint and chain["retrain"].fingerprint == taught.fingerprint  # type: ignore[attr-defined]


def test_a_teacher_must_come_with_a_weight_and_the_same_data(trained: dict[str, object], tmp_path: Path) -> None:
    store, original, sn, train = trained["store"], trained["original"], trained["supernet"], trained["train"]
    with pytest.raises(ConfigError, match="--teacher needs a distillation weight"):
        retrain.run(retrain.RetrainStage(source=sn.fingerprint, teacher=original.fingerprint, train=train, device="cpu"), store)  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="needs a teacher"):
        retrain.run(retrain.RetrainStage(source=sn.fingerprint, train=TrainConfig(epochs=1, distill=0.5), device="cpu"), store)  # type: ignore[attr-defined]
    with pytest.raises(ArtifactError, match="expected retrain"):
        retrain.run(retrain.RetrainStage(source=sn.fingerprint, teacher=sn.fingerprint,  # type: ignore[attr-defined]
                                         train=TrainConfig(epochs=1, distill=0.5), device="cpu"), store)
    # a teacher trained on other data (another preprocess in the same store)
    other_store, other_pre, _ = synthetic_preprocess(trained["root"], rows=6000, seed=1)  # type: ignore[arg-type]
    stranger = retrain.run(retrain.RetrainStage(source=other_pre.fingerprint, full=True, model=SMALL_MODEL, train=train,
                                                device="cpu"), other_store)
    with pytest.raises(ArtifactError, match="a teacher must have seen the same data and ids"):
        retrain.run(retrain.RetrainStage(source=sn.fingerprint, teacher=stranger.fingerprint,  # type: ignore[attr-defined]
                                         train=TrainConfig(epochs=1, distill=0.5), device="cpu"), store)


def test_cli_refuses_a_weight_without_teacher(cli, trained: dict[str, object]) -> None:  # type: ignore[no-untyped-def]
    store, sn = trained["store"], trained["supernet"]
    result = cli("retrain", "--from", sn.fingerprint, "--distill", "0.4", "--artifacts", str(store.root))  # type: ignore[attr-defined]
    assert result.exit_code != 0
    assert result.stderr.strip().splitlines() == ["error: --distill 0.4 needs a teacher: --teacher ID (a retrain artifact of the same data)"]


def test_a_distilled_supernet_learns_from_its_teacher(trained: dict[str, object]) -> None:
    """The supernet under a teacher: the teacher is an upstream (a new fingerprint), the trainer
    receives it, and a search and retrain of that supernet follow its own chain."""
    from pipelines import supernet

    store, original = trained["store"], trained["original"]
    seen: list[object] = []
    init = supernet.Trainer.__init__

    def recording(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(kwargs.get("teacher"))
        init(self, *args, **kwargs)

    cfg = TrainConfig(epochs=1, batch_size=512, patience=5, distill=0.5)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(supernet.Trainer, "__init__", recording)
        taught = supernet.run(supernet.SupernetStage(model=SMALL_MODEL, train=cfg, teacher=original.fingerprint,  # type: ignore[attr-defined]
                                                     source=trained["pre"].fingerprint, device="cpu"), store)  # type: ignore[arg-type, attr-defined]
    assert len(seen) == 1 and isinstance(seen[0], Teacher)
    plain = supernet.run(supernet.SupernetStage(model=SMALL_MODEL, train=replace(cfg, distill=0.0),
                                                source=trained["pre"].fingerprint, device="cpu"), store)  # type: ignore[arg-type, attr-defined]
    assert taught.fingerprint != plain.fingerprint and TEACHER_KEY not in plain.upstream
    assert taught.upstream[TEACHER_KEY] == original.fingerprint and taught.metrics["teacher"] == original.fingerprint  # type: ignore[attr-defined]
    assert resolve_chain(store, taught)["preprocess"].fingerprint == trained["pre"].fingerprint  # type: ignore[arg-type, attr-defined]
    with pytest.raises(ConfigError, match="needs a teacher"):
        supernet.run(supernet.SupernetStage(model=SMALL_MODEL, train=cfg, source=trained["pre"].fingerprint, device="cpu"), store)  # type: ignore[arg-type, attr-defined]


def test_the_run_trains_its_teacher_before_distilled_supernets(tmp_path: Path) -> None:
    from pipelines import chain

    plain = [s.name for s in chain.steps(chain.ChainConfig(data=tmp_path / "x.txt", variants=("original", "optembed")))]
    assert plain.index("retrain original") > plain.index("supernet optembed")
    cfg = chain.ChainConfig(data=tmp_path / "x.txt", variants=("original", "optembed"), distill_supernet=True)
    names = [s.name for s in chain.steps(cfg)]
    assert names.index("retrain original") < names.index("supernet optembed") and names.count("retrain original") == 1
