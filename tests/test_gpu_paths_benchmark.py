"""The CUDA paths benchmark runs end to end on the CPU (tiny sizes, dynamo's eager backend), so
the script ``gpu_checks.sh`` calls does not rot where no GPU is lent."""

from __future__ import annotations

import pytest

from bench_modules import load_benchmark


@pytest.mark.slow  # about a minute: three Criteo-sized models and two traced ones
def test_gpu_paths_dry_run_prints_every_part(capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_benchmark("gpu_paths.py", "gpu_paths_bench")
    rc = bench.main([
        "--device", "cpu", "--rows", "6000", "--batch-size", "512", "--steps", "2", "--dim", "4", "--mlp", "8",
        "--compile-steps", "3", "--compile-batch", "256", "--backend", "eager", "--table-rows", "3000",
        "--freq-steps", "2", "--no-write",
    ])
    out = capsys.readouterr().out
    assert rc == 0
    assert "equal the device-resident gather of the same generator: True" in out
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| auto")}
    for kind in ("autofield", "autodim"):  # one frame, one graph, the schedule's temperature
        cells = [c.strip() for c in rows[kind].split("|")[1:-1]]
        assert cells[1:3] == ["1", "1"] and float(cells[6]) == 0.0, rows[kind]
    assert "| SparseAdam + RowLRScale (batch rows) |" in out and "Dense scalings after the same steps" in out
