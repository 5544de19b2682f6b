"""`signmae run pretrain`: masked video pretraining of the encoder on every configured dataset.

Output (see docs/TRAINING.md)::

    <root>/_train/pretrain/<version>/checkpoints/step_*/   resumable checkpoints (newest kept)
    <root>/_train/pretrain/<version>/metrics.jsonl         loss, lr, grad norm, clips/s per step
    <root>/_train/pretrain/<version>/recon/step_*.png      original / masked / reconstruction
                                                           under each sampler
    <root>/_train/pretrain/<version>/model/                the pretraining model (model folder)
    <root>/_train/pretrain/<version>/encoder/              its encoder (encoder.safetensors/.json)
    <root>/_train/pretrain/<version>/_stage.json           the stage record

`version` hashes the pretrain, model and masking settings and the fingerprints of the decode
(and mask) outputs read: new mask maps make a new pretraining version. A killed run resumes
from its newest checkpoint when started again with the same config.
"""

from __future__ import annotations

from signmae_core.config import DatasetConfig, PipelineConfig, config_hash
from signmae_core.store import ArtifactStore, StageRecord

from .training import (
    STAGE_DATASET,
    DatasetClips,
    combined_classes,
    dataset_clips,
    local_store,
    needs_fields,
    run_training_stage,
    stage_version,
    training_settings,
)

CODE_VERSION = 1
STAGE_NAME = "pretrain"


def plan(
    cfg: PipelineConfig, datasets: list[DatasetConfig], store: ArtifactStore
) -> tuple[list[DatasetClips], str, dict[str, str]]:
    """The clips, config hash and inputs of pretraining with this config."""
    with_fields = needs_fields(cfg)
    parts = [dataset_clips(cfg, d, cfg.pretrain.splits, store, with_fields) for d in datasets]
    inputs = {k: v for part in parts for k, v in part.inputs.items()}
    hashed = config_hash(
        {
            "train": training_settings(cfg.pretrain),
            "model": cfg.model.model_dump(mode="json"),
            "data": cfg.data.model_dump(mode="json"),
            "masking": cfg.masking.model_dump(mode="json"),
            "datasets": [d.name for d in datasets],
        }
    )
    return parts, hashed, inputs


def current(
    cfg: PipelineConfig, datasets: list[DatasetConfig], store: ArtifactStore | None = None
) -> tuple[StageRecord, str]:
    """The finished pretraining output for this config: `(record, stage folder)`."""
    store = store or local_store(cfg)
    _, hashed, inputs = plan(cfg, datasets, store)
    version = stage_version(hashed, inputs)
    record = store.require_record(
        STAGE_DATASET,
        STAGE_NAME,
        version,
        what="pretrained encoder for this config",
        command="signmae run pretrain",
    )
    return record, store.stage_dir(STAGE_DATASET, STAGE_NAME, version)


def run(cfg: PipelineConfig, datasets: list[DatasetConfig], force: bool = False) -> StageRecord:
    """Pretrain (or resume, or skip when up to date) and return the stage record."""
    store = local_store(cfg)
    parts, hashed, inputs = plan(cfg, datasets, store)
    return run_training_stage(
        cfg, STAGE_NAME, parts, combined_classes(parts), hashed, inputs, CODE_VERSION, force
    )
