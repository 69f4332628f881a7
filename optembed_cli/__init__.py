"""The ``optembed`` command line.

Importing it sets ``OMP_WAIT_POLICY=PASSIVE`` (unless already set) before torch is imported and
raises glibc's allocator thresholds (:mod:`optembed.training.host`). OMP_WAIT_POLICY:
OpenMP threads that spin while waiting make a training step several times slower on a busy
machine with few cores (see benchmarks/RESULTS.md), and cost nothing noticeable elsewhere.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from optembed.training.host import tune_allocator  # noqa: E402

tune_allocator()  # reuse freed blocks instead of page-faulting fresh memory every step
