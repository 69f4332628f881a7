#!/usr/bin/env bash
# Fault matrix: bad inputs (and, as they are added, other fault classes) against the real CLI.
#
#   scripts/faults.sh [-k SUBSTRING] [--jobs N] [--list] [--keep]
#
# Builds a tiny synthetic chain once, runs every case of scripts/faults.py in its own folder
# and ends with one summary line per class, e.g. "bad inputs tried 100, handled 100".
# Exit status 0 when every case passed.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec python3 scripts/faults.py "$@"
