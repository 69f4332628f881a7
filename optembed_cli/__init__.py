"""The ``optembed`` command line: thin Typer commands that call ``pipelines`` and render with Rich."""
