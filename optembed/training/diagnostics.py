"""Warnings about a training run, from its options and its epoch history (pure functions).

- :func:`too_few_steps`: an epoch of only a few optimizer steps barely moves the model (a small
  data set with a large batch): the AUC stays near 0.5 whatever the method; below
  :func:`min_train_rows` the data set itself is too small to train.
- :func:`overfitting`: the validation logloss rises while the training loss falls.
- :func:`worse_than_base_rate`: a model's logloss is above that of predicting the training
  positive rate for every row (the base rate): it overfits or is mis-calibrated.
- :func:`small_test_split`: the test split has fewer than :data:`MIN_CLASS_ROWS` rows of a class:
  its AUC is too uncertain to compare models by.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

MIN_STEPS_PER_EPOCH = 50
SMALLEST_BATCH = 16  # a smaller batch than this is no remedy for a data set too small to train
RISE_TOLERANCE = 1e-3  # relative change of the validation logloss treated as noise
MIN_CLASS_ROWS = 200  # fewer test rows of a class: too few to tell models apart


def steps_per_epoch(train_rows: int, batch_size: int) -> int:
    return -(-max(train_rows, 0) // max(batch_size, 1))


def min_train_rows(minimum: int = MIN_STEPS_PER_EPOCH) -> int:
    """The fewest training rows that give ``minimum`` steps an epoch of :data:`SMALLEST_BATCH` rows."""
    return minimum * SMALLEST_BATCH


def too_few_steps(train_rows: int, batch_size: int, minimum: int = MIN_STEPS_PER_EPOCH) -> str | None:
    """A warning when an epoch has fewer than ``minimum`` optimizer steps, else ``None``; when
    no batch of :data:`SMALLEST_BATCH` rows or more gives that many, the data set is too small
    to train and the line says so (no smaller batch helps)."""
    steps = steps_per_epoch(train_rows, batch_size)
    if train_rows <= 0 or steps >= minimum:
        return None
    if train_rows < min_train_rows(minimum):
        return (
            f"the data set is too small to train: {train_rows:,} training rows, fewer than the "
            f"{min_train_rows(minimum):,} that {minimum} optimizer steps an epoch of at least {SMALLEST_BATCH} rows "
            f"need (an epoch has {steps} step{'s' if steps != 1 else ''} at --batch-size {batch_size:,}); use more data"
        )
    suggested = max(1, train_rows // minimum)
    size = 1 << (suggested.bit_length() - 1)  # a power of two at most rows / minimum
    return (
        f"an epoch has only {steps} optimizer step{'s' if steps != 1 else ''} ({train_rows:,} training rows, "
        f"--batch-size {batch_size:,}): the model barely learns; use --batch-size {size:,} or less, or more data"
    )


def overfitting(history: Sequence[Mapping[str, Any]], tolerance: float = RISE_TOLERANCE, task: str | None = None) -> str | None:
    """A warning when, from one epoch to the next, the validation logloss rose while the
    training loss fell; names the first such epoch. ``history`` holds one record per epoch with
    ``epoch``, ``train_loss`` and ``val_logloss``; with ``task``, that task's validation logloss
    (``val_logloss_<task>``) against the training loss of all tasks, and the line names the task."""
    key = "val_logloss" if task is None else f"val_logloss_{task}"
    records = [r for r in history if _number(r.get("train_loss")) and _number(r.get(key))]
    rising = [
        (before, after)
        for before, after in zip(records, records[1:])
        if after[key] > before[key] * (1 + tolerance) and after["train_loss"] < before["train_loss"]
    ]
    if not rising:
        return None
    before, after = rising[0]
    last = records[-1]
    whose = "the validation logloss" if task is None else f"task {task}'s validation logloss"
    return (
        f"overfitting: from epoch {before.get('epoch', '?')} to {after.get('epoch', '?')} {whose} rose "
        f"({before[key]:.5f} -> {after[key]:.5f}) while the training loss fell "
        f"({before['train_loss']:.5f} -> {after['train_loss']:.5f})"
        + (f"; at epoch {last.get('epoch', '?')} it is {last[key]:.5f}" if last is not after else "")
        + "; the best epoch by validation AUC is kept; fewer --epochs, a --patience, more data or more "
        "--weight-decay may help"
        + ("" if task is None else " (--select chooses the task that picks it)")
    )


CALIBRATION_HINT = (
    "the model overfits or is mis-calibrated; train fewer --epochs (or stop earlier with --patience) "
    "or regularise more (a larger --weight-decay, --dropout)"
)
SPLIT_NAMES = {"val": "validation", "test": "test"}


def worse_than_base_rate(variant: str, splits: Mapping[str, tuple[Any, Any]]) -> str | None:
    """One warning line when model ``variant``'s logloss is above the base rate's on any split,
    else ``None``. ``splits`` maps a split (``val``, ``test``) to ``(logloss, base)``, ``base``
    being the logloss of predicting the training positive rate for every row of that split;
    a split where either number is missing is left out."""
    worse = [
        (SPLIT_NAMES.get(name, name), value, base)
        for name, (value, base) in splits.items()
        if _number(value) and _number(base) and value > base
    ]
    if not worse:
        return None
    said = " and ".join(f"{name} logloss {value:.4f} (base rate {base:.4f})" for name, value, base in worse)
    return (
        f"{variant}: {said} {'is' if len(worse) == 1 else 'are'} worse than predicting the training positive rate "
        f"for every row: {CALIBRATION_HINT}"
    )


def small_test_split(positives: int, negatives: int, minimum: int = MIN_CLASS_ROWS) -> str | None:
    """A warning when the test split has fewer than ``minimum`` rows of a class, else ``None``."""
    if min(positives, negatives) >= minimum:
        return None
    return (
        f"the test split has only {positives:,} positive and {negatives:,} negative rows (fewer than {minimum} "
        "of a class): its test AUC is uncertain and too few to tell close models apart; use more data or a "
        "larger test share (--split)"
    )


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and value == value


def training_warnings(
    history: Sequence[Mapping[str, Any]], train_rows: int, batch_size: int, tasks: Sequence[str] = ()
) -> list[str]:
    """Every warning about one training run; a run of several ``tasks`` is judged for overfitting
    task by task (each may overfit at its own epoch, or not at all)."""
    found = [too_few_steps(train_rows, batch_size)]
    if len(tasks) > 1:
        found += [overfitting(history, task=name) for name in tasks]
    else:
        found.append(overfitting(history))
    return [w for w in found if w]
