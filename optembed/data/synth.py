"""Synthetic click-through data in the raw Criteo and Avazu formats, with a known planted structure.

Every field draws a latent value id from a Zipf-like popularity law over its own dictionary of
value strings (the id is the popularity rank). About a third of the fields are pure noise. Each
informative field ``f`` carries, per value, a first-order effect ``a_f`` and a latent factor
``u_f`` of width ``signal_rank[f]``; the label logit is::

    bias + sum_f a_f[v_f] + sum_{(f, g) in pairs} w_fg * <u_f[v_f], u_g[v_g]>

where the inner product is truncated to the smaller width and a missing value contributes 0.
Criteo integer fields map value id ``k`` to an integer in the ``k``-th bucket of the usual
``floor(ln(v)^2)`` transform, so the signal survives that preprocessing. Generation is fully
vectorised and written chunk by chunk, so memory stays bounded whatever the number of rows.

With ``tasks=2`` a second, sparse label follows the click: a conversion, drawn among the clicks
with ``P(convert | click) = sigmoid(bias2 + sum_f b_f[v_f])`` over a few fields of its own (some
informative for the click, one a noise field of the click), ``bias2`` calibrated so that about
:data:`CONVERT_AMONG_CLICKS` of the clicks convert. The file is then a comma-separated CSV with a
header, ``click,convert`` first and the fields after (``preprocess --label click,convert``).
"""

from __future__ import annotations

import json
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from optembed.errors import ConfigError
from optembed.validation import check_disk_space, check_output_file

FORMATS = ("criteo", "avazu")
RANKS = (1, 2, 4, 8, 16)
RANK_MIX = (16, 8, 4, 2, 1, 4, 2, 1, 2, 1)  # widths handed out to informative fields, cycled
TARGET_POSITIVE = {"criteo": 0.23, "avazu": 0.17}
MAX_TASKS = 2
TASK_NAMES = ("click", "convert")
MULTITASK_CLICKS = 0.28  # click ratio of two-task data
CONVERT_AMONG_CLICKS = 0.04  # share of the clicks that convert
CONVERT_FIELDS = 4  # fields carrying the conversion signal: three informative for the click, one click-noise field
CONVERT_STD = 1.5  # standard deviation of the summed conversion effects
FIRST_STD = 1.0  # standard deviation of the summed first-order effects
PAIR_STD = 2.5  # standard deviation of the summed pairwise interactions
CALIBRATION_ROWS = 100_000
EFFECT_HALF_RANK = 20.0  # value rank at which effects have shrunk by 1/sqrt(2)

# Criteo: dictionary sizes (before the rows/3 cap) and missing rates, in the spirit of the real data.
CRITEO_INT_SIZE = (65, 100, 90, 45, 100, 95, 85, 60, 85, 5, 35, 65, 75)
CRITEO_INT_MISSING = (0.4, 0.0, 0.21, 0.22, 0.03, 0.22, 0.04, 0.005, 0.04, 0.4, 0.04, 0.4, 0.22)
CRITEO_CAT_SIZE = (
    1460, 583, 200_000, 100_000, 305, 24, 12_517, 633, 3, 50_000, 5683, 150_000, 3194,
    27, 14_992, 120_000, 10, 5652, 2173, 4, 180_000, 18, 15, 80_000, 105, 60_000,
)
CRITEO_CAT_MISSING = (
    0.0, 0.0, 0.03, 0.03, 0.0, 0.12, 0.0, 0.0, 0.0, 0.0, 0.0, 0.03, 0.0,
    0.0, 0.0, 0.03, 0.0, 0.0, 0.4, 0.4, 0.03, 0.4, 0.0, 0.03, 0.4, 0.4,
)

AVAZU_HEADER = (
    "id,click,hour,C1,banner_pos,site_id,site_domain,site_category,app_id,app_domain,app_category,"
    "device_id,device_ip,device_model,device_type,device_conn_type,C14,C15,C16,C17,C18,C19,C20,C21"
)
AVAZU_HOURS = 240  # 2014-10-21 00h .. 2014-10-30 23h
# Avazu field -> (dictionary size, candidate integers); None means 8-character hex ids.
AVAZU_FIELDS: dict[str, tuple[int, range | tuple[int, ...] | None]] = {
    "C1": (7, range(1001, 1013)),
    "banner_pos": (7, range(0, 8)),
    "site_id": (5000, None),
    "site_domain": (8000, None),
    "site_category": (26, None),
    "app_id": (9000, None),
    "app_domain": (559, None),
    "app_category": (36, None),
    "device_id": (200_000, None),
    "device_ip": (200_000, None),
    "device_model": (8000, None),
    "device_type": (5, range(0, 6)),
    "device_conn_type": (4, range(0, 6)),
    "C14": (2600, range(375, 24_053)),
    "C15": (8, (320, 300, 216, 728, 120, 1024, 480, 768)),
    "C16": (9, (50, 250, 36, 480, 90, 20, 768, 1024, 320)),
    "C17": (435, range(112, 2759)),
    "C18": (4, range(0, 4)),
    "C19": (68, range(33, 1960)),
    "C20": (172, (-1, *range(100_000, 100_250))),
    "C21": (60, range(1, 256)),
}

_MASK32 = np.uint64(0xFFFFFFFF)
_MASK63 = np.uint64(0x7FFFFFFFFFFFFFFF)
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


@dataclass
class SynthTruth:
    """The planted structure of a generated file."""

    format: str
    rows: int
    seed: int
    fields: list[str]
    cardinality: dict[str, int]
    noise_fields: list[str]
    signal_rank: dict[str, int]
    positive_ratio: float
    # two tasks: names, positive ratio of each, the conversion's fields; absent (None) for one task
    tasks: dict | None = None

    def to_dict(self) -> dict:
        out = asdict(self)
        if self.tasks is None:
            out.pop("tasks")
        return out


@dataclass
class _Field:
    name: str
    values: pa.Array  # value strings, then a trailing null; index = latent value id = popularity rank
    zipf_s: float
    zipf_b: float
    missing: float = 0.0
    rank: int = 0  # width of the latent factor; 0 for a noise field
    first: np.ndarray | None = None  # (size + 1,) first-order effect, 0 for the missing id
    factor: np.ndarray | None = None  # (size + 1, rank) latent factor, 0 for the missing id

    @property
    def size(self) -> int:
        """The number of values; id ``size`` stands for a missing value."""
        return len(self.values) - 1

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Value ids with density proportional to (x + b)^-s on [0, size), floored, then missing ones."""
        a = np.float32(1.0 - self.zipf_s)
        lo, hi = np.float32(self.zipf_b**a), np.float32((self.size + self.zipf_b) ** a)
        x = (lo + rng.random(n, dtype=np.float32) * (hi - lo)) ** (np.float32(1.0) / a) - np.float32(self.zipf_b)
        ids = np.clip(x, 0, self.size - 1).astype(np.int64)
        if self.missing > 0:
            ids[rng.random(n, dtype=np.float32) < self.missing] = self.size
        return ids


@dataclass
class _Model:
    fmt: str
    fields: list[_Field]
    bias: float = 0.0
    # the conversion (two tasks): field index -> (size + 1,) effect (0 for the missing id), and its bias
    convert: dict[int, np.ndarray] | None = None
    convert_bias: float = 0.0


def _hex_strings(rng: np.random.Generator, n: int) -> pa.Array:
    """``n`` distinct 8-character lowercase hex strings (a random bijection of 0..n-1)."""
    x = np.arange(n, dtype=np.uint64)
    for _ in range(2):
        mult = np.uint64(rng.integers(1, 2**31) * 2 + 1)
        x = (x * mult + np.uint64(rng.integers(0, 2**32))) & _MASK32
        x ^= x >> np.uint64(15)
    shifts = np.arange(28, -1, -4, dtype=np.uint64)
    chars = _HEX[((x[:, None] >> shifts) & np.uint64(15)).astype(np.intp)]
    offsets = np.arange(0, 8 * n + 1, 8, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(chars.tobytes()))


def _int_strings(values: np.ndarray) -> pa.Array:
    return pa.array(values.astype(np.int64)).cast(pa.string())


def _log_square_values(rng: np.random.Generator, n: int, negative: bool) -> pa.Array:
    """Heavy-tailed integers, id k -> a value whose token floor(ln(v)^2) is k (k <= 2: v = k).

    With ``negative`` the first id is -1 and the others shift by one.
    """
    k = np.arange(n - int(negative))
    lo = np.ceil(np.exp(np.sqrt(k))).astype(np.int64)
    hi = np.ceil(np.exp(np.sqrt(k + 1))).astype(np.int64)
    v = lo + (rng.random(len(k)) * (hi - lo)).astype(np.int64)
    v[:3] = k[:3]
    if negative:
        v = np.concatenate([[-1], v])
    return _int_strings(v)


def _scramble64(index: np.ndarray) -> np.ndarray:
    """A fixed bijection of row indices onto large 19-20 digit unsigned integers."""
    x = index.astype(np.uint64)
    for mult in (0x5851F42D4C957F2D, 0x2545F4914F6CDD1D):
        x = (x * np.uint64(mult) + np.uint64(0x14057B7EF767814F)) & _MASK63
        x ^= x >> np.uint64(29)
    return x + np.uint64(10**18)


def _make_fields(fmt: str, rows: int, rng: np.random.Generator) -> tuple[list[_Field], list[int]]:
    """The fields of a format and the indices of those that are noise."""
    cap = max(2, rows // 3)

    def zipf(name: str, values: pa.Array, missing: float = 0.0) -> _Field:
        values = pa.concat_arrays([values, pa.nulls(1, pa.string())])
        return _Field(name, values, float(rng.uniform(1.05, 1.3)), float(rng.uniform(0.5, 5.0)), missing)

    fields: list[_Field] = []
    if fmt == "criteo":
        for i, (size, miss) in enumerate(zip(CRITEO_INT_SIZE, CRITEO_INT_MISSING), 1):
            fields.append(zipf(f"I{i}", _log_square_values(rng, min(size, cap), negative=i == 2), miss))
        for i, (size, miss) in enumerate(zip(CRITEO_CAT_SIZE, CRITEO_CAT_MISSING), 1):
            fields.append(zipf(f"C{i}", _hex_strings(rng, min(size, cap)), miss))
        noise = sorted([*rng.choice(13, 4, replace=False), *(13 + rng.choice(26, 9, replace=False))])
    else:
        for name, (size, candidates) in AVAZU_FIELDS.items():
            size = min(size, cap)
            if candidates is None:
                values = _hex_strings(rng, size)
            else:
                values = _int_strings(rng.permutation(np.asarray(candidates))[:size])
            fields.append(zipf(name, values))
        noise = sorted(rng.choice(len(fields), 7, replace=False))
    return fields, [int(i) for i in noise]


def _plant(fields: list[_Field], noise: list[int], rng: np.random.Generator) -> None:
    """Give the informative fields their widths, first-order effects and latent factors."""
    informative = [i for i in range(len(fields)) if i not in noise]
    for i, rank in zip(informative, rng.permutation(np.resize(RANK_MIX, len(informative)))):
        f = fields[i]
        f.rank = min(int(rank), max(r for r in RANKS if r <= f.size))
    for i in informative:  # a width is only used up to the widest other field
        fields[i].rank = min(fields[i].rank, max(fields[j].rank for j in informative if j != i))
    for i in informative:
        f = fields[i]
        # Popular values carry most of the signal: effects shrink with the popularity rank.
        scale = (1.0 + np.arange(f.size) / EFFECT_HALF_RANK) ** -0.5
        first = rng.standard_normal(f.size) * scale * rng.uniform(0.5, 1.5)
        factor = rng.standard_normal((f.size, f.rank)) * scale[:, None] * rng.uniform(0.5, 1.5)
        f.first = np.append(first, 0.0)
        f.factor = np.vstack([factor, np.zeros((1, f.rank))]).astype(np.float32)


def _draw(model: _Model, rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """Value ids of ``n`` rows, one array per field (id ``size`` = missing)."""
    return [f.sample(rng, n) for f in model.fields]


def _terms(model: _Model, ids: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-row sums of the first-order effects and of the pairwise interactions.

    Over all pairs of informative fields, sum <u_f[:r], u_g[:r]> with r the smaller width
    = 0.5 * (|sum_f u_f|^2 - sum_f |u_f|^2), each u_f padded with zeros to the widest.
    """
    n = len(ids[0])
    first = np.zeros(n)
    total = np.zeros((n, max(f.rank for f in model.fields)), dtype=np.float32)
    squares = np.zeros(n)
    for f, i in zip(model.fields, ids):
        if f.first is None or f.factor is None:
            continue
        first += np.take(f.first, i)
        u = np.take(f.factor, i, axis=0)
        total[:, : f.rank] += u
        squares += np.einsum("nr,nr->n", u, u)
    return first, 0.5 * (np.einsum("nr,nr->n", total, total) - squares)


def _logits(model: _Model, ids: list[np.ndarray]) -> np.ndarray:
    first, pairs = _terms(model, ids)
    return model.bias + first + pairs


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _calibrate(model: _Model, rng: np.random.Generator, target: float) -> None:
    """Scale both parts of the logit to their target spread, then bisect the bias to the target ratio."""
    ids = _draw(model, rng, CALIBRATION_ROWS)
    first, pairs = _terms(model, ids)
    first_scale = FIRST_STD / max(float(first.std()), 1e-12)
    factor_scale = np.sqrt(PAIR_STD / max(float(pairs.std()), 1e-12))
    for f in model.fields:
        if f.first is not None and f.factor is not None:
            f.first = f.first * first_scale
            f.factor = f.factor * np.float32(factor_scale)
    z = _logits(model, ids)
    lo, hi = -20.0, 20.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _sigmoid(z + mid).mean() < target else (lo, mid)
    model.bias = (lo + hi) / 2


def _build(fmt: str, rows: int, seed: int, tasks: int = 1) -> _Model:
    rng = np.random.default_rng([seed, 0])
    fields, noise = _make_fields(fmt, rows, rng)
    model = _Model(fmt, fields)
    _plant(fields, noise, rng)
    _calibrate(model, np.random.default_rng([seed, 1]), TARGET_POSITIVE[fmt] if tasks == 1 else MULTITASK_CLICKS)
    if tasks > 1:
        _plant_convert(model, noise, np.random.default_rng([seed, 3]))
    return model


def _plant_convert(model: _Model, noise: list[int], rng: np.random.Generator) -> None:
    """The conversion's first-order effects on its fields, scaled to :data:`CONVERT_STD`, and its
    bias bisected so that :data:`CONVERT_AMONG_CLICKS` of the clicks convert."""
    informative = [i for i in range(len(model.fields)) if i not in noise and model.fields[i].size > 1]
    quiet = [i for i in noise if model.fields[i].size > 1]
    chosen = sorted([*rng.choice(informative, CONVERT_FIELDS - 1, replace=False), *(rng.choice(quiet, 1) if quiet else [])])
    effects: dict[int, np.ndarray] = {}
    for i in chosen:
        f = model.fields[i]
        scale = (1.0 + np.arange(f.size) / EFFECT_HALF_RANK) ** -0.5
        effects[int(i)] = np.append(rng.standard_normal(f.size) * scale, 0.0)
    model.convert = effects
    ids = _draw(model, rng, CALIBRATION_ROWS)
    z = _convert_logits(model, ids)
    spread = CONVERT_STD / max(float(z.std()), 1e-12)
    for i in effects:
        effects[i] = effects[i] * spread
    z = z * spread
    clicked = _sigmoid(_logits(model, ids))  # weight every row by its click probability
    lo, hi = -20.0, 20.0
    for _ in range(60):
        mid = (lo + hi) / 2
        rate = float((clicked * _sigmoid(z + mid)).sum() / clicked.sum())
        lo, hi = (mid, hi) if rate < CONVERT_AMONG_CLICKS else (lo, mid)
    model.convert_bias = (lo + hi) / 2


def _convert_logits(model: _Model, ids: list[np.ndarray]) -> np.ndarray:
    """The conversion's logit given a click (without its bias when uncalibrated)."""
    z = np.full(len(ids[0]), model.convert_bias)
    for i, effect in (model.convert or {}).items():
        z += np.take(effect, ids[i])
    return z


def _hour_strings() -> pa.Array:
    hours = [f"1410{21 + h // 24:02d}{h % 24:02d}" for h in range(AVAZU_HOURS)]
    return pa.array(hours, pa.string())


def _chunk_table(
    model: _Model, ids: list[np.ndarray], labels: np.ndarray, start: int, rows: int, converts: np.ndarray | None = None
) -> pa.Table:
    """The raw columns of one chunk, in file order (two tasks: the labels, then the fields)."""
    columns: dict[str, pa.Array] = {}
    label = pa.array(labels.astype(np.int8))
    if converts is not None:
        columns[TASK_NAMES[0]] = label
        columns[TASK_NAMES[1]] = pa.array(converts.astype(np.int8))
        if model.fmt == "avazu":
            index = np.arange(start, start + len(labels), dtype=np.int64)
            columns["hour"] = _hour_strings().take(pa.array(index * AVAZU_HOURS // rows))
    elif model.fmt == "criteo":
        columns["label"] = label
    else:
        index = np.arange(start, start + len(labels), dtype=np.int64)
        columns["id"] = pa.array(_scramble64(index))
        columns["click"] = label
        columns["hour"] = _hour_strings().take(pa.array(index * AVAZU_HOURS // rows))
    for f, i in zip(model.fields, ids):
        columns[f.name] = f.values.take(pa.array(i))
    return pa.table(columns)


def _write_chunk(
    sink: BinaryIO,
    model: _Model,
    ids: list[np.ndarray],
    labels: np.ndarray,
    start: int,
    rows: int,
    converts: np.ndarray | None = None,
) -> None:
    tab = model.fmt == "criteo" and converts is None
    options = pacsv.WriteOptions(
        include_header=converts is not None and start == 0, delimiter="\t" if tab else ",", quoting_style="none"
    )
    pacsv.write_csv(_chunk_table(model, ids, labels, start, rows, converts), sink, options)


# Fewest bytes a written row can take (one separator per column and a newline): a floor for
# the disk space check.
MIN_ROW_BYTES = {"criteo": 40, "avazu": 24}


def generate(
    path: str | Path, rows: int, fmt: str = "criteo", seed: int = 0, chunk_rows: int = 500_000, tasks: int = 1
) -> SynthTruth:
    """Write ``rows`` synthetic rows in the raw ``fmt`` format to ``path`` and return the planted truth.

    The truth is also written as JSON to ``<path>.truth.json``. The output is deterministic given
    ``seed``, ``rows``, ``fmt``, ``chunk_rows`` and ``tasks`` (2: a click and a sparse conversion
    label, written as a CSV with a header; see the module's description).
    """
    if tasks not in range(1, MAX_TASKS + 1):
        raise ConfigError(f"--tasks must be 1 or {MAX_TASKS} (a click and a conversion label), got {tasks}")
    if fmt not in FORMATS:
        raise ConfigError(f"unknown synthetic format '{fmt}': expected one of {', '.join(FORMATS)}")
    if rows < 1:
        raise ConfigError(f"the number of rows must be at least 1, got {rows}")
    if chunk_rows < 1:
        raise ConfigError(f"chunk_rows must be at least 1, got {chunk_rows}")
    path = Path(path)
    check_output_file(path)
    check_disk_space(path.parent, rows * MIN_ROW_BYTES[fmt], f"{rows:,} synthetic {fmt} rows")
    model = _build(fmt, rows, seed, tasks)
    # Written under a temporary name and renamed at the end: an interrupted run leaves no
    # truncated file under ``path``.
    partial = path.with_name(path.name + ".partial")
    try:
        positives, converted = _write_rows(partial, model, rows, seed, chunk_rows)
        truth = _truth(model, fmt, rows, seed, positives, converted)
        Path(str(path) + ".truth.json").write_text(json.dumps(truth.to_dict(), indent=2) + "\n")
        partial.replace(path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return truth


def _truth(model: _Model, fmt: str, rows: int, seed: int, positives: int, converted: int | None = None) -> SynthTruth:
    names = [f.name for f in model.fields]
    cardinality = {f.name: f.size for f in model.fields}
    noise = [f.name for f in model.fields if f.rank == 0]
    ranks = {f.name: f.rank for f in model.fields}
    if fmt == "avazu":
        names.insert(0, "hour")
        cardinality = {"hour": AVAZU_HOURS, **cardinality}
        noise.insert(0, "hour")
        ranks = {"hour": 0, **ranks}
    tasks = None
    if model.convert is not None and converted is not None:
        tasks = {
            "names": list(TASK_NAMES),
            "positive_ratio": {TASK_NAMES[0]: positives / rows, TASK_NAMES[1]: converted / rows},
            "convert_among_clicks": converted / max(positives, 1),
            "signal_fields": {TASK_NAMES[1]: [model.fields[i].name for i in sorted(model.convert)]},
        }
    return SynthTruth(fmt, rows, seed, names, cardinality, noise, ranks, positives / rows, tasks)


def _write_rows(path: Path, model: _Model, rows: int, seed: int, chunk_rows: int) -> tuple[int, int | None]:
    """Write the rows to ``path``; returns the number of positive labels (and of conversions, two tasks)."""
    positives = 0
    converted: int | None = None if model.convert is None else 0
    # Each chunk is drawn while the previous one is written, so at most two are in memory.
    with open(path, "wb") as sink, ThreadPoolExecutor(max_workers=1) as pool:
        if model.fmt == "avazu":
            sink.write((AVAZU_HEADER + "\n").encode())
        pending: Future[None] | None = None
        for chunk, start in enumerate(range(0, rows, chunk_rows)):
            n = min(chunk_rows, rows - start)
            rng = np.random.default_rng([seed, 2, chunk])
            ids = _draw(model, rng, n)
            labels = rng.random(n) < _sigmoid(_logits(model, ids))
            positives += int(labels.sum())
            converts = None
            if model.convert is not None:
                draws = np.random.default_rng([seed, 4, chunk]).random(n)
                converts = labels & (draws < _sigmoid(_convert_logits(model, ids)))
                converted = (converted or 0) + int(converts.sum())
            if pending is not None:
                pending.result()
            pending = pool.submit(_write_chunk, sink, model, ids, labels, start, rows, converts)
        if pending is not None:
            pending.result()
    return positives, converted
