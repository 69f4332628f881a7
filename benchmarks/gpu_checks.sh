#!/usr/bin/env bash
# The CUDA benchmarks in one run, each under its own time limit: training-core throughput,
# search speed on 1M validation rows, compact-model latency, the embedding optimizers on a
# 5M-row table, the streaming vs in-memory data path on 5M Criteo-shaped rows. Each writes its section of benchmarks/RESULTS.md (sparse_optimizers prints its
# table; its RESULTS section holds hand-written parts) and a log into LOGDIR; RESULTS.md is
# copied there at the end. The limits add up to 585 s, inside one 10-minute device command;
# none of these four needs duckdb.
#
# Usage: bash benchmarks/gpu_checks.sh [LOGDIR]     (default LOGDIR: benchmarks/gpu-logs)
set -uo pipefail
cd "$(dirname "$0")/.."
logs="${1:-benchmarks/gpu-logs}"
mkdir -p "$logs"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_checks: no CUDA device here" >&2
    exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$logs/gpu.txt" 2>&1 || true

check() {
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS
    timeout "$limit" "$@" > "$logs/$name.log" 2>&1
    local rc=$?
    echo "== $name: exit $rc after $((SECONDS - start)) s (limit $limit s)"
    tail -n 12 "$logs/$name.log"
}

check train_throughput 120 python3 benchmarks/train_throughput.py --device cuda
check search_speed 200 python3 benchmarks/search_speed.py --device cuda --val-rows 1000000
check compact_latency 45 python3 benchmarks/compact_latency.py --device cuda
check sparse_optimizers 120 python3 benchmarks/sparse_optimizers.py --device cuda --rows-in-table 5000000 \
    --batches 2048,16384 --with-freq-lr
check scale_stream 100 python3 benchmarks/scale.py --device cuda --rows 5000000 --steps 300 --warmup 30 \
    --batch-size 8192
cp benchmarks/RESULTS.md "$logs/RESULTS.md"
