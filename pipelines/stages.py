"""The stages of the DAG, declared once, in order: the only list of stages.

Each entry names the stages it reads (the DAG's edges), its code version (bump it when the
stage's output format or algorithm changes), the config sections whose output fields shape its
output, and its compute function (`module:function`, taking a `StageContext`). Data stages run
per dataset; training stages (`per_dataset=False`) combine every configured dataset and live under
the store's `_train` pseudo-dataset. A stage without a compute function is listed as missing.
"""

from __future__ import annotations

from pathlib import Path

from signmae_core.config import DatasetConfig, PipelineConfig
from signmae_core.errors import InputError
from signmae_core.store import sha256_file

from .dag import Stage

SCRATCH = "scratch"  # finetune.init_encoder: random initial weights


def _sources(cfg: PipelineConfig, dataset: DatasetConfig | None) -> dict[str, str]:
    """Ingest's input: the label files and every video's path, size and mtime."""
    from signmae_core.ingest import plan_videos, sources_fingerprint

    assert dataset is not None
    return {"sources": sources_fingerprint(dataset, plan_videos(dataset))}


def _pretrain_optional(cfg: PipelineConfig) -> set[str]:
    """Pretraining reads mask fields (the field shards) only when the sampler or the loss uses
    them."""
    uses_fields = cfg.masking.sampler == "segmentation" or cfg.model.hand_loss_weight > 0
    return set() if uses_fields else {"shard_fields"}


def _finetune_optional(cfg: PipelineConfig) -> set[str]:
    """Finetuning reads the pretrained encoder unless `finetune.init_encoder` names another."""
    return {"pretrain"} if cfg.finetune.init_encoder else set()


def _init_encoder(cfg: PipelineConfig, dataset: DatasetConfig | None) -> dict[str, str]:
    """Finetuning's input when it does not start from the pretrain stage: `scratch`, or the
    encoder file's checksum (a missing file is an error that names it)."""
    choice = cfg.finetune.init_encoder
    if not choice:
        return {}
    if choice == SCRATCH:
        return {"init_encoder": SCRATCH}
    path = Path(choice)
    if not path.is_file():
        raise InputError(f"finetune.init_encoder: no such file {path}")
    return {"init_encoder": sha256_file(path)[:16]}


STAGES: list[Stage] = [
    Stage("ingest", (), 1, ("ingest",), True, "pipelines.ingest:compute",
          "probe videos, write the manifest and class map", dataset_config=True,
          extra_inputs=_sources),
    Stage("decode", ("ingest",), 1, ("decode",), True, "pipelines.decode:compute",
          "standardized clips: window, fps, crop, size"),
    Stage("extract", ("decode",), 1, ("extract",), True, "pipelines.extract:compute",
          "keypoints and part segmentation to Parquet"),
    Stage("masks", ("extract",), 1, ("masks",), True, "pipelines.masks:compute",
          "per-frame part presence and motion fields"),
    # shard 2, shard_fields 2: samples.parquet says where each member lies (no header scan)
    Stage("shard", ("decode",), 2, ("shard",), True, "pipelines.shard:compute",
          "WebDataset shards of the clips per split, and their index"),
    Stage("shard_fields", ("shard", "masks"), 2, (), True, "pipelines.shard:compute_fields",
          "the mask fields as shards beside the clip shards"),
    Stage("pretrain", ("shard", "shard_fields"), 2, ("pretrain", "model", "data", "masking"),
          False, "pipelines.pretrain:compute", "masked video pretraining of the encoder",
          optional_needs=_pretrain_optional),
    Stage("finetune", ("shard", "pretrain"), 2, ("finetune", "model", "data"), False,
          "pipelines.finetune:compute", "classifier finetuning",
          optional_needs=_finetune_optional, extra_inputs=_init_encoder),
    Stage("evaluate", ("ingest", "decode", "extract", "shard", "finetune"), 3, ("evaluate",),
          False, "pipelines.evaluate:compute",
          "metrics JSON and report, within-group accuracy, floors and keypoint baseline"),
    # probe: the finetune section says which encoder (scratch: its seed) and the labelled budget
    Stage("probe", ("shard", "pretrain"), 1, ("probe", "model", "data", "finetune"), False,
          "pipelines.probe:compute", "k-NN probe of the frozen encoder finetuning starts from",
          optional_needs=_finetune_optional, extra_inputs=_init_encoder),
]

STAGE_NAMES = [s.name for s in STAGES]
