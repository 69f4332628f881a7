"""The selection split: training rows a supernet holds out for the search to score on.

Checked against brute force: the held-out rows partition the training split, the supernet trains
on the rest only, and the search's full-width AUC is the supernet's AUC on exactly those rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from optembed.data.selection import choose_rows, split_off
from optembed.data.tensors import SplitTensors
from optembed.errors import ConfigError
from optembed.evolution import EvolutionConfig
from optembed.metrics import auc
from optembed.models.checkpoint import load_model
from optembed.training.config import TrainConfig
from pipeline_fixtures import SMALL_MODEL, synthetic_preprocess
from pipelines import chain, search, supernet
from pipelines.data import load_dataset
from pipelines.readers import load_selection

CPU = torch.device("cpu")


def test_rows_are_a_seeded_sorted_sample() -> None:
    rows = choose_rows(1000, 0.1, seed=3)
    assert rows.numel() == 100 and torch.equal(rows, torch.sort(rows).values) and rows.unique().numel() == 100
    assert torch.equal(rows, choose_rows(1000, 0.1, seed=3))
    assert not torch.equal(rows, choose_rows(1000, 0.1, seed=4))
    assert choose_rows(1000, 0.0, seed=3).numel() == 0
    assert choose_rows(2, 0.5, seed=0).numel() == 1  # one row always left to train on
    assert choose_rows(3, 0.01, seed=0).numel() == 1  # a positive fraction holds out at least one row
    with pytest.raises(ConfigError, match="--selection"):
        choose_rows(10, 0.6, seed=0)


def test_split_off_partitions_the_rows_in_order() -> None:
    x = torch.arange(20, dtype=torch.int32).view(10, 2)
    y = torch.tensor([0, 1] * 5, dtype=torch.float32)
    rest, held = split_off(SplitTensors(x, y), torch.tensor([1, 4, 9]))
    assert held.x[:, 0].tolist() == [2, 8, 18] and held.y.tolist() == [1.0, 0.0, 1.0]
    assert rest.x[:, 0].tolist() == [0, 4, 6, 10, 12, 14, 16]
    with pytest.raises(ConfigError, match="reach row"):
        split_off(SplitTensors(x, y), torch.tensor([10]))


@pytest.fixture(scope="module")
def held_out(tmp_path_factory: pytest.TempPathFactory):
    store, pre, _ = synthetic_preprocess(tmp_path_factory.mktemp("selection"), rows=20000)
    cfg = TrainConfig(epochs=1, batch_size=512, patience=5)
    seen: list[int] = []
    fit = supernet.Trainer.fit

    def recording_fit(self, train, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(len(train))
        return fit(self, train, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(supernet.Trainer, "fit", recording_fit)
        sn = supernet.run(
            supernet.SupernetStage(model=SMALL_MODEL, mode="optembed", train=cfg, device="cpu", selection=0.2), store
        )
    return store, pre, sn, seen


def test_the_supernet_trains_without_its_selection_rows(held_out) -> None:
    store, pre, sn, seen = held_out
    rows = load_selection(sn)
    train = load_dataset(pre, CPU, splits=("train",)).splits["train"]
    assert rows is not None and rows.numel() == round(0.2 * len(train)) == sn.metrics["selection_rows"]
    assert seen == [len(train) - rows.numel()]  # it trained on the rest only
    assert torch.equal(rows, choose_rows(len(train), 0.2, seed=TrainConfig().seed))
    assert sn.params["selection"] == 0.2
    plain = supernet.SupernetStage(model=SMALL_MODEL, train=TrainConfig(epochs=1, batch_size=512, patience=5))
    assert "selection" not in supernet.stage_params(plain)  # supernets made before the option keep their fingerprints
    assert any("sized from 12,800 training rows" in note for note in sn.notes)  # 16,000 less the 3,200 held out


def test_the_search_scores_on_the_held_out_rows(held_out) -> None:
    store, pre, sn, _ = held_out
    evo = EvolutionConfig(population=6, generations=1, topk=3, max_auc_drop=None)
    found = search.run(search.SearchStage(source=sn.fingerprint, evolution=evo, device="cpu", rows=False), store)
    rows = load_selection(sn)
    assert rows is not None
    assert found.metrics["scored_on"] == "selection" and found.metrics["val_rows"] == rows.numel()
    train = load_dataset(pre, CPU, splits=("train",)).splits["train"]
    model, _ = load_model(sn.output("model"), CPU)
    model.embedder.set_row_mask(torch.load(sn.output("row_mask"), weights_only=True)["mask"])
    model.eval()
    with torch.no_grad():
        logits = model(train.x[rows].long()).squeeze(-1)
    expected = auc(train.y[rows], logits)
    best = json.loads(Path(found.output("best")).read_text())
    assert best["full_width_val_auc"] == pytest.approx(expected, abs=1e-6)
    val = load_dataset(pre, CPU, splits=("val",)).splits["val"]
    with torch.no_grad():
        on_val = auc(val.y, model(val.x.long()).squeeze(-1))
    assert abs(on_val - expected) > 1e-6  # a different split from validation


def test_the_run_checks_its_selection(tmp_path: Path) -> None:
    cfg = chain.ChainConfig(data=tmp_path / "x.txt", selection=0.7)
    with pytest.raises(ConfigError, match="selection"):
        cfg.validate()


def test_the_run_file_sets_selection_and_a_distilled_supernet(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("")
    toml = tmp_path / "run.toml"
    toml.write_text('[data]\npath = "x.txt"\n[run]\nselection = 0.1\ndistill_supernet = true\n')
    cfg = chain.load_config(toml)
    assert cfg.selection == 0.1 and cfg.distill_supernet
    made = chain._supernet_config(cfg, "optembed", "preprocess", {"preprocess": _Fake("p"), "retrain original": _Fake("o")})
    assert made.selection == 0.1 and made.teacher == "o" and made.train.distill == cfg.distill
    plain = chain._supernet_config(chain.ChainConfig(data=tmp_path / "x.txt"), "optembed", "preprocess", {"preprocess": _Fake("p")})
    assert plain.selection == 0.0 and plain.teacher is None and plain.train.distill == 0.0
    toml.write_text('[data]\npath = "x.txt"\n[run]\nselection = "lots"\n')
    with pytest.raises(ConfigError, match="selection"):
        chain.load_config(toml)


class _Fake:
    def __init__(self, fingerprint: str) -> None:
        self.fingerprint = fingerprint
