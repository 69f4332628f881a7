"""Stage orchestration: one module per stage, each with ``run(config, store) -> Manifest``.

Pipelines read upstream artifacts from the :class:`~pipelines.store.Store`, call the core
library (``optembed``) and publish their outputs atomically. They never print; progress
goes through an ``optembed.progress.Reporter``.
"""
