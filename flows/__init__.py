"""Thin Prefect flows over the pipeline stages (the orchestration issue fills this in)."""
