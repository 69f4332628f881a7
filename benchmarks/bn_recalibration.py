"""Does a width-sampling supernet lose full-width accuracy to its BatchNorm statistics?

For each supernet artifact: validation and test AUC / logloss at full width as saved, then again
after the MLP's BatchNorm running statistics are re-estimated at full width (a cumulative average
over ``--batches`` training batches, dropout off). Equal AUCs say the statistics are not the cause.

Usage::

    PYTHONPATH=. python benchmarks/bn_recalibration.py --artifacts STORE SUPERNET_ID [SUPERNET_ID ...]
"""

from __future__ import annotations

import argparse
import json

import torch

from optembed.data.tensors import read_split
from optembed.models.checkpoint import load_model
from optembed.training.evaluate import evaluate
from pipelines.store import Store


def recalibrate(model: torch.nn.Module, x: torch.Tensor, batches: int, batch_size: int, seed: int) -> None:
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches below
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.eval()
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for i in range(0, min(x.shape[0], batches * batch_size), batch_size):
            model(x[order[i : i + batch_size]])
    model.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifacts", required=True)
    ap.add_argument("--batches", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("supernets", nargs="+")
    args = ap.parse_args()
    store, device = Store(args.artifacts), torch.device("cpu")
    for ref in args.supernets:
        sn = store.resolve(ref, "supernet")
        pre = store.lookup("preprocess", sn.upstream["preprocess"])
        names = [f["name"] for f in json.loads(pre.output("schema").read_text())["fields"]]
        splits = {s: read_split(pre.output(s), names) for s in ("train", "val", "test")}
        model, _ = load_model(sn.output("model"))
        before = {s: evaluate(model, splits[s], device) for s in ("val", "test")}
        recalibrate(model, splits["train"].x, args.batches, args.batch_size, seed=1)
        after = {s: evaluate(model, splits[s], device) for s in ("val", "test")}
        share = sn.params.get("train", {}).get("full_width_share", 0.0)
        print(f"{sn.fingerprint} P {share:g} " + " | ".join(
            f"{s} AUC {before[s]['auc']:.4f} -> {after[s]['auc']:.4f}, logloss {before[s]['logloss']:.4f} -> "
            f"{after[s]['logloss']:.4f}" for s in ("val", "test")))


if __name__ == "__main__":
    main()
