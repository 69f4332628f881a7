"""The run's one step list: the plan is what run takes, each step reads the right upstream; the
TOML schema follows the configuration dataclasses."""

from __future__ import annotations

from dataclasses import field, make_dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from optembed.errors import ConfigError
from optembed.training.config import TrainConfig
from pipelines import baseline, chain, compress, evaluate, preprocess, retrain, run_schema, search, supernet

EVERYTHING = ("original", "optembed-e", "optembed-d", "optembed", "optembed-noretrain", "qr", "autodim")
PLAN = [
    "preprocess",
    "supernet prune-only", "supernet dims-only", "supernet optembed",
    "search prune-only", "search dims-only", "search optembed",
    "retrain original", "retrain optembed-e", "retrain optembed-d", "retrain optembed", "compress optembed",
    "baseline qr", "baseline autodim",
    "evaluate",
]


def config(tmp_path: Path, **kw: Any) -> chain.ChainConfig:
    raw = tmp_path / "train.txt"
    raw.write_text("0\t" + "\t".join(["1"] * 13 + ["a"] * 26) + "\n")
    return chain.ChainConfig(data=raw, device="cpu", latency=False, **kw)


def test_plan_lists_every_step_in_order(tmp_path: Path) -> None:
    cfg = config(tmp_path, variants=EVERYTHING, compress={"variants": ["optembed"]})
    assert chain.plan(cfg) == PLAN
    # the paper's search (no tolerance) searches no row levels: OptEmbed-E keeps the supernet's mask
    paper = config(tmp_path, variants=("optembed-e", "optembed"), search={"max_auc": True})
    assert chain.plan(paper) == ["preprocess", "supernet prune-only", "supernet optembed", "search optembed",
                                 "retrain original", "retrain optembed-e", "retrain optembed", "evaluate"]


def test_run_takes_the_planned_steps_on_their_upstreams(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each stage is replaced by a recorder: run announces and runs exactly the plan, and every
    step's configuration names the artifact of the step it builds on."""
    seen: list[tuple[str, Any]] = []

    def recorder(kind: str):
        def fake(cfg: Any, store: Any, reporter: Any) -> SimpleNamespace:
            seen.append((kind, cfg))
            return SimpleNamespace(fingerprint=f"fp{len(seen)}", cached=False, metrics={})
        return fake

    for module in (preprocess, supernet, search, retrain, compress, baseline, evaluate):
        monkeypatch.setattr(module, "run", recorder(module.STAGE))
    monkeypatch.setattr(chain, "check_before_work", lambda cfg: None)
    cfg = config(tmp_path, variants=EVERYTHING, compress={"variants": ["optembed"]})
    messages: list[str] = []
    reporter = SimpleNamespace(message=messages.append)
    done = chain.run(cfg, store=None, reporter=reporter)  # type: ignore[arg-type]
    assert list(done) == PLAN
    announced = [m.split("] ", 1)[1].split(" (")[0] for m in messages if m.startswith("[")]
    assert announced == PLAN and all(f"[{i}/{len(PLAN)}]" in m for i, m in enumerate(
        (m for m in messages if m.startswith("[")), start=1))
    fp = {name: f"fp{i}" for i, name in enumerate(PLAN, start=1)}
    configs = dict(zip(PLAN, (c for _, c in seen)))
    assert [k for k, _ in seen] == [n.split()[0] for n in PLAN]
    assert {configs[f"supernet {m}"].source for m in ("prune-only", "dims-only", "optembed")} == {fp["preprocess"]}
    assert [configs[f"supernet {m}"].mode for m in ("prune-only", "dims-only", "optembed")] == ["prune-only", "dims-only", "optembed"]
    for mode in ("prune-only", "dims-only", "optembed"):
        assert configs[f"search {mode}"].source == fp[f"supernet {mode}"]
    assert configs["retrain original"].source == fp["preprocess"] and configs["retrain original"].full
    assert configs["retrain original"].init == "fresh" and configs["retrain optembed"].init == "auto"
    for variant, mode in (("optembed-e", "prune-only"), ("optembed-d", "dims-only"), ("optembed", "optembed")):
        assert configs[f"retrain {variant}"].source == fp[f"search {mode}"] and not configs[f"retrain {variant}"].full
    assert configs["compress optembed"].source == fp["retrain optembed"]
    # the compressed variants learn from the Original (the run's default distillation); it learns from the labels
    assert configs["retrain original"].teacher is None and configs["retrain original"].train.distill == 0.0
    for name in ("retrain optembed-e", "retrain optembed-d", "retrain optembed", "baseline qr", "baseline autodim"):
        assert configs[name].teacher == fp["retrain original"] and configs[name].train.distill == chain.DEFAULT_DISTILL, name
    assert configs["baseline qr"].source == fp["preprocess"] and configs["baseline autodim"].method == "autodim"
    # evaluated in the variants' order; the no-retrain variant is the optembed search itself
    assert configs["evaluate"].sources == [fp[n] for n in (
        "retrain original", "retrain optembed-e", "retrain optembed-d", "retrain optembed", "compress optembed",
        "search optembed", "baseline qr", "baseline autodim")]


def test_the_teacher_is_trained_first_even_when_not_compared(tmp_path: Path) -> None:
    assert chain.plan(config(tmp_path, variants=("optembed", "qr"))) == [
        "preprocess", "supernet optembed", "search optembed", "retrain original", "retrain optembed", "baseline qr", "evaluate"]
    # the Original listed after the variants: still trained first, once, and evaluated where it is listed
    late = config(tmp_path, variants=("optembed", "original"))
    assert chain.plan(late) == ["preprocess", "supernet optembed", "search optembed", "retrain original", "retrain optembed",
                                "evaluate"]
    assert list(chain.evaluated_steps(late)) == ["optembed", "original"]
    # no distillation: no teacher step, nothing but the variants
    assert chain.plan(config(tmp_path, variants=("optembed",), distill=0.0)) == [
        "preprocess", "supernet optembed", "search optembed", "retrain optembed", "evaluate"]
    assert "retrain original" not in chain.plan(config(tmp_path, variants=("optembed-noretrain",)))


def test_distillation_is_a_run_key(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('[data]\npath = "x.txt"\n[run]\ndistill = 0.3\n')
    assert chain.load_config(path).distill == 0.3
    path.write_text('[data]\npath = "x.txt"\n[retrain]\ndistill = 0.3\n')
    with pytest.raises(ConfigError, match=r"\[retrain\] distill: a run distils from its own Original; set \[run\] distill"):
        chain.load_config(path).validate()
    with pytest.raises(ConfigError, match=r"\[run\] distill must be a weight in \[0, 1\]"):
        config(tmp_path, distill=1.5).validate()


def test_toml_keys_follow_the_dataclass_fields() -> None:
    grown = make_dataclass("Grown", [("new_knob", int, field(default=3))], bases=(TrainConfig,))
    assert run_schema.build(grown, {"new_knob": 5, "lr": 1}, "supernet").new_knob == 5
    with pytest.raises(ConfigError, match=r"^run.toml: \[supernet\] new_knob = 2.5 should be of type int \(like 3\)$"):
        run_schema.build(grown, {"new_knob": 2.5}, "supernet", "run.toml")
    with pytest.raises(ConfigError, match=r"^run.toml: unknown key\(s\) in \[supernet\]: eopchs, lrr$"):
        run_schema.build(TrainConfig, {"lrr": 1, "eopchs": 2, "lr": 0.1}, "supernet", "run.toml")
    for key, value in (("epochs", True), ("epochs", "3"), ("lr", "0.1"), ("compile", 1), ("embedding_lr", False)):
        with pytest.raises(ConfigError, match=f"{key} = "):
            run_schema.build(TrainConfig, {key: value}, "retrain")
    built = run_schema.build(TrainConfig, {"embedding_lr": 1, "lr": 2, "epochs": 4}, "retrain")
    assert (built.embedding_lr, built.lr, built.epochs) == (1.0, 2.0, 4)


def test_load_config_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('[data]\npath = "x.txt"\n[search]\nrow_levels = ["half"]\n')
    with pytest.raises(ConfigError, match=r"run.toml: \[search\] row_levels = \['half'\] should be of type list of float"):
        chain.load_config(path)
    path.write_text('[data]\npath = "x.txt"\nsplit = [0.8, 0.2]\n')
    with pytest.raises(ConfigError, match=r"run.toml: \[data\] split = \[0.8, 0.2\] should be of type list of 3 float"):
        chain.load_config(path)
    path.write_text('[data]\npath = "x.txt"\nformat = "avazu"\nsplit = [0.8, 0.1, 0.1]\n[search]\nrow_levels = [0, 0.5]\n'
                    '[run]\nvariants = ["qr"]\n')
    cfg = chain.load_config(path)
    assert cfg.preprocess.fmt == "avazu" and cfg.preprocess.split == (0.8, 0.1, 0.1) and cfg.variants == ("qr",)
    assert chain.search_stage(cfg.search, "s", "cpu").row_levels == (0.0, 0.5)
