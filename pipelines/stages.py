"""The stages of the DAG, in order, and where each one's `run` lives.

A data stage runs per dataset: `run(cfg: PipelineConfig, dataset: DatasetConfig, force: bool)
-> StageRecord`. A training stage takes every configured dataset at once: `run(cfg, datasets:
list[DatasetConfig], force: bool) -> StageRecord`. A stage whose module is not there yet is listed
as missing, so `signmae run` and the demo say plainly what they could not run.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Stage:
    name: str
    module: str
    per_dataset: bool
    summary: str

    @property
    def available(self) -> bool:
        return importlib.util.find_spec(self.module) is not None

    def load(self) -> Callable[..., Any]:
        return importlib.import_module(self.module).run


STAGES: list[Stage] = [
    Stage("ingest", "pipelines.ingest", True, "probe videos, write the manifest and class map"),
    Stage("decode", "pipelines.decode", True, "standardized clips: window, fps, crop, size"),
    Stage("extract", "pipelines.extract", True, "keypoints and part segmentation to Parquet"),
    Stage("masks", "pipelines.masks", True, "per-frame part presence and motion fields"),
    Stage("shard", "pipelines.shard", True, "WebDataset shards and index"),
    Stage("pretrain", "pipelines.pretrain", False, "masked video pretraining of the encoder"),
    Stage("finetune", "pipelines.finetune", False, "classifier finetuning"),
    Stage("evaluate", "pipelines.evaluate", False, "metrics JSON and report"),
]

STAGE_NAMES = [s.name for s in STAGES]


def get_stage(name: str) -> Stage:
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise KeyError(f"unknown stage {name!r} (stages: {', '.join(STAGE_NAMES)})")
