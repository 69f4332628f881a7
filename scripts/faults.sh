#!/usr/bin/env bash
# Fault matrix: bad inputs, faults (kill -9, concurrent runs, a full disk, --resume), corrupted
# files and planted pickles against the real CLI.
#
#   scripts/faults.sh [-k SUBSTRING ...] [--kind CLASS] [--jobs N] [--list] [--keep]
#
# Builds a tiny synthetic chain once, runs every case of scripts/faults.py in its own folder
# and ends with one summary line, e.g. "bad inputs tried 100, handled 100; faults tried 12,
# survived 12; corruption detected 40/40; code executed 0".
# Exit status 0 when every case passed.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec python3 scripts/faults.py "$@"
