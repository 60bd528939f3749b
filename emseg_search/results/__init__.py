"""Result tables: declared Parquet schemas (trials, epochs, images, particles) and their io."""

from __future__ import annotations

from emseg_search.results.io import load_experiment, read_table, write_table

__all__ = ["load_experiment", "read_table", "write_table"]
