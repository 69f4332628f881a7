"""Checks of option values made before any work: finite numbers in range, output paths, and
up-front memory estimates of batch sizes and search populations.

Every failed check raises :class:`ConfigError` (one sentence, exit code 2). The memory
estimates are deliberately low (lower bounds of what the work must hold at once), so a value
they refuse could not have run, and a reasonable value is never refused.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from optembed.errors import ConfigError

_INF = float("inf")


def check_number(
    name: str,
    value: float | int | None,
    low: float = -_INF,
    high: float = _INF,
    *,
    low_open: bool = False,
    high_open: bool = False,
    optional: bool = False,
) -> None:
    """``value`` must be a finite number within ``low``..``high`` (ends open when asked).

    ``name`` is the option as the user wrote it (``--lr``); ``None`` passes when ``optional``.
    """
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value}")
    below = value <= low if low_open else value < low
    above = value >= high if high_open else value > high
    if below or above:
        shown = f"{value:g}" if isinstance(value, float) else str(value)
        raise ConfigError(f"{name} must be {_describe_range(low, high, low_open, high_open)}, got {shown}")


def check_positive(name: str, value: float | int | None, *, optional: bool = False) -> None:
    check_number(name, value, 0.0, low_open=True, optional=optional)


def check_non_negative(name: str, value: float | int | None, *, optional: bool = False) -> None:
    check_number(name, value, 0.0, optional=optional)


def _describe_range(low: float, high: float, low_open: bool, high_open: bool) -> str:
    if high == _INF:
        if low == 0:
            return "positive" if low_open else "at least 0"
        return f"{'above' if low_open else 'at least'} {low:g}"
    if low == -_INF:
        return f"{'below' if high_open else 'at most'} {high:g}"
    return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def check_output_file(path: Path, what: str = "output") -> None:
    """``path`` can be written as a new or replaced file: its folder exists and is writable, and
    ``path`` itself is not a folder."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a folder; give a file name")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise ConfigError(f"{what} folder {parent} does not exist")
    if not parent.is_dir():
        raise ConfigError(f"{what} folder {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} folder {parent} is not writable")
    if path.exists() and not os.access(path, os.W_OK):
        raise ConfigError(f"{what} {path} exists and is not writable")


def check_disk_space(folder: Path, estimate: int, what: str) -> None:
    """Refuse to write ``estimate`` bytes into ``folder`` when its file system has less free space."""
    try:
        free = shutil.disk_usage(folder if str(folder) else ".").free
    except OSError:
        return  # leave it to the writing
    if estimate > free:
        raise ConfigError(
            f"{what} need at least {format_bytes(estimate)} of disk, more than the {format_bytes(free)} free in {folder}"
        )


# ----------------------------------------------------------------------------- memory estimates

FLOAT = 4  # bytes of a float32
INDEX = 8  # bytes of an int64 id


def format_bytes(n: float) -> str:
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{int(n)} bytes"


def memory_limit(device: object = "cpu") -> int:
    """Bytes of memory of ``device``: the machine's physical memory for the CPU, the GPU's total
    memory for CUDA (0 when unknown: no check)."""
    kind = getattr(device, "type", str(device).split(":")[0])
    if kind == "cuda":
        try:
            import torch

            return int(torch.cuda.mem_get_info(device)[1])  # type: ignore[arg-type]
        except Exception:  # no driver, or a device that went away: leave the check to the work
            return 0
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


def check_memory(what: str, estimate: int, device: object = "cpu", hint: str = "") -> None:
    """Refuse work whose estimated memory exceeds the device's memory, with both numbers."""
    limit = memory_limit(device)
    if limit > 0 and estimate > limit:
        where = "GPU memory" if getattr(device, "type", str(device)).startswith("cuda") else "memory of this machine"
        raise ConfigError(
            f"{what} needs at least {format_bytes(estimate)}, more than the {format_bytes(limit)} {where}"
            + (f"; {hint}" if hint else "")
        )


def mlp_params(n_fields: int, embed_dim: int, mlp_dims: Sequence[int]) -> int:
    """Parameters of the MLP over the concatenated embeddings (the backbones' common part)."""
    count, width = 0, n_fields * embed_dim
    for units in mlp_dims:
        count += width * units + units
        width = units
    return count + width + 1


def batch_bytes(batch: int, n_fields: int, embed_dim: int, mlp_dims: Sequence[int], training: bool) -> int:
    """Memory of one batch: its ids, the looked-up embeddings and the MLP activations (twice
    over when training: the gradients)."""
    per_row = INDEX * n_fields + FLOAT * (n_fields * embed_dim + sum(mlp_dims) + 1)
    if training:
        per_row += FLOAT * (n_fields * embed_dim + sum(mlp_dims) + 1)
    return batch * per_row


def training_bytes(
    batch: int, eval_batch: int, rows: int, n_fields: int, embed_dim: int, mlp_dims: Sequence[int]
) -> int:
    """The embedding table's weights, the MLP's weights, gradients and two Adam moments, plus the
    larger of a training batch and an evaluation batch."""
    table = FLOAT * rows * embed_dim
    network = 4 * FLOAT * mlp_params(n_fields, embed_dim, mlp_dims)
    return table + network + max(
        batch_bytes(batch, n_fields, embed_dim, mlp_dims, training=True),
        batch_bytes(eval_batch, n_fields, embed_dim, mlp_dims, training=False),
    )


def check_training_memory(
    batch: int,
    eval_batch: int,
    rows: int,
    n_fields: int,
    embed_dim: int,
    mlp_dims: Sequence[int],
    device: object = "cpu",
) -> None:
    """Refuse a model and batch sizes that cannot fit the device (see :func:`training_bytes`)."""
    estimate = training_bytes(batch, eval_batch, rows, n_fields, embed_dim, mlp_dims)
    check_memory(
        f"training with --batch-size {batch:,} and --eval-batch-size {eval_batch:,} (embedding width {embed_dim}, "
        f"{rows:,} rows, MLP {list(mlp_dims)})",
        estimate,
        device,
        "use smaller batch sizes or a smaller model",
    )


def search_bytes(population: int, generations: int, n_fields: int, val_rows: int, tasks: int = 1) -> tuple[int, int]:
    """``(host, device)`` bytes of an evolutionary search: the record of every member of every
    generation (a Python row of ``n_fields`` widths, about 300 bytes besides), the population's
    width arrays, and on the device the validation logits of one generation's candidates (one
    per task)."""
    members = (generations + 1) * population
    host = members * (2 * INDEX * n_fields + 300) + 4 * population * n_fields * INDEX
    device = population * val_rows * tasks * FLOAT
    return host, device


def check_search_memory(
    population: int, generations: int, n_fields: int, val_rows: int, device: object = "cpu", tasks: int = 1
) -> None:
    host, dev = search_bytes(population, generations, n_fields, val_rows, tasks)
    what = f"a search of --population {population:,} over --generations {generations:,}"
    hint = "use a smaller population or fewer generations"
    if getattr(device, "type", str(device)).startswith("cuda"):
        check_memory(what + f" ({val_rows:,} validation rows)", dev, device, hint)
        check_memory(what, host, "cpu", hint)
    else:
        check_memory(what + f" ({val_rows:,} validation rows)", host + dev, "cpu", hint)
