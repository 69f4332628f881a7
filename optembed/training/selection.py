"""Which validation score selects the kept checkpoint, stops early and decays the learning rate.

``monitor`` says what is scored (``auc``, or ``auc-logloss``: the AUC less the logloss); ``select``
says on which task of a model of several: ``primary`` (the first label, what one task always
uses), ``mean`` (the mean over every task of the monitored score) or a task's name. A record of
several tasks holds each task's validation numbers under ``val_auc_<task>`` and
``val_logloss_<task>`` beside the primary task's plain ``val_auc`` and ``val_logloss``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from optembed.errors import ConfigError

SELECT_RULES = ("primary", "mean")


def check_select(select: str, tasks: Sequence[str]) -> None:
    """A :class:`ConfigError` unless ``select`` is a rule or one of ``tasks`` (the data's task
    names, primary first; empty: not known yet, only the spelling is checked)."""
    if not isinstance(select, str) or not select.strip():
        raise ConfigError(f"--select must be primary, mean or a task's name, got {select!r}")
    if tasks and select not in SELECT_RULES and select not in tasks:
        raise ConfigError(f"unknown --select '{select}'; choose primary, mean or a task: {', '.join(tasks)}")


def selected_suffixes(select: str, tasks: Sequence[str]) -> list[str]:
    """The key suffixes of the scored tasks: ``[""]`` for the primary task's plain keys, else
    ``["_<task>", ...]``. One task (or none named) is always its plain keys."""
    if len(tasks) < 2 or select == "primary" or (tasks and select == tasks[0]):
        return [""]
    if select == "mean":
        return [f"_{t}" for t in tasks]
    check_select(select, tasks)
    return [f"_{select}"]


def selection_score(record: Mapping[str, Any], monitor: str, select: str = "primary", tasks: Sequence[str] = ()) -> float:
    """The validation score of a metrics ``record`` (higher is better): ``monitor`` of the task(s)
    ``select`` names, their mean for ``mean``."""
    values = []
    for suffix in selected_suffixes(select, tasks):
        score = float(record[f"val_auc{suffix}"])
        if monitor == "auc-logloss":
            score -= float(record[f"val_logloss{suffix}"])
        values.append(score)
    return sum(values) / len(values)


def selection_name(monitor: str, select: str = "primary", tasks: Sequence[str] = ()) -> str:
    """How the progress lines name the score: ``AUC``, ``AUC - logloss``, with the task(s) when
    a model of several is not selected on its primary task."""
    name = "AUC - logloss" if monitor == "auc-logloss" else "AUC"
    suffixes = selected_suffixes(select, tasks)
    if suffixes == [""]:
        return name
    return f"mean {name} over the tasks" if len(suffixes) > 1 else f"{name} of {suffixes[0][1:]}"
