"""Test helpers: run one stage for one dataset through a fresh plan, read its outputs.

A fresh `Plan` per call, as each command makes one: what changed on disk between calls is seen.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from pipelines import outputs
from pipelines.dag import Plan
from pipelines.execute import execute
from signmae_core.config import DatasetConfig, PipelineConfig
from signmae_core.store import StageRecord


def run_stage(
    cfg: PipelineConfig, stage: str, dataset: DatasetConfig | None = None, force: bool = False
) -> StageRecord:
    """Run (or reuse) `stage` for `dataset` and return its record."""
    plan = Plan.from_config(cfg)
    return execute(plan, plan.key(stage, dataset.name if dataset else None), force=force).record


def stage_folder(cfg: PipelineConfig, stage: str, dataset: DatasetConfig | None = None) -> str:
    """The finished output folder of `stage` for `dataset`."""
    return Plan.from_config(cfg).output(stage, dataset.name if dataset else None).folder


def manifest(cfg: PipelineConfig, dataset: DatasetConfig) -> pa.Table:
    return outputs.manifest(Plan.from_config(cfg), dataset.name)


def clip_rows(cfg: PipelineConfig, dataset: DatasetConfig) -> list[dict[str, Any]]:
    return outputs.clip_rows(Plan.from_config(cfg), dataset.name)
