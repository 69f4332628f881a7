#!/usr/bin/env bash
# The CUDA benchmarks in one run, each under its own time limit: training-core throughput; the
# CUDA-only training paths (benchmarks/gpu_paths.py: host batches through the pinned ring with
# the data kept on the host, --compile with the AutoField/AutoDim search embedders and its
# frame count, the --freq-lr row scaling against the whole-table one); search speed on 1M
# validation rows; compact-model latency; the embedding optimizers with --freq-lr on a
# 5M-row table; the streaming vs in-memory data path on 2M Criteo-shaped rows. Each writes its
# section of benchmarks/RESULTS.md (sparse_optimizers prints its table; its RESULTS section
# holds hand-written parts) and a log into LOGDIR; RESULTS.md is copied there at the end. The
# limits add up to 580 s, inside one 10-minute device command; none of these needs duckdb.
#
# Usage: bash benchmarks/gpu_checks.sh [LOGDIR [CHECK ...]]   (default LOGDIR: benchmarks/gpu-logs;
#        CHECKs: any of the names below, to rerun only those; default: all)
set -uo pipefail
cd "$(dirname "$0")/.."
logs="${1:-benchmarks/gpu-logs}"
shift || true
wanted=" $* "
mkdir -p "$logs"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_checks: no CUDA device here" >&2
    exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$logs/gpu.txt" 2>&1 || true
started=$SECONDS

check() {
    local name=$1 limit=$2
    shift 2
    if [[ "$wanted" != "  " && "$wanted" != *" $name "* ]]; then
        return
    fi
    local start=$SECONDS
    timeout "$limit" "$@" > "$logs/$name.log" 2>&1
    local rc=$?
    echo "== $name: exit $rc after $((SECONDS - start)) s (limit $limit s)"
    tail -n 14 "$logs/$name.log"
}

check train_throughput 100 python3 benchmarks/train_throughput.py --device cuda
check host_staging 45 python3 benchmarks/gpu_paths.py --device cuda --only staging --rows 2000000 --batch-size 16384
check compile_search 120 python3 benchmarks/gpu_paths.py --device cuda --only compile --compile-steps 30
check freq_lr_rows 35 python3 benchmarks/gpu_paths.py --device cuda --only freq-lr --table-rows 5000000
check search_speed 140 python3 benchmarks/search_speed.py --device cuda --val-rows 1000000
check compact_latency 30 python3 benchmarks/compact_latency.py --device cuda
check sparse_optimizers 55 python3 benchmarks/sparse_optimizers.py --device cuda --rows-in-table 5000000 \
    --batches 16384 --steps 50 --with-freq-lr
check scale_stream 55 python3 benchmarks/scale.py --device cuda --rows 2000000 --steps 200 --warmup 20 \
    --batch-size 8192
cp benchmarks/RESULTS.md "$logs/RESULTS.md"
echo "== gpu_checks: $((SECONDS - started)) s in all"
