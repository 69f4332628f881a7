"""The label columns of an encoded artifact: one per task, the primary task's first.

A one-label artifact stores its label as ``label``; several labels are stored as ``label``,
``label_1``, ... and listed in ``schema.json`` under ``labels`` (name = the raw column, the stored
column, the positive rate per split)."""

from __future__ import annotations

from typing import Any


def stored_label_columns(tasks: int) -> list[str]:
    """The label columns of the encoded splits: ``label`` (the primary task's), then ``label_1``, ..."""
    return ["label", *(f"label_{k}" for k in range(1, tasks))]


def label_columns(schema: dict[str, Any]) -> list[str]:
    """The stored label columns a preprocess schema declares (``["label"]`` for one task)."""
    return [str(entry["column"]) for entry in schema.get("labels", [])] or [str(schema.get("label", "label"))]


def task_names(schema: dict[str, Any]) -> list[str]:
    """The tasks' names (their raw label columns), the primary first; one task: its source label."""
    return [str(entry["name"]) for entry in schema.get("labels", [])] or [str(schema.get("source_label") or "label")]
