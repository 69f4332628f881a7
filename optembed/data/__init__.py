"""Data: raw formats, DuckDB preprocessing, synthetic generation, device-resident splits."""
