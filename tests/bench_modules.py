"""Importing a benchmark script (benchmarks/ is no package) as a module, for the tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load_benchmark(file: str, name: str) -> ModuleType:
    """``benchmarks/<file>`` loaded as module ``name`` (registered in ``sys.modules``: dataclasses
    look their module up by name)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
