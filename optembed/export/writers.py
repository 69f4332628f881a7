"""Writing the serving network as portable graphs: a ``torch.export`` program (``.pt2``) and ONNX.

Both are traced with a symbolic batch dimension (any batch from 1 up), input ``ids``
``(batch, n_fields)`` int64, outputs ``logit`` and ``probability`` ``(batch,)`` float32
(``(batch, T)`` for a model of ``T`` tasks). A
model with an operator either exporter cannot translate fails with one :class:`ArtifactError`
naming the operator.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from optembed.errors import ArtifactError, ConfigError
from optembed.export.graph import INPUT_NAME, OUTPUT_NAMES

ONNX_OPSET = 18
EXAMPLE_BATCH = 4  # traced batch size (not 0 or 1, which torch.export would specialise)
_OPERATOR = (
    re.compile(r"op='([\w.:]+)'"),
    re.compile(r"target=torch\.ops\.([\w.]+)"),
    re.compile(r"\b((?:aten|prims|onnx)::?\.?[\w.]+)"),
)


def example_ids(n_fields: int, batch: int = EXAMPLE_BATCH) -> torch.Tensor:
    return torch.zeros(batch, n_fields, dtype=torch.long)


def operator_of(exc: BaseException) -> str | None:
    """The operator an exporter error names (searched along the exception chain), if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current)
        for pattern in _OPERATOR:
            found = pattern.search(text)
            if found:
                return found.group(1).rstrip(".")
        current = current.__cause__ or current.__context__
    return None


def _reason(exc: BaseException, what: str) -> ArtifactError:
    op = operator_of(exc)
    if op is not None:
        return ArtifactError(f"cannot export the model to {what}: operator {op} has no {what} translation")
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return ArtifactError(f"cannot export the model to {what}: {first[:300]}")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporters print progress lines and warnings: keep them off the user's terminal."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export_program(net: nn.Module, n_fields: int) -> torch.export.ExportedProgram:
    """``net`` as a ``torch.export`` program with a dynamic batch dimension."""
    batch = torch.export.Dim("batch", min=1)
    try:
        with _quiet(), torch.no_grad():
            return torch.export.export(net.eval(), (example_ids(n_fields),), dynamic_shapes={INPUT_NAME: {0: batch}}, strict=False)
    except Exception as exc:  # the exporter's many error types
        raise _reason(exc, "torch.export") from None


def save_pt2(program: torch.export.ExportedProgram, path: Path) -> None:
    with _quiet():
        torch.export.save(program, str(path))


def onnx_available() -> str | None:
    """``None`` when the ONNX exporter's packages import, else the missing package's name."""
    for name in ("onnx", "onnxscript"):
        try:
            __import__(name)
        except ImportError:
            return name
    return None


def save_onnx(program: torch.export.ExportedProgram | nn.Module, path: Path, n_fields: int, opset: int = ONNX_OPSET) -> int:
    """Write ``program`` as ONNX (opset ``opset``, weights inside the file up to 2 GB, next to it
    beyond); returns the opset written."""
    missing = onnx_available()
    if missing is not None:
        raise ConfigError(f"ONNX export needs the {missing} package: pip install 'optembed[export]' (or --format pt2)")
    import onnx

    batch = torch.export.Dim("batch", min=1)
    try:
        with _quiet():
            exported = torch.onnx.export(
                program, (example_ids(n_fields),), dynamo=True, input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                dynamic_shapes={INPUT_NAME: {0: batch}} if isinstance(program, nn.Module) else None,
                opset_version=opset, verbose=False, report=False,
            )
    except Exception as exc:
        raise _reason(exc, "ONNX") from None
    if exported is None:
        raise ArtifactError("cannot export the model to ONNX: the exporter returned nothing")
    with _quiet():
        exported.save(str(path), external_data=_too_large(exported))
    model = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), opset)


def _too_large(exported: object) -> bool:
    """Whether the weights pass protobuf's 2 GB limit (they then go to a file next to the model)."""
    model = getattr(exported, "model", None)
    initializers = getattr(getattr(model, "graph", None), "initializers", {}) or {}
    total = 0
    for value in getattr(initializers, "values", lambda: [])():
        const = getattr(value, "const_value", None)
        total += int(getattr(const, "nbytes", 0) or 0)
    return total > 1_800_000_000
