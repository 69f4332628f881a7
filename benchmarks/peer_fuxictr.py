"""A peer baseline: FuxiCTR 2.3.7's building blocks trained with its published BARS Frappe recipe
for DeepFM, on an optembed preprocess artifact (the same split and the same ids as optembed) or
on three CSV splits (``benchmarks/frappe.py``'s train/val/test.csv: optembed's rows, raw values).

From Python: ``run(artifact_dir, seeds=[0, 1, 2])`` or ``run(train_csv, val_csv, test_csv, seeds)``
returns one dict per seed (test AUC and logloss, table bytes, ...); it raises ``PeerError`` when
fuxictr (the ``bench`` extra) is missing.

What runs
---------
The model is a DeepFM assembled here from FuxiCTR's public layers (``FeatureEmbedding``,
``FactorizationMachine`` = its ``LogisticRegression`` + ``InnerProductInteraction``, ``MLP_Block``)
inside FuxiCTR's own ``BaseModel``, whose training loop is used unchanged: ``fit``, ``train_step``
(mean binary cross-entropy on sigmoid outputs + the regulariser, gradient-norm clip 10, Adam),
``regularization_loss``, ``checkpoint_and_earlystop`` and ``lr_decay``. Batches come from FuxiCTR's
``ParquetDataLoader`` reading the artifact's ``train/val/test.parquet`` directly (shuffled
training batches, ``num_workers=0``).

    logit = b + sum_f w[x_f]                              (LR: a 1-wide embedding row per id)
          + sum_{f<g} <e[x_f], e[x_g]>                    (FM on the D-wide embeddings)
          + MLP(concat_f e[x_f])                          (DNN on the same embeddings)

Recipe (BARS ``DeepFM_frappe_x1``; every item is an option below, these are the defaults):

- embedding dim 10, initialised N(0, 1e-4^2); Linear layers Xavier-normal, biases 0;
- embedding regulariser 0.05: FuxiCTR adds ``(0.05 / 2) * ||E||_2^2`` over the WHOLE embedding
  tables (the D-wide table and the LR weights), every row, to each batch's mean loss;
  net regulariser 0;
- MLP 400-400-400, ReLU, batch norm after each Linear, dropout 0.2;
- Adam, learning rate 1e-3, batch 4,096, up to 100 epochs;
- after each epoch the validation AUC is measured; no gain of 1e-6 over the best multiplies the
  learning rate by 0.1 (reduce-on-plateau, floor 1e-6) and counts towards early stopping with
  patience 2; the best epoch's weights are restored at the end;
- min category count 1 (every value kept): BARS's setting; on an artifact the artifact's own
  ``--min-count`` applies (optembed's Frappe runs use 2: 86 rare values become OOV).

The vocabulary is the artifact's: field ``f`` has ``schema.json``'s cardinality rows, ids 0 (OOV)
and 1 (missing) included. CSV splits are encoded first (``_split_csvs.py``): values counted on the
training file, those seen ``--min-count`` (default 1) times kept, the rest OOV. The embedding
table bytes reported are float32 ``total cardinality x (D + 1)`` (the D-wide table plus the LR
weights).

Workarounds for FuxiCTR 2.3.7 on numpy 2 / scikit-learn >= 1.8 (nothing in site-packages is edited)
--------------------------------------------------------------------------------------------------
- ``BaseModel.fit`` reads ``np.Inf``, which numpy 2 removed: ``np.Inf = np.inf`` is set before
  training when missing.
- ``fuxictr.metrics.evaluate_metrics`` calls ``log_loss(..., eps=1e-7)``, which scikit-learn 1.8
  rejects: ``evaluate`` is overridden to compute AUC and logloss with ``optembed.metrics`` (exact
  Mann-Whitney AUC with ties, logloss from logits in float64), the formulas optembed reports, on
  the logits rather than clipped probabilities.
- ``save_weights``/``load_weights`` keep the best state in memory instead of a ``torch.save`` file
  (nothing is written to disk, nothing is unpickled).

Differences from running FuxiCTR's own pipeline: the split, the vocabulary and the id encoding are
optembed's (``FeatureProcessor`` is not used, so there is no padding row and the OOV id is 0);
the seed is set with FuxiCTR's ``seed_everything``.

Usage (needs the ``bench`` extra: ``pip install 'optembed[bench]'``, i.e. fuxictr==2.3.7, polars<2)::

    python benchmarks/frappe.py /path/to/frappe --out-dir work/frappe
    optembed preprocess work/frappe/frappe.csv --format csv --label label --min-count 2 --json   # note its path
    PYTHONPATH=. python benchmarks/peer_fuxictr.py --preprocess ARTIFACT_DIR --seeds 0,1,2 --out peer.json
    PYTHONPATH=. python benchmarks/peer_fuxictr.py --train work/frappe/train.csv --val work/frappe/val.csv \
        --test work/frappe/test.csv --seeds 0,1,2 --out peer.json                      # the same rows, raw values
    # options: --epochs 100 --device cpu|cuda --embedding-dim 10 --embedding-regularizer 0.05 ...

The JSON holds, per seed, the test AUC and logloss, the kept epoch's validation AUC and logloss,
the kept epoch, the epochs run, the seconds and the per-epoch validation history; a summary
(mean, sample std, min, max); the table bytes; the recipe; and the artifact it ran on.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import sys
import tempfile
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _split_csvs import SplitError, write_artifact  # noqa: E402

SPLITS = ("train", "val", "test")
FLOAT32_BYTES = 4


class PeerError(ValueError):
    """An unusable artifact or option (the message names the file or option at fault)."""


@dataclass(frozen=True)
class Recipe:
    """BARS's Frappe DeepFM hyperparameters (FuxiCTR names in the comments)."""

    embedding_dim: int = 10  # embedding_dim
    embedding_regularizer: float = 0.05  # embedding_regularizer: (lambda / 2) * ||E||^2, whole tables
    net_regularizer: float = 0.0  # net_regularizer
    hidden_units: tuple[int, ...] = (400, 400, 400)  # hidden_units
    hidden_activations: str = "ReLU"  # hidden_activations
    net_dropout: float = 0.2  # net_dropout
    batch_norm: bool = True  # batch_norm
    learning_rate: float = 1e-3  # learning_rate (Adam)
    batch_size: int = 4096  # batch_size
    epochs: int = 100  # epochs
    early_stop_patience: int = 2  # early_stop_patience, monitor AUC (max)
    reduce_lr_on_plateau: bool = True  # BaseModel default: lr x 0.1 on a non-improving epoch
    max_gradient_norm: float = 10.0  # fit's default
    embedding_initializer: str = "partial(nn.init.normal_, std=1e-4)"  # FuxiCTR's default


@dataclass
class Artifact:
    path: Path
    fields: list[str]
    cardinalities: list[int]
    rows: dict[str, int]
    schema: dict[str, Any] = field(repr=False)


@dataclass
class SeedResult:
    seed: int
    test_auc: float
    test_logloss: float
    val_auc: float
    val_logloss: float
    kept_epoch: int
    epochs_run: int
    seconds: float
    table_bytes: int
    history: list[dict[str, float]]


def read_artifact(path: Path) -> Artifact:
    """Check an optembed preprocess artifact folder and read its schema; every id column is checked
    against its field's cardinality (column min/max from Parquet, no row loop)."""
    schema_path = path / "schema.json"
    if not schema_path.is_file():
        raise PeerError(f"{schema_path}: no schema.json (is {path} an optembed preprocess artifact folder?)")
    try:
        schema = json.loads(schema_path.read_text())
        fields = [str(f["name"]) for f in schema["fields"]]
        cards = [int(f["cardinality"]) for f in schema["fields"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise PeerError(f"{schema_path}: not an optembed schema ({type(exc).__name__}: {exc})") from None
    if not fields or any(c < 1 for c in cards):
        raise PeerError(f"{schema_path}: no fields, or a cardinality below 1")
    rows = {}
    for split in SPLITS:
        file = path / f"{split}.parquet"
        if not file.is_file():
            raise PeerError(f"{file}: missing")
        try:
            table = pq.read_table(file, columns=[*fields, "label"])
        except (OSError, ValueError, KeyError) as exc:
            raise PeerError(f"{file}: cannot read the label and field columns ({exc})") from None
        rows[split] = table.num_rows
        for name, card in zip(fields, cards):
            col = table.column(name).to_numpy()
            if col.size and (int(col.min()) < 0 or int(col.max()) >= card):
                raise PeerError(f"{file}: column {name} has ids outside 0..{card - 1}")
        label = table.column("label").to_numpy()
        if label.size and not np.isin(label, (0, 1)).all():
            raise PeerError(f"{file}: label is not 0/1")
    if rows["train"] == 0 or rows["val"] == 0 or rows["test"] == 0:
        raise PeerError(f"{path}: a split is empty ({rows})")
    return Artifact(path, fields, cards, rows, schema)


def table_bytes(cardinalities: list[int], embedding_dim: int) -> int:
    """float32 bytes of the D-wide embedding table plus the 1-wide LR weights."""
    return sum(cardinalities) * (embedding_dim + 1) * FLOAT32_BYTES


def summarise(values: list[float]) -> dict[str, float]:
    """Mean, sample standard deviation (n - 1), min and max of the finite values."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return {"mean": math.nan, "std": math.nan, "min": math.nan, "max": math.nan, "n": 0}
    std = float(np.std(finite, ddof=1)) if len(finite) > 1 else math.nan
    return {"mean": float(np.mean(finite)), "std": std, "min": min(finite), "max": max(finite), "n": len(finite)}


def constant_logloss(train_positive_rate: float, labels: torch.Tensor) -> float:
    """Logloss on ``labels`` of the constant prediction ``train_positive_rate`` (the base rate)."""
    from optembed.metrics import logloss

    p = min(max(train_positive_rate, 1e-12), 1 - 1e-12)
    z = torch.full((labels.numel(),), math.log(p / (1 - p)), dtype=torch.float64)
    return logloss(labels, z)


def finite_or_null(obj: Any) -> Any:
    """``obj`` with every NaN/inf float replaced by ``None`` (strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_null(v) for v in obj]
    return obj


def _patch_numpy() -> None:
    if "Inf" not in np.__dict__:
        np.Inf = np.inf  # type: ignore[attr-defined]  # BaseModel.fit reads it; numpy 2 removed it


def feature_map(artifact: Artifact) -> Any:
    """A FuxiCTR ``FeatureMap`` over the artifact's fields: categorical, vocabulary = cardinality."""
    from fuxictr.features import FeatureMap

    fmap = FeatureMap(artifact.path.name or "artifact", str(artifact.path))
    fmap.features = OrderedDict(
        (name, {"source": "", "type": "categorical", "vocab_size": card})
        for name, card in zip(artifact.fields, artifact.cardinalities)
    )
    fmap.labels = ["label"]
    fmap.num_fields = fmap.get_num_fields()
    fmap.total_features = sum(artifact.cardinalities)
    fmap.set_column_index()
    return fmap


def build_model(fmap: Any, recipe: Recipe, device: str, model_root: str) -> Any:
    """The DeepFM on FuxiCTR's layers and BaseModel, compiled with Adam and its BCE loss."""
    from fuxictr.pytorch.layers import FactorizationMachine, FeatureEmbedding, MLP_Block
    from fuxictr.pytorch.models import BaseModel

    from optembed.metrics import auc, logloss

    class PeerDeepFM(BaseModel):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            gpu = -1 if device == "cpu" else int(device.split(":")[1]) if ":" in device else 0
            super().__init__(
                fmap,
                model_id="PeerDeepFM",
                gpu=gpu,
                monitor="AUC",
                monitor_mode="max",
                early_stop_patience=recipe.early_stop_patience,
                embedding_regularizer=recipe.embedding_regularizer,
                net_regularizer=recipe.net_regularizer,
                reduce_lr_on_plateau=recipe.reduce_lr_on_plateau,
                verbose=0,
                model_root=model_root,
                metrics=["AUC", "logloss"],
            )
            d = recipe.embedding_dim
            self.embedding_layer = FeatureEmbedding(fmap, d, embedding_initializer=recipe.embedding_initializer)
            self.fm = FactorizationMachine(fmap)
            self.mlp = MLP_Block(
                input_dim=fmap.num_fields * d,
                output_dim=1,
                hidden_units=list(recipe.hidden_units),
                hidden_activations=recipe.hidden_activations,
                output_activation=None,
                dropout_rates=recipe.net_dropout,
                batch_norm=recipe.batch_norm,
            )
            self.compile("Adam", "binary_crossentropy", recipe.learning_rate)
            self.reset_parameters()
            self.model_to_device()
            self.best_state: dict[str, torch.Tensor] | None = None
            self.kept_epoch = 0
            self.history: list[dict[str, float]] = []

        def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            x = self.get_inputs(inputs)
            emb = self.embedding_layer(x)  # (batch, fields, D)
            logit = self.fm(x, emb) + self.mlp(emb.flatten(start_dim=1))
            return {"y_pred": self.output_activation(logit), "logit": logit}

        def evaluate(self, data_generator: Any, metrics: Any = None) -> dict[str, float]:
            self.eval()
            logits, labels = [], []
            with torch.no_grad():
                for batch in data_generator:
                    logits.append(self.forward(batch)["logit"].reshape(-1).float().cpu())
                    labels.append(self.get_labels(batch).reshape(-1).cpu())
            y, z = torch.cat(labels), torch.cat(logits)
            return {"AUC": auc(y, z), "logloss": logloss(y, z)}

        def checkpoint_and_earlystop(self, logs: dict[str, float], min_delta: float = 1e-6) -> None:
            lr = float(self.optimizer.param_groups[0]["lr"])
            self.history.append({"epoch": self._epoch_index + 1, "val_auc": logs["AUC"], "val_logloss": logs["logloss"], "lr": lr})
            super().checkpoint_and_earlystop(logs, min_delta)

        def save_weights(self, checkpoint: str) -> None:
            self.best_state = {k: v.detach().clone() for k, v in self.state_dict().items()}
            self.kept_epoch = self._epoch_index + 1

        def load_weights(self, checkpoint: str) -> None:
            if self.best_state is not None:
                self.load_state_dict(self.best_state)

    return PeerDeepFM()


def loaders(fmap: Any, artifact: Artifact, batch_size: int) -> dict[str, Any]:
    from fuxictr.pytorch.dataloaders.parquet_dataloader import ParquetDataLoader

    return {
        split: ParquetDataLoader(
            fmap, str(artifact.path / f"{split}.parquet"), batch_size=batch_size, shuffle=split == "train", num_workers=0
        )
        for split in SPLITS
    }


def run_seed(artifact: Artifact, recipe: Recipe, seed: int, device: str) -> SeedResult:
    """Seed, build, fit (FuxiCTR's loop) and evaluate the restored best model on val and test."""
    from fuxictr.pytorch.torch_utils import seed_everything

    _patch_numpy()
    start = time.perf_counter()
    seed_everything(seed)
    fmap = feature_map(artifact)
    data = loaders(fmap, artifact, recipe.batch_size)
    with tempfile.TemporaryDirectory(prefix="peer_fuxictr_") as root:
        model = build_model(fmap, recipe, device, root)
        model.fit(data["train"], epochs=recipe.epochs, validation_data=data["val"], max_gradient_norm=recipe.max_gradient_norm)
    val = model.evaluate(data["val"])
    test = model.evaluate(data["test"])
    return SeedResult(
        seed=seed,
        test_auc=test["AUC"],
        test_logloss=test["logloss"],
        val_auc=val["AUC"],
        val_logloss=val["logloss"],
        kept_epoch=model.kept_epoch,
        epochs_run=model._epoch_index + 1,
        seconds=round(time.perf_counter() - start, 2),
        table_bytes=table_bytes(artifact.cardinalities, recipe.embedding_dim),
        history=model.history,
    )


def require_fuxictr() -> None:
    """Raise a one-line ``PeerError`` when the optional ``bench`` extra is not installed."""
    try:
        import fuxictr  # noqa: F401
    except ImportError:
        raise PeerError("fuxictr is not installed: pip install 'optembed[bench]' (fuxictr==2.3.7, polars<2)") from None


def resolve_data(
    train: Path, val: Path | None, test: Path | None, work: Path, min_count: int = 1
) -> Artifact:
    """The artifact to train on: ``train`` itself when it is a preprocess artifact folder (``val``
    and ``test`` then None), else the three CSV splits encoded into ``work``."""
    train = Path(train)
    if val is None and test is None:
        if train.is_file():
            raise PeerError(f"{train}: a file, not a preprocess artifact folder (give val and test CSVs with a train CSV)")
        return read_artifact(train)
    if val is None or test is None:
        raise PeerError("give train, val and test CSVs, or a preprocess artifact folder alone")
    try:
        return read_artifact(write_artifact(train, Path(val), Path(test), work, min_count))
    except SplitError as exc:
        raise PeerError(str(exc)) from None


def run(
    train: str | Path,
    val: str | Path | None = None,
    test: str | Path | None = None,
    seeds: list[int] | tuple[int, ...] = (0, 1, 2),
    recipe: Recipe | None = None,
    device: str = "cpu",
    min_count: int = 1,
) -> list[dict[str, Any]]:
    """Train and test the peer once per seed; one dict per seed (``SeedResult``'s fields: test AUC
    and logloss, the kept epoch's validation AUC and logloss, epochs, seconds, table bytes, history).

    ``train`` is either an optembed preprocess artifact folder (its encoded splits and ids are used
    as they are) or a training CSV with ``val`` and ``test`` CSVs (header ``label`` + fields; the
    vocabulary is counted on ``train`` with ``min_count``, as FuxiCTR's ``min_categr_count``)."""
    require_fuxictr()
    recipe = recipe or Recipe()
    with tempfile.TemporaryDirectory(prefix="peer_splits_") as work:
        artifact = resolve_data(Path(train), None if val is None else Path(val), None if test is None else Path(test),
                                Path(work), min_count)
        return [asdict(run_seed(artifact, recipe, seed, device)) for seed in seeds]


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise PeerError(f"--seeds: {text!r} is not a comma-separated list of integers") from None
    if not seeds:
        raise PeerError("--seeds: no seed given")
    return seeds


def parse_units(text: str) -> tuple[int, ...]:
    try:
        units = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise PeerError(f"--hidden-units: {text!r} is not a comma-separated list of integers") from None
    if not units or min(units) < 1:
        raise PeerError(f"--hidden-units: {text!r} needs positive widths")
    return units


def arguments(argv: list[str] | None) -> argparse.Namespace:
    d = Recipe()
    p = argparse.ArgumentParser(description="FuxiCTR DeepFM (BARS Frappe recipe) on an optembed preprocess artifact.")
    data = p.add_mutually_exclusive_group(required=True)
    data.add_argument("--preprocess", type=Path, help="an optembed preprocess artifact folder (schema.json, train/val/test.parquet)")
    data.add_argument("--train", type=Path, help="a training CSV (label + fields); needs --val and --test")
    p.add_argument("--val", type=Path, help="the validation CSV (with --train)")
    p.add_argument("--test", type=Path, help="the test CSV (with --train)")
    p.add_argument("--min-count", type=int, default=1, help="with CSVs: keep values seen this often in --train (default 1)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--out", type=Path, required=True, help="the JSON to write")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--embedding-dim", type=int, default=d.embedding_dim)
    p.add_argument("--embedding-regularizer", type=float, default=d.embedding_regularizer)
    p.add_argument("--net-regularizer", type=float, default=d.net_regularizer)
    p.add_argument("--hidden-units", default=",".join(map(str, d.hidden_units)))
    p.add_argument("--net-dropout", type=float, default=d.net_dropout)
    p.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, default=d.batch_norm)
    p.add_argument("--learning-rate", type=float, default=d.learning_rate)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--patience", type=int, default=d.early_stop_patience, help="early stopping patience (epochs)")
    p.add_argument("--reduce-lr-on-plateau", action=argparse.BooleanOptionalAction, default=d.reduce_lr_on_plateau)
    p.add_argument("--verbose", action="store_true", help="FuxiCTR's per-epoch log lines on stderr")
    return p.parse_args(argv)


def recipe_from(args: argparse.Namespace) -> Recipe:
    checks = {
        "--epochs": args.epochs >= 1,
        "--embedding-dim": args.embedding_dim >= 1,
        "--embedding-regularizer": args.embedding_regularizer >= 0,
        "--net-regularizer": args.net_regularizer >= 0,
        "--net-dropout": 0 <= args.net_dropout < 1,
        "--learning-rate": args.learning_rate > 0,
        "--batch-size": args.batch_size >= 1,
        "--patience": args.patience >= 1,
    }
    for name, ok in checks.items():
        if not ok:
            raise PeerError(f"{name}: {getattr(args, name[2:].replace('-', '_'))} is out of range")
    if args.device != "cpu" and not (args.device == "cuda" or args.device.startswith("cuda:")):
        raise PeerError(f"--device: {args.device!r} is not cpu, cuda or cuda:N")
    return Recipe(
        embedding_dim=args.embedding_dim,
        embedding_regularizer=args.embedding_regularizer,
        net_regularizer=args.net_regularizer,
        hidden_units=parse_units(args.hidden_units),
        net_dropout=args.net_dropout,
        batch_norm=args.batch_norm,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        epochs=args.epochs,
        early_stop_patience=args.patience,
        reduce_lr_on_plateau=args.reduce_lr_on_plateau,
    )


def report(artifact: Artifact, recipe: Recipe, results: list[SeedResult], device: str) -> dict[str, Any]:
    import fuxictr

    test_labels = torch.from_numpy(pq.read_table(artifact.path / "test.parquet", columns=["label"]).column(0).to_numpy().astype("float64"))
    train_rate = float(artifact.schema.get("positive_ratio", {}).get("train", math.nan))
    keys = ("test_auc", "test_logloss", "val_auc", "val_logloss", "kept_epoch", "epochs_run", "seconds")
    return {
        "peer": "FuxiCTR DeepFM (FuxiCTR layers + BaseModel), BARS Frappe recipe",
        "fuxictr_version": fuxictr.__version__,
        "torch_version": torch.__version__,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "device": device,
        "threads": torch.get_num_threads(),
        "preprocess": {
            "path": None if artifact.schema.get("format") == "csv splits" else str(artifact.path),
            "source": artifact.schema.get("source"),
            "fields": artifact.fields,
            "cardinalities": artifact.cardinalities,
            "total_cardinality": sum(artifact.cardinalities),
            "rows": artifact.rows,
            "min_count": artifact.schema.get("min_count"),
            "split": artifact.schema.get("split"),
            "seed": artifact.schema.get("seed"),
            "positive_ratio": artifact.schema.get("positive_ratio"),
        },
        "recipe": asdict(recipe),
        "table_bytes": table_bytes(artifact.cardinalities, recipe.embedding_dim),
        "table_bytes_detail": {
            "embedding": sum(artifact.cardinalities) * recipe.embedding_dim * FLOAT32_BYTES,
            "lr_weights": sum(artifact.cardinalities) * FLOAT32_BYTES,
        },
        "test_base_rate_logloss": constant_logloss(train_rate, test_labels) if math.isfinite(train_rate) else math.nan,
        "seeds": [asdict(r) for r in results],
        "summary": {k: summarise([float(getattr(r, k)) for r in results]) for k in keys},
    }


def main(argv: list[str] | None = None) -> int:
    with tempfile.TemporaryDirectory(prefix="peer_splits_") as work:
        return _main(argv, Path(work))


def _main(argv: list[str] | None, work: Path) -> int:
    try:
        args = arguments(argv)
        recipe = recipe_from(args)
        seeds = parse_seeds(args.seeds)
        if args.min_count < 1:
            raise PeerError(f"--min-count: {args.min_count} is out of range")
        if not args.out.parent.is_dir():
            raise PeerError(f"{args.out}: its folder does not exist")
        if args.preprocess is not None:
            if args.val is not None or args.test is not None:
                raise PeerError("--val/--test go with --train, not --preprocess")
            artifact = resolve_data(args.preprocess, None, None, work)
        else:
            if args.val is None or args.test is None:
                raise PeerError("--train needs --val and --test")
            artifact = resolve_data(args.train, args.val, args.test, work, args.min_count)
        require_fuxictr()
        if args.device.startswith("cuda") and not torch.cuda.is_available():
            raise PeerError(f"--device {args.device}: no CUDA device here")
    except PeerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    results = []
    for seed in seeds:
        r = run_seed(artifact, recipe, seed, args.device)
        results.append(r)
        print(
            f"seed {seed}: test AUC {r.test_auc:.4f} logloss {r.test_logloss:.4f} | val AUC {r.val_auc:.4f} "
            f"logloss {r.val_logloss:.4f} | kept epoch {r.kept_epoch}/{r.epochs_run} | {r.seconds:.1f}s",
            file=sys.stderr,
        )
    out = report(artifact, recipe, results, args.device)
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text(json.dumps(finite_or_null(out), indent=2, allow_nan=False) + "\n")
    tmp.replace(args.out)
    s = out["summary"]
    print(
        f"test AUC {s['test_auc']['mean']:.4f} ± {s['test_auc']['std']:.4f}, logloss {s['test_logloss']['mean']:.4f} "
        f"± {s['test_logloss']['std']:.4f} over {len(results)} seeds; table {out['table_bytes']:,} bytes -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
