"""`signmae run finetune`: the classifier (pretrained encoder + linear head) on labelled clips.

Output (see docs/TRAINING.md)::

    <root>/_train/finetune/<version>/checkpoints/step_*/   resumable checkpoints (newest kept)
    <root>/_train/finetune/<version>/metrics.jsonl         loss, training accuracy, lr, ...
    <root>/_train/finetune/<version>/model/                the classifier (model folder, with
                                                           class names and input settings)
    <root>/_train/finetune/<version>/_stage.json           the stage record

The encoder starts from `finetune.init_encoder`: unset, the pretrain stage's encoder for this
config (its record fingerprint is an input); a safetensors path, that file (its checksum is the
input); `scratch`, random weights. Unlabelled clips are left out.
"""

from __future__ import annotations

from pathlib import Path

from signmae_core.config import DatasetConfig, PipelineConfig, config_hash
from signmae_core.errors import InputError
from signmae_core.store import ArtifactStore, StageRecord, sha256_file

from . import pretrain
from .training import (
    STAGE_DATASET,
    DatasetClips,
    combined_classes,
    dataset_clips,
    local_store,
    run_training_stage,
    stage_version,
    training_settings,
)

CODE_VERSION = 1
STAGE_NAME = "finetune"
SCRATCH = "scratch"


def _initial_encoder(
    cfg: PipelineConfig, datasets: list[DatasetConfig], store: ArtifactStore
) -> tuple[str | None, str]:
    """(encoder safetensors path or None, its fingerprint for the record)."""
    choice = cfg.finetune.init_encoder
    if choice == SCRATCH:
        return None, SCRATCH
    if choice:
        path = Path(choice)
        if not path.is_file():
            raise InputError(f"finetune.init_encoder: no such file {path}")
        return str(path), sha256_file(path)[:16]
    record, folder = pretrain.current(cfg, datasets, store)
    return f"{folder}/encoder/encoder.safetensors", record.fingerprint()


def labelled(part: DatasetClips) -> DatasetClips:
    """The same dataset's clips without the unlabelled ones."""
    records = [r for r in part.records if r["label"] >= 0]
    return DatasetClips(
        part.name, records, part.class_names, part.inputs,
        unlabeled=part.unlabeled + len(part.records) - len(records),
    )


def plan(
    cfg: PipelineConfig, datasets: list[DatasetConfig], store: ArtifactStore
) -> tuple[list[DatasetClips], str, dict[str, str], str | None]:
    """The labelled clips, config hash, inputs and initial encoder of finetuning."""
    parts = [dataset_clips(cfg, d, cfg.finetune.splits, store) for d in datasets]
    parts = [labelled(p) for p in parts]
    init_path, init_fingerprint = _initial_encoder(cfg, datasets, store)
    inputs = {k: v for part in parts for k, v in part.inputs.items()}
    inputs["init_encoder"] = init_fingerprint
    hashed = config_hash(
        {
            "train": training_settings(cfg.finetune),
            "model": cfg.model.model_dump(mode="json"),
            "data": cfg.data.model_dump(mode="json"),
            "datasets": [d.name for d in datasets],
        }
    )
    return parts, hashed, inputs, init_path


def current(
    cfg: PipelineConfig, datasets: list[DatasetConfig], store: ArtifactStore | None = None
) -> tuple[StageRecord, str]:
    """The finished finetuning output for this config: `(record, stage folder)`."""
    store = store or local_store(cfg)
    _, hashed, inputs, _ = plan(cfg, datasets, store)
    version = stage_version(hashed, inputs)
    record = store.require_record(
        STAGE_DATASET,
        STAGE_NAME,
        version,
        what="finetuned classifier for this config",
        command="signmae run finetune",
    )
    return record, store.stage_dir(STAGE_DATASET, STAGE_NAME, version)


def run(cfg: PipelineConfig, datasets: list[DatasetConfig], force: bool = False) -> StageRecord:
    """Finetune (or resume, or skip when up to date) and return the stage record."""
    store = local_store(cfg)
    parts, hashed, inputs, init_path = plan(cfg, datasets, store)
    class_names = combined_classes(parts)
    if not class_names or not any(p.records for p in parts):
        raise InputError(f"no labelled clips in splits {cfg.finetune.splits} to finetune on")
    unlabeled = sum(p.unlabeled for p in parts)
    return run_training_stage(
        cfg, STAGE_NAME, parts, class_names, hashed, inputs, CODE_VERSION, force,
        init_encoder=init_path, skipped={"unlabeled": unlabeled} if unlabeled else None,
    )
