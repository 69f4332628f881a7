"""optembed core library: data, layers, models, masks, evolution, training, quantization.

Nothing in this package imports Typer or Rich; the command-line layer lives in
``optembed_cli`` and the stage orchestration in ``pipelines``.
"""

__version__ = "0.1.0"
