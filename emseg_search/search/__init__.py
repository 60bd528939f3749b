"""The search: Ray Tune driver (run_search), the per-trial trainable, Optuna/ASHA glue, the
recorder that keeps the Parquet tables current, and checkpoint storage (local or cloud)."""
