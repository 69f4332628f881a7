"""The README.md written into every bundle: what is inside, how to score rows without optembed, and
what its hashes do and do not prove."""

from __future__ import annotations

from typing import Any

from optembed.data.buckets import DESCRIPTION as QUANTILE_RULE

TEMPLATE = """# {title}

Exported by optembed {optembed} from {stage} artifact `{source}` ({variant}, {model}, {n_fields} fields),
by {user} on {host} at {time} (as that machine reported them).
Test AUC at export: {test_auc} (logloss {test_logloss}) on {test_rows:,} test rows.

| file | what |
|---|---|
| `model.pt` | the model ({kind}) in optembed's own format: tensors and plain values only, read with `torch.load(weights_only=True)`; `optembed predict --runtime torch` rebuilds the network from it |
{files}
| `vocab/<field>.parquet` | per field: `value` (the token as text) -> `id`; `special` marks id {oov} (OOV: a value not kept) and id {missing} (missing: an empty value); `row` is the table row a pruned model reads |
| `bundle.json` | who made it, versions, source fingerprints, the preprocessing spec, inputs/outputs, every file's sha256, and `bundle_sha256` (the hash of all of that) |

**Input** `{input_name}`: int64, shape `(batch, {n_fields})`, one id per field in this order:
{field_list}.
{outputs}

## Preprocessing

Format `{fmt}`. Each raw value becomes a token, then an id from the field's vocabulary:
{transform}
A token not in the vocabulary is id {oov}; an empty value is id {missing}. `optembed predict BUNDLE DATA
--out scores.parquet` applies exactly these rules (the DuckDB code that preprocessed the training data).

## Scoring in plain Python

```python
import bisect, json, math
import numpy as np
import pyarrow.parquet as pq

meta = json.load(open("bundle.json"))
fields = meta["preprocessing"]["fields"]
vocabs = []
for f in fields:
    table = pq.read_table(f["vocab"], columns=["value", "id"]).to_pydict()
    vocabs.append({{v: i for v, i in zip(table["value"], table["id"]) if v is not None}})

def token(field, raw):
    if raw is None or raw == "":
        return None
    if field["kind"] != "numeric":
        return raw
    v = float(raw)
    if "bucketing" in field:  # quantile bins: how many of the field's boundaries are <= v
        return None if math.isnan(v) else str(bisect.bisect_right(field["bucketing"]["boundaries"], v))
    t = math.floor(math.log(v) ** 2) if v > 2 else v  # the log-square transform
    return str(int(t)) if float(t).is_integer() else str(t)

def encode(raw_rows):  # raw_rows: one list of raw field values per row, in the field order above
    ids = np.empty((len(raw_rows), len(fields)), dtype=np.int64)
    for r, raw in enumerate(raw_rows):
        for j, (f, vocab) in enumerate(zip(fields, vocabs)):
            t = token(f, raw[j])
            ids[r, j] = f["missing_id"] if t is None else vocab.get(t, f["oov_id"])
    return ids

ids = encode(raw_rows)

# onnxruntime
import onnxruntime as ort
session = ort.InferenceSession("model.onnx")
logit, probability = session.run(None, {{"ids": ids}})

# or torch, with optembed installed: the network rebuilt from model.pt by optembed's own code
from optembed.export.bundle import open_bundle
score = open_bundle(".").scorer("torch")  # checks bundle.json and every file first
logit, probability = score(ids)
```

## Trust

`optembed predict` checks `bundle_sha256`, every listed file's sha256, that the folder holds no
link, and the graphs without running them (standard ONNX operators only, no weights read from
outside the bundle); with `--runtime torch` it never deserializes `model.pt2`. The hashes catch
damage and careless edits, not deliberate ones: whoever can write this folder can recompute
them. Compare `bundle_sha256` with the one its maker reports through another channel.
{pt2_note}"""

PT2_NOTE = """
`model.pt2` is a `torch.export` program for people who trust where this bundle comes from:
loading it evaluates parts of the archive (its symbolic-shape expressions go through sympy's
parser), so a tampered file can run code. Load it yourself only then:

```python
import torch
program = torch.export.load("model.pt2").module()  # only for a bundle of trusted origin
logit, probability = program(torch.from_numpy(ids))
```
"""


ONE_TASK = "**Outputs** `logit` and `probability` (= sigmoid(logit)), float32, shape `(batch,)`."
TASKS = """**Outputs** `logit` and `probability` (= sigmoid(logit)), float32, shape `(batch, {count})`: one column
per task, in the order of `tasks` in `bundle.json`: {columns}.
`optembed predict` writes `score` (the primary task's probability, {primary}) and `score_<task>` for every
task ({names}), plus `label` and `label_<task>` for the labels the file has."""


def outputs_text(meta: dict[str, Any]) -> str:
    """The README's line on the outputs: their shape, and for several tasks which column is which."""
    tasks = meta.get("tasks") or []
    if not tasks:
        return ONE_TASK
    columns = ", ".join(f"{k} = `{t}`" + (" (primary)" if k == 0 else "") for k, t in enumerate(tasks))
    return TASKS.format(count=len(tasks), columns=columns, primary=f"`{tasks[0]}`", names=", ".join(f"`score_{t}`" for t in tasks))


def bundle_readme(meta: dict[str, Any]) -> str:
    pre = meta["preprocessing"]
    fields = pre["fields"]
    source = meta["source"]
    metrics = meta.get("metrics", {})
    files = "\n".join(
        f"| `{path}` | {'ONNX graph, opset ' + str(meta.get('onnx_opset')) if kind == 'onnx' else 'torch.export program (torch ' + meta['versions']['torch'] + ')'} |"
        for kind, path in meta["graphs"].items()
    )
    log_square = [f["name"] for f in fields if f["kind"] == "numeric" and "bucketing" not in f]
    binned = [f for f in fields if f["kind"] == "numeric" and "bucketing" in f]
    transform = f"numeric fields ({_names(log_square)}): {pre['numeric_transform']};\n" if log_square else ""
    if binned:
        counts = ", ".join(f"{f['name']}: {len(f['bucketing']['boundaries'])} boundaries" for f in binned[:13])
        transform += (
            f"numeric fields ({_names([f['name'] for f in binned])}): {QUANTILE_RULE}; the "
            f"boundaries are each field's `bucketing.boundaries` in `bundle.json` ({counts});\n"
        )
    transform += "other fields: the raw text itself" + (f" ({pre['derived']})" if pre.get("derived") else "") + "."
    auc = metrics.get("test_auc")
    ll = metrics.get("test_logloss")
    maker = meta.get("made_by", {})
    return TEMPLATE.format(
        title=f"optembed bundle: {source.get('variant', 'model')}",
        user=maker.get("user", "?"), host=maker.get("host", "?"), time=maker.get("time", "?"),
        kind=meta.get("model_file", {}).get("kind", "?"),
        pt2_note=PT2_NOTE if "pt2" in meta["graphs"] else "",
        optembed=meta["versions"]["optembed"],
        stage=source["stage"],
        source=source["fingerprint"],
        variant=source.get("variant", "?"),
        model=meta["model"]["name"],
        n_fields=len(fields),
        test_auc=f"{auc:.5f}" if isinstance(auc, float) else "n/a",
        test_logloss=f"{ll:.5f}" if isinstance(ll, float) else "n/a",
        test_rows=int(metrics.get("test_rows", 0)),
        files=files,
        oov=fields[0]["oov_id"] if fields else 0,
        missing=fields[0]["missing_id"] if fields else 1,
        input_name=meta["inputs"][0]["name"],
        field_list=", ".join(f"`{f['name']}`" for f in fields),
        fmt=pre["format"],
        transform=transform,
        outputs=outputs_text(meta),
    )


def _names(names: list[str]) -> str:
    return ", ".join(names[:13]) + ("..." if len(names) > 13 else "")
