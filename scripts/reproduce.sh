#!/usr/bin/env bash
# Reproduce the OptEmbed comparison (paper Tables 2-4 shape) for the four backbones.
#
#   scripts/reproduce.sh DATA FORMAT [OUT.md] [extra `optembed run` options...]
#
# Every backbone runs Original, OptEmbed-E, OptEmbed-D, OptEmbed, OptEmbed without re-training
# and the baselines QR, PEP, AutoField and AutoDim through `optembed run --json` (a `--variants` option among the
# extra options replaces that list; `--retrain-init fresh|rewind|supernet` picks the re-training start,
# shown in the table's init column; the compressed variants are distilled from the Original unless
# `--distill 0` is given, as the paper trains them: the distill column says which); stages already in
# the artifact store are reused.
# The combined table is printed and written to OUT.md (default: reproduction.md).
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 DATA FORMAT [OUT.md] [optembed run options...]" >&2
    exit 2
fi
data=$1; format=$2; out=${3:-reproduction.md}
shift $(( $# >= 3 ? 3 : 2 ))
results=$(mktemp -d)
trap 'rm -rf "$results"' EXIT
for model in fnn deepfm dcn ipnn; do
    echo "== $model" >&2
    optembed run --data "$data" --format "$format" --model "$model" --json \
        --variants original,optembed-e,optembed-d,optembed,optembed-noretrain,qr,pep,autofield,autodim "$@" > "$results/$model.json"
done
python3 - "$results" "$out" "$data" <<'PY'
import json, sys
from pathlib import Path

results, out, data = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
order = ["original", "optembed-e", "optembed-d", "optembed", "optembed (no retrain)", "qr", "pep", "autofield", "autodim"]
lines = [f"# OptEmbed reproduction on {data}", "",
         "| backbone | variant | init | distill | test AUC | logloss | sparsity | embedding params | embedding bytes | ratio |",
         "|---|---|---|---|---|---|---|---|---|---|"]
for model in ("fnn", "deepfm", "dcn", "ipnn"):
    manifest = json.loads((results / f"{model}.json").read_text())
    rows = json.loads((Path(manifest["path"]) / manifest["outputs"]["metrics"]).read_text())["models"]
    rows.sort(key=lambda r: order.index(r["variant"]) if r["variant"] in order else 99)
    for r in rows:
        lines.append(f"| {model} | {r['variant']} | {r.get('init') or '-'} | {r.get('distill') or '-'} | {r['test_auc']:.5f} | {r['test_logloss']:.5f} | "
                     f"{r['sparsity']:.4f} | {r['embedding_params']:,} | {r['embedding_bytes']:,} | "
                     f"{r['ratio_vs_original']:.1f}x |")
text = "\n".join(lines) + "\n"
out.write_text(text)
print(text)
PY
