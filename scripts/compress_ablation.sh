#!/usr/bin/env bash
# Ablations of `optembed compress` on one retrained model: the full loss against the runs without
# popularity weighting, without the contrastive term and without the balance term.
#
#   scripts/compress_ablation.sh RETRAIN_ID [OUT.md] [extra `optembed compress` options...]
#
# RETRAIN_ID is a retrain artifact (fingerprint prefix or folder; `newest` takes the newest one).
# Every run goes through `optembed compress --json`; runs already in the artifact store are reused.
# The table (AUC, bytes, ratio, reconstruction error and code usage of the coded fields) is
# printed and written to OUT.md (default: compress_ablation.md).
set -euo pipefail
if [ $# -lt 1 ]; then
    echo "usage: $0 RETRAIN_ID|newest [OUT.md] [optembed compress options...]" >&2
    exit 2
fi
source_id=$1; out=${2:-compress_ablation.md}
shift $(( $# >= 2 ? 2 : 1 ))
from=()
[ "$source_id" != newest ] && from=(--from "$source_id")
results=$(mktemp -d)
trap 'rm -rf "$results"' EXIT
declare -A runs=(
    [full]=""
    [no-popularity]="--popularity none"
    [no-contrastive]="--contrastive-weight 0"
    [no-balance]="--balance-weight 0"
)
for name in full no-popularity no-contrastive no-balance; do
    echo "== $name" >&2
    # shellcheck disable=SC2086
    optembed compress "${from[@]}" ${runs[$name]} --json "$@" > "$results/$name.json"
done
python3 - "$results" "$out" <<'PY'
import json, sys
from pathlib import Path

import pyarrow.parquet as pq

results, out = Path(sys.argv[1]), Path(sys.argv[2])
lines = ["# compress ablation", "",
         "| run | test AUC | AUC change | embedding bytes | ratio vs Original | weighted MSE | MSE | codes used | perplexity |",
         "|---|---|---|---|---|---|---|---|---|"]
for name in ("full", "no-popularity", "no-contrastive", "no-balance"):
    m = json.loads((results / f"{name}.json").read_text())
    met = m["metrics"]
    fields = [r for r in pq.read_table(Path(m["path"]) / m["outputs"]["fields"]).to_pylist() if r["coded"]]
    mean = lambda key: sum(r[key] for r in fields) / max(len(fields), 1)  # noqa: E731
    lines.append(f"| {name} | {met['test_auc']:.5f} | {met['auc_delta']:+.5f} | {met['embedding_bytes']:,} | "
                 f"{met['ratio_vs_original']:.1f}x | {mean('weighted_mse'):.4f} | {mean('mse'):.4f} | "
                 f"{mean('codes_used'):.1f} | {mean('perplexity'):.1f} |")
lines += ["", "MSE columns: reconstruction error of the coded fields relative to their mean squared row norm "
          "(weighted by popularity, and plain), averaged over fields; codes used / perplexity per group, averaged."]
text = "\n".join(lines) + "\n"
out.write_text(text)
print(text)
PY
