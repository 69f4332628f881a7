"""Experiment tracking: a finished artifact logged as one MLflow run.

Everything is read from the manifest: its parameters (flattened, ``train.lr``), its curves
(``curves.parquet``: one metric ``curve/<column>`` per numeric column, one point per row, the
step being the row's epoch when the epochs count up, else the row's index), its numeric metrics
(under their own names, ``test_auc``), tags (``stage``, ``fingerprint``, ``upstream.<name>``,
``optembed_version``, ``cached``) and, for an evaluation, its report and plots as run artifacts.
The stages know nothing of it. MLflow is optional and imported only here, when a run is logged;
where the runs go follows MLflow's own ``MLFLOW_TRACKING_URI``, and the experiment is
``$MLFLOW_EXPERIMENT_NAME`` (default ``optembed``).
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from types import ModuleType
from typing import Any

from optembed import __version__
from optembed.errors import ConfigError, OptembedError
from pipelines.store import Manifest

TRACKERS = ("mlflow",)
DEFAULT_EXPERIMENT = "optembed"
MISSING = '--track mlflow needs the mlflow package: pip install "optembed[track]"'
CURVE_PREFIX = "curve/"
ARTIFACT_OUTPUTS = ("report",)  # an evaluation's files logged besides its plots (outputs ending in .png)
_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. :/]")  # MLflow names take these characters only
_BATCH = 100  # entities per log_batch call (MLflow's limit for parameters and tags)


class TrackingError(OptembedError):
    """The tracking backend could not be reached or refused the run."""


def require(tracker: str = "mlflow") -> ModuleType:
    """The MLflow package (``mlflow`` or ``mlflow-skinny``), or one clear error when it is absent."""
    if tracker not in TRACKERS:
        raise ConfigError(f"--track must be one of: {', '.join(TRACKERS)} (got '{tracker}')")
    try:
        import mlflow
        import mlflow.entities
        import mlflow.tracking
    except ImportError:
        raise ConfigError(MISSING) from None
    return mlflow


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one level of dotted keys: ``{"train": {"lr": 1e-3}}`` -> ``{"train.lr": 1e-3}``."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def key(name: str) -> str:
    """``name`` as an MLflow parameter, metric or tag name: other characters become ``_``
    (the upstream ``retrain#0`` of an evaluation is tagged ``upstream.retrain_0``)."""
    return _UNSAFE.sub("_", name)


def _number(value: Any) -> float | None:
    """``value`` as a metric value, or None for anything that is no number (text, lists, None)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def numeric_metrics(manifest: Manifest) -> dict[str, float]:
    """The manifest's numeric metrics, nested ones flattened (``fields.0.rows``)."""
    return {k: v for k, v in ((k, _number(v)) for k, v in flatten(manifest.metrics).items()) if v is not None}


def curve_rows(manifest: Manifest) -> list[dict[str, Any]]:
    """The rows of the artifact's ``curves`` output (one per validation point), or none."""
    if "curves" not in manifest.outputs:
        return []
    import pyarrow.parquet as pq

    return pq.read_table(manifest.output("curves")).to_pylist()


def curve_points(rows: list[dict[str, Any]]) -> Iterator[tuple[str, int, float]]:
    """``(metric, step, value)`` for every numeric cell of the curves; the step is the row's
    epoch when the epochs are whole numbers that count up, else the row's index."""
    epochs = [r.get("epoch") for r in rows]
    by_epoch = all(isinstance(e, int) and not isinstance(e, bool) for e in epochs) and all(
        a < b for a, b in zip(epochs, epochs[1:], strict=False)
    )
    for index, row in enumerate(rows):
        step = row["epoch"] if by_epoch else index
        for column, value in row.items():
            number = _number(value)
            if number is not None and not (by_epoch and column == "epoch"):
                yield CURVE_PREFIX + column, step, number


def _param_text(value: Any, limit: int) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def tags_of(manifest: Manifest, name: str | None = None) -> dict[str, str]:
    tags = {
        "stage": manifest.stage,
        "fingerprint": manifest.fingerprint,
        "optembed_version": __version__,
        "cached": "true" if manifest.cached else "false",
        "mlflow.runName": name or f"{manifest.stage} {manifest.fingerprint[:10]}",
    }
    if name:
        tags["step"] = name
    if manifest.path is not None:
        tags["artifact"] = str(manifest.path)
    tags.update({key(f"upstream.{k}"): v for k, v in manifest.upstream.items()})
    return tags


def _param_limit() -> int:
    """The longest parameter value the installed MLflow takes (500 in old releases)."""
    try:
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH
    except ImportError:
        return 500
    return int(MAX_PARAM_VAL_LENGTH)


class Tracker:
    """One MLflow client and experiment; :meth:`log_manifest` logs an artifact as a run."""

    def __init__(self, experiment: str | None = None) -> None:
        self.mlflow = require()
        self.uri = self.mlflow.get_tracking_uri()
        self.client = self._guard(self.mlflow.tracking.MlflowClient)
        name = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
        self.experiment_id = self._guard(self._experiment, name)

    def _guard(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``call(*args, **kwargs)``, its MLflow failure turned into one line naming the tracking URI."""
        try:
            return call(*args, **kwargs)
        except OptembedError:
            raise
        except Exception as exc:  # MlflowException, a connection or a file error of the backend
            message = " ".join(str(exc).split()) or type(exc).__name__
            raise TrackingError(f"MLflow tracking at {self.uri} failed: {message}") from None

    def _experiment(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        return str(self.client.create_experiment(name))

    def start(self, name: str, tags: Mapping[str, str], parent: str | None = None) -> str:
        """A new run (nested under ``parent``, a run id); returns its id."""
        all_tags = {"mlflow.runName": name, **tags, **({"mlflow.parentRunId": parent} if parent else {})}
        run = self._guard(self.client.create_run, self.experiment_id, tags=all_tags)
        return str(run.info.run_id)

    def start_chain(self, data: str) -> str:
        """The parent run of ``optembed run`` on the file ``data`` (its stages are nested under it)."""
        return self.start(f"run {data}", {"stage": "run", "data": data, "optembed_version": __version__})

    def end(self, run_id: str, failed: bool = False) -> None:
        self._guard(self.client.set_terminated, run_id, "FAILED" if failed else "FINISHED")

    def log_manifest(self, manifest: Manifest, parent: str | None = None, name: str | None = None) -> str:
        """Log one artifact as a finished run (nested under the run ``parent``); returns its id."""
        entities = self.mlflow.entities
        limit = _param_limit()
        texts = {key(k): _param_text(v, limit) for k, v in sorted(flatten(manifest.params).items())}
        params = [entities.Param(k, v) for k, v in texts.items()]
        now = int(time.time() * 1000)
        metrics = [entities.Metric(key(k), v, now, 0) for k, v in sorted(numeric_metrics(manifest).items())]
        metrics += [entities.Metric(key(k), v, now, step) for k, step, v in curve_points(curve_rows(manifest))]
        files = [manifest.output(o) for o in manifest.outputs if o in ARTIFACT_OUTPUTS or manifest.outputs[o].endswith(".png")]
        tags = tags_of(manifest, name)
        run_id = self.start(tags["mlflow.runName"], tags, parent)
        try:
            for i in range(0, len(params), _BATCH):
                self._guard(self.client.log_batch, run_id, params=params[i : i + _BATCH])
            for i in range(0, len(metrics), _BATCH):
                self._guard(self.client.log_batch, run_id, metrics=metrics[i : i + _BATCH])
            for path in files:
                self._guard(self.client.log_artifact, run_id, str(path))
        except BaseException:
            with contextlib.suppress(OptembedError):  # the first failure is the one to show
                self.end(run_id, failed=True)
            raise
        self.end(run_id)
        return run_id


def log_manifest(manifest: Manifest, parent: str | None = None, name: str | None = None) -> str:
    """Log one finished artifact as an MLflow run (see the module); returns the run's id."""
    return Tracker().log_manifest(manifest, parent, name)
