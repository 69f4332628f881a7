"""One supernet epoch on CPU; run it with and without OMP_WAIT_POLICY=PASSIVE to compare.

    env -u OMP_WAIT_POLICY python benchmarks/omp_wait_policy.py STORE SEED
    OMP_WAIT_POLICY=PASSIVE python benchmarks/omp_wait_policy.py STORE SEED

STORE holds a preprocess artifact (e.g. the one `optembed demo --artifacts STORE` made). This
script imports the pipelines directly, so the CLI's default does not apply.
"""

from __future__ import annotations

import sys, time, torch
from pipelines.store import Store
from pipelines import supernet
from optembed.models.config import ModelConfig
from optembed.training.config import TrainConfig
store = Store(sys.argv[1])
pre = store.list("preprocess")[-1]
cfg = supernet.SupernetStage(model=ModelConfig("deepfm", embed_dim=16, mlp_dims=(128, 64)), mode="optembed",
    train=TrainConfig(epochs=1, batch_size=512, seed=int(sys.argv[2])), source=pre.fingerprint, device="cpu", force=True)
t = time.perf_counter()
m = supernet.run(cfg, store)
print(f"threads={torch.get_num_threads()} epoch_seconds={time.perf_counter()-t:.1f} train_samples_per_s={m.metrics['train_samples_per_s']}")
