"""What the pretrain, finetune and evaluate stages share: their clips, their worker, their layout.

Training stages combine every configured dataset, so they live under the store's `_train`
pseudo-dataset (see docs/TRAINING.md)::

    <root>/_train/pretrain/<version>/    checkpoints/, metrics.jsonl, recon/, model/, encoder/
    <root>/_train/finetune/<version>/    checkpoints/, metrics.jsonl, model/
    <root>/_train/evaluate/<version>/    metrics.json, report.md, report.html, plots/,
                                         predictions.csv

Clips come from each dataset's decode output (and, where masking needs them, its mask fields)
through the one dataset reader, `signmae_core.data.ClipDataset`. Training runs in
`train_worker`, the same function whether one process runs it or Ray Train runs it on every
worker (`pipelines.train_ray.run_training`).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from signmae_core.config import DatasetConfig, PipelineConfig, TrainConfig, config_hash
from signmae_core.data import ClipDataset, ClipRecord, Sampling
from signmae_core.errors import InputError
from signmae_core.store import ArtifactStore

STAGE_DATASET = "_train"

# fields that change how a run is carried out, not what it computes: outside the version hash
OPERATIONAL_FIELDS = {
    "device", "num_workers", "cpus_per_worker", "loader_threads", "log_every",
    "checkpoint_every", "keep_checkpoints", "recon_every", "recon_samples", "resume", "compile",
}


def training_settings(train: TrainConfig) -> dict[str, Any]:
    """The settings of a TrainConfig that decide the result (for the stage's config hash)."""
    return train.model_dump(mode="json", exclude=OPERATIONAL_FIELDS)


def local_store(cfg: PipelineConfig) -> ArtifactStore:
    """The store; training writes checkpoints as it goes, so its root must be a local path
    (or a mounted shared file system for multi-machine runs)."""
    store = ArtifactStore.from_config(cfg.store)
    if not store.is_local:
        raise InputError(
            f"training stages need a local or mounted store root, not {cfg.store.root}"
        )
    return store


def sampling_for(cfg: PipelineConfig) -> Sampling:
    """How clips are cut for the model: frames and size from `model`, augmentation from `data`."""
    return Sampling.from_config(cfg)


# ---- the clips of one or more datasets --------------------------------------------------------
@dataclass
class DatasetClips:
    """One dataset's clips of some splits, as plain data (it travels to Ray workers)."""

    name: str
    records: list[dict[str, Any]]
    class_names: list[str]
    inputs: dict[str, str] = field(default_factory=dict)
    unlabeled: int = 0  # clips left out for having no label


def dataset_clips(
    cfg: PipelineConfig,
    dataset: DatasetConfig,
    splits: Sequence[str],
    store: ArtifactStore,
    with_fields: bool = False,
) -> DatasetClips:
    """The ok clips of `splits` in a dataset's current decode output, with its class names.

    `inputs` holds the fingerprints of the upstream records read (ingest, decode, and masks when
    `with_fields`), for the training stage's record.
    """
    from . import decode, ingest, masks

    ingest_record, manifest_path = ingest.current(cfg, dataset, store)
    from signmae_core.ingest.manifest import CLASSES_NAME, parse_class_map

    classes_path = f"{manifest_path.rsplit('/', 1)[0]}/{CLASSES_NAME}"
    class_names = parse_class_map(store.read_bytes(classes_path).decode("utf-8"))
    decode_record, folder = decode.current(cfg, dataset, store)
    table = decode.load_clips(cfg, dataset, store).to_pylist()
    records = []
    for row in table:
        if row["status"] != "ok" or row["split"] not in splits:
            continue
        label = row["label_id"]
        records.append(
            {
                "video_id": row["video_id"],
                "clip_path": f"{folder}/{row['clip']}",
                "label": -1 if label is None else int(label),
                "split": row["split"],
            }
        )
    inputs = {
        f"{dataset.name}/ingest": ingest_record.fingerprint(),
        f"{dataset.name}/decode": decode_record.fingerprint(),
    }
    if with_fields:
        masks_record, _ = masks.current(cfg, dataset, store)
        inputs[f"{dataset.name}/masks"] = masks_record.fingerprint()
    return DatasetClips(dataset.name, records, class_names, inputs)


def combined_classes(parts: Sequence[DatasetClips]) -> list[str]:
    """One class list over datasets: a single labelled dataset keeps its names; several are
    prefixed `<dataset>:` and concatenated in dataset order."""
    labelled = [p for p in parts if p.class_names]
    if len(labelled) <= 1:
        return list(labelled[0].class_names) if labelled else []
    return [f"{p.name}:{name}" for p in labelled for name in p.class_names]


class ClipSet:
    """Several datasets' `ClipDataset`s as one: `load(index, rng, view, num_views)` like theirs,
    labels mapped onto `combined_classes`."""

    def __init__(self, datasets: list[ClipDataset], label_offsets: list[int]) -> None:
        self.datasets = datasets
        self.label_offsets = label_offsets
        self.starts = list(np.cumsum([0] + [len(d) for d in datasets[:-1]]))
        self.total = sum(len(d) for d in datasets)

    def __len__(self) -> int:
        return self.total

    def load(self, index: int, rng: Any, view: int = 0, num_views: int = 1) -> dict[str, Any]:
        part = bisect.bisect_right(self.starts, index) - 1
        item = self.datasets[part].load(index - self.starts[part], rng, view, num_views)
        if item["label"] >= 0:
            item["label"] += self.label_offsets[part]
        return item


def open_clip_set(
    cfg: PipelineConfig,
    parts: Sequence[DatasetClips],
    train: bool,
    with_fields: bool,
) -> ClipSet:
    """The reader over every dataset's clips (in a worker: it opens the field files itself)."""
    from . import masks

    datasets, offsets, offset = [], [], 0
    sampling = sampling_for(cfg)
    for part in parts:
        fields = None
        if with_fields:
            fields = masks.open_fields(cfg, cfg.dataset(part.name))  # thread-safe reader
        records = [ClipRecord(**r) for r in part.records]
        datasets.append(ClipDataset(records, sampling, fields=fields, train=train))
        offsets.append(offset)
        offset += len(part.class_names)
    if sum(len(d) for d in datasets) == 0:
        raise InputError("no clips to read in the chosen splits")
    return ClipSet(datasets, offsets)


def stage_version(config_hash_: str, inputs: dict[str, str]) -> str:
    """A training stage's version: its config hash and the fingerprints of what it read."""
    return config_hash({"config": config_hash_, "inputs": inputs})


def total_steps(num_clips: int, train: TrainConfig) -> int:
    """Optimizer steps of a run: `epochs` passes (whole global batches) or `max_steps`."""
    steps_per_epoch = num_clips // (train.batch_size * train.grad_accum)
    if steps_per_epoch == 0:
        raise InputError(
            f"{num_clips} training clips are fewer than one step of "
            f"{train.batch_size * train.grad_accum} (batch_size x grad_accum)"
        )
    return train.max_steps or train.epochs * steps_per_epoch


def model_input_info(cfg: PipelineConfig, views: int) -> dict[str, Any]:
    """How the model's clips were made, for inference on new videos (`signmae predict`)."""
    return {
        "decode": cfg.decode.model_dump(mode="json"),
        "sampling": asdict(sampling_for(cfg)),
        "views": views,
    }


# ---- the worker ---------------------------------------------------------------------------------
def train_worker(payload: dict[str, Any]) -> dict[str, Any]:
    """Train on this worker (rank from torch.distributed) and, on rank 0, publish the model.

    `payload`: `kind` ("pretrain" or "finetune"), `config` (PipelineConfig as JSON), `parts`
    (DatasetClips as dicts), `run_dir`, `total_steps`, `class_names`, and for finetuning
    `init_encoder` (a safetensors path or None for random init).
    """
    import torch
    import torch.distributed as dist

    from signmae_core.data import collate
    from signmae_core.models import create_classifier, create_pretrain_model, token_grid
    from signmae_core.train import EpochBatches, FinetuneTask, PretrainTask, Trainer
    from signmae_core.train.checkpoint import load_weights
    from signmae_core.train.export import save_model_folder

    cfg = PipelineConfig.model_validate(payload["config"])
    kind = payload["kind"]
    train = cfg.pretrain if kind == "pretrain" else cfg.finetune
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    parts = [DatasetClips(**p) for p in payload["parts"]]
    with_fields = kind == "pretrain" and needs_fields(cfg)
    clips = open_clip_set(cfg, parts, train=True, with_fields=with_fields)
    source = EpochBatches(
        len(clips), clips.load, train.batch_size, seed=train.seed, rank=rank, world_size=world,
        threads=train.loader_threads, collate_fn=collate,
    )
    torch.manual_seed(train.seed)
    run_dir = Path(payload["run_dir"])
    grid = token_grid(cfg.model)
    figure_fn = None
    if kind == "pretrain":
        model = create_pretrain_model(cfg.model)
        task = PretrainTask(make_mask_fn(cfg, cfg.masking.sampler), grid)
        figure_fn = make_figure_fn(cfg, with_fields, train.recon_samples)
    else:
        model = create_classifier(cfg.model, len(payload["class_names"]))
        if payload.get("init_encoder"):
            model.load_encoder_state_dict(load_weights(payload["init_encoder"]))
        task = FinetuneTask(train.label_smoothing)
    meta = {"kind": kind, "class_names": payload["class_names"], "model": cfg.model.model_dump()}
    trainer = Trainer(
        model, task, train, payload["total_steps"], run_dir=run_dir, meta=meta,
        figure_fn=figure_fn,
    )
    result = trainer.fit(source)
    if result.ran_out_of_data:
        raise RuntimeError(f"the clips ran out at step {result.state.step}")
    if rank == 0:
        info = {
            "kind": "pretrain" if kind == "pretrain" else "classifier",
            "model": cfg.model.model_dump(mode="json"),
            "num_classes": len(payload["class_names"]),
            "class_names": payload["class_names"],
            "input": model_input_info(cfg, cfg.evaluate.views),
            "trained": {"steps": result.state.step, "samples": result.state.samples},
        }
        save_model_folder(run_dir / "model", model, info)
        if kind == "pretrain":
            from signmae_core.train.export import export_encoder

            export_encoder(run_dir / "model", run_dir / "encoder")
    losses = [result.losses[s] for s in sorted(result.losses)]
    return {
        "steps": result.state.step,
        "samples": result.state.samples,
        "resumed_from": result.resumed_from,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "world_size": world,
    }


def needs_fields(cfg: PipelineConfig) -> bool:
    """Pretraining reads mask fields when the sampler scores tokens or hands weigh the loss."""
    return cfg.masking.sampler == "segmentation" or cfg.model.hand_loss_weight > 0


def make_mask_fn(cfg: PipelineConfig, sampler: str):
    """`mask_fn(batch, grid, generator) -> (mask, token_weight)` from the masking config."""
    from signmae_core.masking import TokenMasker
    from signmae_core.models import token_grid

    settings = cfg.masking.model_copy(update={"sampler": sampler})
    masker = TokenMasker.from_config(settings, token_grid(cfg.model))

    def mask_fn(batch: dict[str, Any], grid: tuple[int, int, int], generator: Any):
        fields = batch.get("fields")
        draw = masker(
            fields, batch_size=batch["clips"].shape[0], device="cpu", generator=generator
        )
        return draw.mask, draw.hand_presence

    return mask_fn


def make_figure_fn(cfg: PipelineConfig, with_fields: bool, samples: int):
    """Reconstruction figures under every sampler the clips allow, with fixed masks."""
    import torch

    from signmae_core.models import token_grid
    from signmae_core.train.recon import save_reconstruction

    samplers = ["tube", "random"] + (["segmentation"] if with_fields else [])
    mask_fns = {name: make_mask_fn(cfg, name) for name in samplers}
    grid = token_grid(cfg.model)

    def figure_fn(model: Any, batch: dict[str, Any], step: int, path: Path) -> None:
        masks = {
            name: fn(batch, grid, torch.Generator().manual_seed(step))[0]
            for name, fn in mask_fns.items()
        }
        device = next(model.parameters()).device
        clips = batch["clips"][:samples].to(device)
        save_reconstruction(path, model, clips, masks, title=f"step {step}", max_clips=samples)

    return figure_fn


# ---- the stage around the worker ----------------------------------------------------------------
RUN_OUTPUTS = ("checkpoints", "metrics.jsonl", "recon", "model", "encoder", "ray")


def register_outputs(writer: Any, run_dir: Path) -> None:
    """Record the run's published files: model/, encoder/, metrics, figures, last checkpoint."""
    from signmae_core.train.checkpoint import latest_checkpoint

    chosen: list[Path] = []
    for sub in ("model", "encoder", "recon"):
        if (run_dir / sub).is_dir():
            chosen += sorted(p for p in (run_dir / sub).iterdir() if p.is_file())
    if (run_dir / "metrics.jsonl").is_file():
        chosen.append(run_dir / "metrics.jsonl")
    last = latest_checkpoint(run_dir / "checkpoints")
    if last is not None:
        chosen += sorted(last.iterdir())
    for path in chosen:
        writer.add_existing(str(path.relative_to(run_dir)), checksum=path.suffix == ".safetensors")


def run_training_stage(
    cfg: PipelineConfig,
    kind: str,
    parts: list[DatasetClips],
    class_names: list[str],
    config_hash_: str,
    inputs: dict[str, str],
    code_version: int,
    force: bool,
    init_encoder: str | None = None,
    skipped: dict[str, int] | None = None,
) -> Any:
    """Train (or resume, or skip when up to date) and commit the stage record.

    `skipped` adds counts of clips left out (e.g. unlabelled ones) to the record."""
    import shutil

    from signmae_core.train.engine import resolve_device

    from .train_ray import run_training

    store = local_store(cfg)
    train = cfg.pretrain if kind == "pretrain" else cfg.finetune
    version = stage_version(config_hash_, inputs)
    if not force:
        record = store.is_up_to_date(
            STAGE_DATASET, kind, version, config_hash_, code_version, inputs
        )
        if record is not None:
            return record
    num_clips = sum(len(p.records) for p in parts)
    steps = total_steps(num_clips, train)
    use_gpu = resolve_device(train.device).type == "cuda"  # decided where the stage starts
    with store.open_stage(
        STAGE_DATASET, kind, version, config_hash=config_hash_, code_version=code_version,
        inputs=inputs,
    ) as writer:
        run_dir = Path(writer.dir)
        if force:  # start over: a resume would continue the old run
            for name in RUN_OUTPUTS:
                target = run_dir / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
        payload = {
            "kind": kind,
            "config": cfg.model_dump(mode="json"),
            "parts": [asdict(p) for p in parts],
            "run_dir": str(run_dir),
            "total_steps": steps,
            "class_names": class_names,
            "init_encoder": init_encoder,
        }
        summary = run_training(
            "pipelines.training:train_worker", payload, num_workers=train.num_workers,
            use_gpu=use_gpu, storage_path=str(run_dir / "ray"), name=kind,
            cpus_per_worker=train.cpus_per_worker, ray_config=cfg.ray,
        )
        register_outputs(writer, run_dir)
        writer.counts["ok"] = num_clips  # the clips trained on
        writer.counts["steps"] = summary["steps"]
        for name, count in (skipped or {}).items():
            writer.counts[name] = count
        return writer.commit(
            **summary,
            datasets=[p.name for p in parts],
            num_classes=len(class_names),
            total_steps=steps,
        )


def stage_folder(cfg: PipelineConfig, kind: str, version: str) -> Path:
    """The local folder of a training stage version."""
    return Path(local_store(cfg).stage_dir(STAGE_DATASET, kind, version))
