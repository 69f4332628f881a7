"""Fingerprinted parameters come from the stage configurations' fields.

Every expected dict below is written out literally, as the stages built their parameters by hand
before they were derived from the dataclasses: an artifact made then must keep its fingerprint.
"""

from __future__ import annotations

from dataclasses import field, make_dataclass
from pathlib import Path

import pytest

from optembed.data.preprocess import PreprocessConfig
from optembed.evolution import EvolutionConfig
from optembed.fingerprint import fingerprint_params
from optembed.models.config import ModelConfig
from optembed.quantization.config import QuantizerConfig
from optembed.quantization.finetune import FinetuneConfig
from optembed.training.config import TrainConfig
from pipelines import baseline, compress, evaluate, export, preprocess, retrain, search, supernet
from pipelines.readers import train_params
from pipelines.store import fingerprint

DEEPFM = {"name": "deepfm", "embed_dim": 16, "mlp_dims": [400, 400, 400], "dropout": 0.2, "batch_norm": True,
          "cross_layers": 6, "norm": "l1", "init_std": 0.01}
DCN = {"name": "dcn", "embed_dim": 8, "mlp_dims": [64, 32], "dropout": 0.0, "batch_norm": False, "cross_layers": 2,
       "norm": "l2", "init_std": 0.02}
FNN4 = {"name": "fnn", "embed_dim": 4, "mlp_dims": [400, 400, 400], "dropout": 0.2, "batch_norm": True,
        "cross_layers": 6, "norm": "l1", "init_std": 0.01}

TRAIN_CONFIGS = {
    "default": TrainConfig(),
    "t1": TrainConfig(epochs=3, batch_size=512, lr=0.01, lr_decay=1.0, monitor="auc", freq_lr="clip", freq_lr_c0=5.0,
                      embedding_optimizer="rowwise-adagrad", compile=True, eval_batch_size=99, check_every=7, amp="bf16"),
    "t2": TrainConfig(batch_size=256, embedding_l2=0.05, freq_lr_c0=5.0, evals_per_epoch=3,
                      reinit_embeddings_each_epoch=True, embedding_lr=0.01, patience=0, seed=7,
                      threshold_optimizer="adam", weight_decay=1e-5),
    "t3": TrainConfig(batch_size=1024, freq_lr="smooth", freq_lr_power=1.0, lr_decay=0.5, embedding_l2=0.0,
                      monitor="auc"),
}
TRAIN = {
    "default": {"epochs": 50, "batch_size": 0, "lr": 0.001, "weight_decay": 0.0, "alpha": 0.0001, "threshold_lr": 0.0001,
                "threshold_optimizer": "sgd", "patience": 2, "seed": 2022, "amp": "none", "lr_decay": 0.1,
                "monitor": "auc-logloss"},
    "t1": {"epochs": 3, "batch_size": 512, "lr": 0.01, "weight_decay": 0.0, "alpha": 0.0001, "threshold_lr": 0.0001,
           "threshold_optimizer": "sgd", "patience": 2, "seed": 2022, "amp": "bf16",
           "embedding_optimizer": "rowwise-adagrad", "freq_lr": "clip", "freq_lr_c0": 5.0},
    "t2": {"epochs": 50, "batch_size": 256, "lr": 0.001, "weight_decay": 1e-05, "alpha": 0.0001, "threshold_lr": 0.0001,
           "threshold_optimizer": "adam", "patience": 0, "seed": 7, "amp": "none", "embedding_lr": 0.01,
           "reinit_embeddings_each_epoch": True, "evals_per_epoch": 3, "embedding_l2": 0.05, "lr_decay": 0.1,
           "monitor": "auc-logloss"},
    "t3": {"epochs": 50, "batch_size": 1024, "lr": 0.001, "weight_decay": 0.0, "alpha": 0.0001, "threshold_lr": 0.0001,
           "threshold_optimizer": "sgd", "patience": 2, "seed": 2022, "amp": "none", "freq_lr": "smooth",
           "freq_lr_power": 1.0, "embedding_l2": 0.0, "lr_decay": 0.5},
}
EVOLUTION = {"population": 40, "generations": 30, "topk": 15, "crossover": None, "mutation": None, "mutation_prob": 0.1,
             "param_budget": None, "target_sparsity": None, "seed": 0, "max_auc_drop": 0.001, "noise_z": 1.0}
QUANTIZER = {"groups": 4, "codebook": 256, "popularity": "log", "balance_weight": 0.1, "contrastive_weight": 0.1,
             "temperature": 0.1, "soft_temperature": 0.1, "steps": 300, "kmeans_iters": 10, "kmeans_sample": 256,
             "kmeans_backend": "torch", "max_epochs": 10.0, "batch_size": 4096, "lr": 0.01, "seed": 0,
             "code_dtype": "auto", "sub_dim": None, "codebook_share": 0.25}
FINETUNE = {"epochs": 1, "lr": 0.0001, "batch_size": 2048, "patience": 1, "seed": 0, "eval_batch_size": 32768}


@pytest.mark.parametrize("name", sorted(TRAIN))
def test_train_params(name: str) -> None:
    assert train_params(TRAIN_CONFIGS[name]) == TRAIN[name]
    assert TRAIN_CONFIGS[name].to_params() == TRAIN[name]


def test_supernet_params() -> None:
    cases = [
        (supernet.SupernetStage(model=ModelConfig("deepfm")), {"model": DEEPFM, "mode": "optembed", "train": TRAIN["default"]}),
        (supernet.SupernetStage(model=ModelConfig("dcn", embed_dim=8, mlp_dims=(64, 32), dropout=0.0, batch_norm=False,
                                                  cross_layers=2, norm="l2", init_std=0.02),
                                mode="prune-only", train=TRAIN_CONFIGS["t1"], source="ab", device="cpu", stream=True,
                                shuffle_buffer=7, resume=True, force=True),
         {"model": DCN, "mode": "prune-only", "train": TRAIN["t1"]}),
        (supernet.SupernetStage(model=ModelConfig("fnn", embed_dim=4), mode="dims-only", train=TRAIN_CONFIGS["t2"]),
         {"model": FNN4, "mode": "dims-only", "train": TRAIN["t2"]}),
    ]
    for config, expected in cases:
        assert supernet.stage_params(config) == expected


def test_search_params() -> None:
    s2 = search.SearchStage(
        source="ab", evolution=EvolutionConfig(population=8, generations=2, topk=3, max_auc_drop=None, param_budget=1000, seed=4),
        device="cpu", rows_per_pass=64, block=0, amp="bf16", row_levels=(0.5, 0.0, 0.5, 0.25), row_rank="norm",
        min_traffic=0.5, force=True,
    )
    s3 = search.SearchStage(evolution=EvolutionConfig(crossover=2, mutation=3, mutation_prob=0.2, target_sparsity=0.5,
                                                      noise_z=2.0), rows=False, row_levels=(0.1,))
    evo2 = {**EVOLUTION, "population": 8, "generations": 2, "topk": 3, "param_budget": 1000, "seed": 4,
            "max_auc_drop": None}
    evo3 = {**EVOLUTION, "crossover": 2, "mutation": 3, "mutation_prob": 0.2, "target_sparsity": 0.5, "noise_z": 2.0}
    rows = {"row_levels": [0.0, 0.03125, 0.0625, 0.125, 0.25, 0.5], "row_rank": "impact", "min_traffic": 0.5}
    assert search.stage_params(search.SearchStage(), True) == {"evolution": EVOLUTION, "amp": "none", **rows}
    assert search.stage_params(search.SearchStage(), False) == {"evolution": EVOLUTION, "amp": "none"}
    assert search.stage_params(s2, True) == {"evolution": evo2, "amp": "bf16", "row_levels": [0.0, 0.25, 0.5],
                                             "row_rank": "norm", "min_traffic": 0.5}
    assert search.stage_params(s2, False) == {"evolution": evo2, "amp": "bf16"}
    assert search.stage_params(s3, True) == {"evolution": evo3, "amp": "none", "row_levels": [0.1], "row_rank": "impact",
                                             "min_traffic": 0.5}


def test_retrain_params() -> None:
    dcn = ModelConfig("dcn", embed_dim=8, mlp_dims=(64, 32), dropout=0.0, batch_norm=False, cross_layers=2, norm="l2",
                      init_std=0.02)
    cases = [
        (retrain.RetrainStage(init="supernet"), ModelConfig("deepfm"), "optembed",
         {"full": False, "init": "supernet", "variant": "optembed", "model": DEEPFM, "train": TRAIN["default"]}),
        (retrain.RetrainStage(source="x", full=True, init="fresh", train=TRAIN_CONFIGS["t2"], model=dcn, device="cpu",
                              stream=True, shuffle_buffer=9, resume=True, force=True), dcn, "original",
         {"full": True, "init": "fresh", "variant": "original", "model": DCN, "train": TRAIN["t2"]}),
        # the model of the plan (the supernet's) is fingerprinted, not the one given for --full
        (retrain.RetrainStage(init="rewind", train=TRAIN_CONFIGS["t3"], model=dcn), ModelConfig("deepfm"), "optembed-e",
         {"full": False, "init": "rewind", "variant": "optembed-e", "model": DEEPFM, "train": TRAIN["t3"]}),
    ]
    for config, model, variant, expected in cases:
        assert retrain.stage_params(config, model, variant) == expected


def test_baseline_params() -> None:
    dcn = ModelConfig("dcn", embed_dim=8, mlp_dims=(64, 32), dropout=0.0, batch_norm=False, cross_layers=2, norm="l2",
                      init_std=0.02)
    cases = [
        (baseline.BaselineStage("qr", options={"operation": "mult", "collisions": 2, "min_rows": 100}),
         {"method": "qr", "options": {"collisions": 2, "min_rows": 100, "operation": "mult"}, "model": DEEPFM,
          "train": TRAIN["default"]}),
        (baseline.BaselineStage("autodim", model=dcn, train=TRAIN_CONFIGS["t1"], source="p", device="cpu", force=True,
                                options={"transform": "pad", "candidates": [2, 4], "arch_lr": 0.001, "temperature": 1.0,
                                         "temperature_decay": 5e-5}),
         {"method": "autodim", "options": {"arch_lr": 0.001, "candidates": [2, 4], "temperature": 1.0,
                                           "temperature_decay": 5e-05, "transform": "pad"},
          "model": DCN, "train": TRAIN["t1"]}),
        (baseline.BaselineStage("pep", train=TRAIN_CONFIGS["t3"]),
         {"method": "pep", "options": {}, "model": DEEPFM, "train": TRAIN["t3"]}),
    ]
    for config, expected in cases:
        params = baseline.stage_params(config)
        assert params == expected
        assert list(params["options"]) == sorted(params["options"])


def test_compress_params() -> None:
    custom = compress.CompressStage(
        quantizer=QuantizerConfig(groups=2, codebook=64, popularity="none", sub_dim=4), min_rows=5,
        finetune=FinetuneConfig(epochs=0, lr=1e-3, eval_batch_size=100), jobs=3, device="cpu", force=True,
    )
    assert compress.stage_params(compress.CompressStage()) == {"quantizer": QUANTIZER, "min_rows": 10000, "finetune": FINETUNE}
    assert compress.stage_params(custom) == {
        "quantizer": {**QUANTIZER, "groups": 2, "codebook": 64, "popularity": "none", "sub_dim": 4}, "min_rows": 5,
        "finetune": {**FINETUNE, "epochs": 0, "lr": 0.001, "eval_batch_size": 100},
    }
    assert compress.stage_params(compress.CompressStage(method="int8")) == {"method": "int8", "finetune": {**FINETUNE, "epochs": 0}}
    int8_ft = compress.CompressStage(method="int8", finetune=FinetuneConfig(epochs=2, batch_size=64))
    assert compress.stage_params(int8_ft) == {"method": "int8", "finetune": {**FINETUNE, "epochs": 2, "batch_size": 64}}


def test_evaluate_params() -> None:
    assert evaluate.stage_params(evaluate.EvaluateStage(), ["bbb", "aaa"]) == {"sources": ["aaa", "bbb"], "latency": True, "plot": False}
    custom = evaluate.EvaluateStage(sources=["c"], device="cpu", eval_batch_size=7, latency=False, plot=True, force=True)
    assert evaluate.stage_params(custom, ["ccc"]) == {"sources": ["ccc"], "latency": False, "plot": True}


def test_export_params(tmp_path: Path) -> None:
    assert export.stage_params(export.ExportStage()) == {"formats": ["onnx", "pt2"], "opset": 18}
    assert export.stage_params(export.ExportStage(formats=("pt2",), out=tmp_path, source="x", force=True)) == {
        "formats": ["pt2"], "opset": None}
    assert export.stage_params(export.ExportStage(formats=("onnx",))) == {"formats": ["onnx"], "opset": 18}


PREPROCESS_DEFAULT = {"fmt": "criteo", "min_count": 2, "split": [0.8, 0.1, 0.1], "seed": 2022, "count_on": "train",
                      "skip_bad_rows": False, "label": None, "fields": None, "numeric": None, "delimiter": None,
                      "keep_impression": True}


def test_preprocess_params(tmp_path: Path) -> None:
    raw = tmp_path / "train.txt"
    raw.write_text("0\t1\n")
    avazu = PreprocessConfig(fmt="avazu", split=(0.7, 0.2, 0.1), seed=1, count_on="all", skip_bad_rows=True,
                             memory_limit="1GB", threads=2)
    csv = PreprocessConfig(fmt="csv", min_count=3, label="y", fields=["a", "b"], numeric=["a"], delimiter=",",
                           keep_impression=False)
    assert PreprocessConfig().to_params() == PREPROCESS_DEFAULT
    assert avazu.to_params() == {**PREPROCESS_DEFAULT, "fmt": "avazu", "split": [0.7, 0.2, 0.1], "seed": 1,
                                 "count_on": "all", "skip_bad_rows": True}
    # numeric csv fields changed rule (quantile bins): their artifacts get new fingerprints ...
    assert csv.to_params() == {**PREPROCESS_DEFAULT, "fmt": "csv", "min_count": 3, "label": "y", "fields": ["a", "b"],
                               "numeric": ["a"], "delimiter": ",", "keep_impression": False, "numeric_bins": 100}
    assert PreprocessConfig(fmt="csv", numeric=["a"], numeric_bins=7).to_params()["numeric_bins"] == 7
    # ... and every run without numeric csv/parquet fields keeps its parameters (and fingerprint)
    for plain in (PreprocessConfig(fmt="csv", label="y"), PreprocessConfig(fmt="parquet", numeric=[]),
                  PreprocessConfig(fmt="csv", numeric_bins=7)):
        assert "numeric_bins" not in plain.to_params()
    for options, hashed in ((PreprocessConfig(), False), (avazu, True)):
        stage = preprocess.PreprocessStage(raw, options, hash_input=hashed, force=True)
        assert preprocess.stage_params(stage) == {"input": preprocess.input_identity(raw, hashed), **options.to_params()}


def test_default_fingerprints_are_pinned() -> None:
    """The fingerprints (no upstream) of every stage's default parameters, as computed before they
    were derived from the fields (the stage version included)."""
    cases = [
        (supernet, supernet.stage_params(supernet.SupernetStage(model=ModelConfig("deepfm"))), "d40070ca256bbdac"),
        (search, search.stage_params(search.SearchStage(), True), "cbc872d222030bb0"),  # version 5 (4: 114568168726600a)
        (retrain, retrain.stage_params(retrain.RetrainStage(init="supernet"), ModelConfig("deepfm"), "optembed"),
         "f32c39587ef6742a"),  # version 5 (4: 0c04ed17decab4d0, 3: 551604fc992f799c)
        (baseline, baseline.stage_params(baseline.BaselineStage("qr", options={"operation": "mult", "collisions": 2,
                                                                             "min_rows": 100})), "0b77a81e8d6835be"),
        (compress, compress.stage_params(compress.CompressStage()), "556c43ebaaf54227"),
        (compress, compress.stage_params(compress.CompressStage(method="int8")), "625220fada97aa60"),
        (evaluate, evaluate.stage_params(evaluate.EvaluateStage(), ["bbb", "aaa"]), "20a324b8ad90417b"),
        (export, export.stage_params(export.ExportStage()), "f114ee42a7267b6d"),
        (preprocess, PreprocessConfig().to_params(), "f033c007894bced6"),
    ]
    for module, params, expected in cases:
        assert fingerprint(module.STAGE, module.VERSION, params, {}) == expected, module.STAGE


def test_a_new_field_enters_the_params_unless_marked() -> None:
    """A field added to a configuration is fingerprinted without further code; marked fields are not,
    and a ``since_default`` field only while it differs from the value its absence means."""
    grown = make_dataclass("Grown", [
        ("new_knob", int, field(default=3)),
        ("speed_knob", int, field(default=8, metadata={"fingerprint": False})),
        ("later_knob", float, field(default=0.5, metadata={"since_default": 0.0})),
    ], bases=(TrainConfig,))
    params = train_params(grown())
    assert params == {**TRAIN["default"], "new_knob": 3, "later_knob": 0.5}
    assert train_params(grown(new_knob=4, speed_knob=1, later_knob=0.0)) == {**TRAIN["default"], "new_knob": 4}
    stage = make_dataclass("GrownStage", [("extra", str, field(default="x"))], bases=(supernet.SupernetStage,))
    assert supernet.stage_params(stage(model=ModelConfig("deepfm"), extra="y")) == {
        "model": DEEPFM, "mode": "optembed", "train": TRAIN["default"], "extra": "y"}
    nested = make_dataclass("Nested", [("train", TrainConfig, field(default_factory=grown)), ("flag", bool, field(default=True))])
    assert fingerprint_params(nested()) == {"train": {**TRAIN["default"], "new_knob": 3, "later_knob": 0.5}, "flag": True}
