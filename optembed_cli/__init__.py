"""The ``optembed`` command line.

Importing it sets ``OMP_WAIT_POLICY=PASSIVE`` (unless already set) before torch is imported:
OpenMP threads that spin while waiting make a training step several times slower on a busy
machine with few cores (see benchmarks/RESULTS.md), and cost nothing noticeable elsewhere.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
