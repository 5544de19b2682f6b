"""What the pretrain, finetune and evaluate stages share: their clips, their worker, their run.

Training stages combine every configured dataset, so they live under the store's `_train`
pseudo-dataset (see docs/TRAINING.md)::

    <root>/_train/pretrain/<version>/    checkpoints/, metrics.jsonl, recon/, model/, encoder/,
                                         inputs.json
    <root>/_train/finetune/<version>/    checkpoints/, metrics.jsonl, model/, inputs.json
    <root>/_train/evaluate/<version>/    metrics.json, report.md, report.html, plots/,
                                         predictions.csv

Versions and input fingerprints come from the plan (`pipelines.dag`); the stages read clips
through `pipelines.outputs` and hand the worker resolved paths only. Training runs in
`train_worker`, the same function whether one process runs it or Ray Train runs it on every
worker (`pipelines.train_ray.run_training`). A run resumes from its newest checkpoint only when
the fingerprints of what it reads are the ones it started with (`inputs.json`); changed data,
`--force` or a damaged output start it over. With an object-store root the run is written into
a local work folder and its outputs uploaded when it ends (`run_folder`, `publish_run`; resume:
same machine only, docs/STORE.md).
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from signmae_core.config import PipelineConfig, TrainConfig
from signmae_core.data import Sampling
from signmae_core.errors import InputError
from signmae_core.store import OutputEntry

from . import outputs
from .dag import DAMAGED, StageOutput
from .execute import StageContext, StageResult
from .stages import SCRATCH

if TYPE_CHECKING:
    from signmae_core.data.shards import ShardClips

RUN_OUTPUTS = ("checkpoints", "metrics.jsonl", "recon", "model", "encoder", "ray")
INPUTS_MARKER = "inputs.json"  # the input fingerprints a run started with (resume guard)


# ---- the clips of one or more datasets --------------------------------------------------------
@dataclass
class DatasetClips:
    """One dataset's clips of some splits, as plain data with resolved paths (it travels to
    Ray workers): `records` hold `video_id`, `label` (-1: none), `split` and, when asked for,
    the decode stage's `clip_path`, in shard order; `shards` the dataset's shard set of those
    splits (`signmae_core.data.shards.ShardSet` as a dict: folder, shard entries, the field
    shards' folder when the run reads fields)."""

    name: str
    records: list[dict[str, Any]]
    class_names: list[str]
    shards: dict[str, Any] = field(default_factory=dict)
    unlabeled: int = 0  # clips left out for having no label
    labelled_only: bool = False


def dataset_clips(
    ctx: StageContext, dataset: str, splits: Sequence[str], with_fields: bool = False,
    clip_files: bool = False,
) -> DatasetClips:
    """The clips of `splits` in a dataset's shard set (in shard order), its class names, its
    shards (with `with_fields`, its field shards), all read through the plan; `clip_files` adds
    each clip's decode file (`clip_path`) for readers of the clip files (the baselines)."""
    from signmae_core.data.shards import ShardSet
    from signmae_core.shards import split_name

    folder, index = outputs.shard_index(ctx.plan, dataset)
    wanted = {split_name(s) for s in splits}
    fields_folder = None
    if with_fields:
        fields_folder = outputs.shard_index(ctx.plan, dataset, "shard_fields")[0]
    shards = ShardSet.from_index(dataset, folder, index, sorted(wanted), fields_folder)
    order = {entry["path"]: n for n, entry in enumerate(shards.shards)}
    rows = sorted((r for r in outputs.shard_samples(ctx.plan, dataset) if r["shard"] in order),
                  key=lambda r: (order[r["shard"]], r["key"]))
    paths = {}
    if clip_files:
        paths = {r["video_id"]: r["clip_path"] for r in outputs.clip_rows(ctx.plan, dataset)}
    records = [
        {"video_id": r["video_id"], "label": -1 if r["label_id"] is None else int(r["label_id"]),
         "split": r["split"], **({"clip_path": paths[r["video_id"]]} if clip_files else {})}
        for r in rows
    ]
    return DatasetClips(dataset, records, list(index.get("class_names", [])), asdict(shards))


def labelled(part: DatasetClips) -> DatasetClips:
    """The same dataset's clips without the unlabelled ones (counted in `unlabeled`)."""
    records = [r for r in part.records if r["label"] >= 0]
    return replace(part, records=records, labelled_only=True,
                   unlabeled=part.unlabeled + len(part.records) - len(records))


def labelled_budget(ctx: StageContext, parts: Sequence[DatasetClips], per_class: int | None
                    ) -> list[DatasetClips]:
    """The labelled clips finetuning (and the floors) may use: every one when `per_class` is
    None, else at most `per_class` of each class per dataset, taken in turn from each signer of
    the manifest (signers sorted, a signer's clips in a fixed hashed order), so the same clips
    for every seed and arm."""
    if per_class is None:
        return list(parts)
    chosen = []
    for part in parts:
        manifest = outputs.manifest(ctx.plan, part.name).select(["video_id", "signer"])
        signers = dict(zip(*manifest.to_pydict().values(), strict=True))
        kept: set[str] = set()
        for label in sorted({r["label"] for r in part.records if r["label"] >= 0}):
            by_signer: dict[str, list[str]] = {}
            for r in sorted((r for r in part.records if r["label"] == label),
                            key=lambda r: _hashed(r["video_id"])):
                by_signer.setdefault(str(signers.get(r["video_id"]) or ""), []).append(
                    r["video_id"])
            turns = [by_signer[s] for s in sorted(by_signer)]
            order = [ids[i] for i in range(max(map(len, turns))) for ids in turns if i < len(ids)]
            kept.update(order[:per_class])
        records = [r for r in part.records if r["video_id"] in kept]
        chosen.append(replace(part, records=records))
    return chosen


def _hashed(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def combined_classes(parts: Sequence[DatasetClips]) -> list[str]:
    """One class list over datasets: a single labelled dataset keeps its names; several are
    prefixed `<dataset>:` and concatenated in dataset order."""
    labelled_parts = [p for p in parts if p.class_names]
    if len(labelled_parts) <= 1:
        return list(labelled_parts[0].class_names) if labelled_parts else []
    return [f"{p.name}:{name}" for p in labelled_parts for name in p.class_names]


def shard_sets(cfg: PipelineConfig, parts: Sequence[DatasetClips]) -> tuple[list[Any], Any]:
    """The parts' shard sets, labels offset onto `combined_classes`, and a `ShardOpener` on the
    store's filesystem (any store root reads the same way)."""
    from signmae_core.data.shards import ShardOpener, ShardSet
    from signmae_core.store import ArtifactStore

    sets, offset = [], 0
    for part in parts:
        shard_set = ShardSet(**part.shards)
        shard_set.label_offset = offset
        sets.append(shard_set)
        offset += len(part.class_names)
    return sets, ShardOpener(ArtifactStore.from_config(cfg.store).fs)


def open_clips(
    cfg: PipelineConfig, parts: Sequence[DatasetClips], train: bool, with_fields: bool,
    decode: bool = True,
) -> ShardClips:
    """One reader over every dataset's shards, labels mapped onto `combined_classes`.

    A `ShardClips` (map-style; the engine and evaluation call `load(index, rng, view,
    num_views)`): index i is the i-th clip of `parts` in order, the order of the records.
    `decode=False`: undecoded items for the device decoder."""
    from signmae_core.data.shards import ShardClips

    sets, opener = shard_sets(cfg, parts)
    expected = [r["video_id"] for p in parts for r in p.records]
    reader = ShardClips(sets, Sampling.from_config(cfg), opener, with_fields=with_fields,
                        train=train, labelled_only=any(p.labelled_only for p in parts),
                        decode=decode, only=set(expected))
    if not expected:
        raise InputError("no clips to read in the chosen splits")
    if [r.video_id for r in reader.records] != expected:
        raise InputError("the shards' samples differ from their samples.parquet: "
                         "run `signmae run shard --force` to rebuild them")
    return reader


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
        "sampling": asdict(Sampling.from_config(cfg)),
        "views": views,
    }


# ---- the worker ---------------------------------------------------------------------------------
@dataclass
class TrainingInput:
    """What a training worker reads: the batch source (`start_at` resumes it), the hook that
    finishes batches on the device (None: the loader decodes) and the damaged-sample count."""

    source: Any
    prepare: Any
    skipped: Any  # () -> int


def training_input(cfg: PipelineConfig, train: TrainConfig, parts: Sequence[DatasetClips],
                   with_fields: bool, rank: int, world: int) -> TrainingInput:
    """The reader of `data.reader` over the parts' shards: `shards` (`ShardClips` in
    `RepeatedViews` batches) or `stream` (`ShardStream` in `StreamBatches`); decoding in the
    loader or on the training device (`data.decode_on`, `DeviceDecode`)."""
    from signmae_core.data.device import DeviceDecode, decode_on_device
    from signmae_core.data.shards import RepeatedViews, ShardStream, StreamBatches, shard_refs
    from signmae_core.train.engine import resolve_device

    on_device = decode_on_device(cfg.data.decode_on, resolve_device(train.device))
    prepare = DeviceDecode(cfg.model.img_size) if on_device else None
    views = cfg.data.repeated_views
    if cfg.data.reader == "shards":
        clips = open_clips(cfg, parts, train=True, with_fields=with_fields, decode=not on_device)
        source = RepeatedViews(clips, train.batch_size, views, seed=train.seed, rank=rank,
                               world_size=world, threads=train.loader_threads)
        return TrainingInput(source, prepare, lambda: clips.skipped.count)
    sets, opener = shard_sets(cfg, parts)
    stream = ShardStream(shard_refs(sets), Sampling.from_config(cfg), opener, seed=train.seed,
                         with_fields=with_fields, repeats=views, buffer=cfg.data.stream_buffer,
                         labelled_only=any(p.labelled_only for p in parts), decode=not on_device)
    epoch_clips = cfg.data.stream_epoch_clips or sum(len(p.records) for p in parts)
    batches = StreamBatches(stream, train.batch_size, cfg.data.stream_partitions, epoch_clips,
                            views, rank=rank, world_size=world, workers=cfg.data.stream_workers)
    return TrainingInput(batches, prepare, lambda: batches.skipped)


def train_worker(payload: dict[str, Any]) -> dict[str, Any]:
    """Train on this worker (rank from torch.distributed) and, on rank 0, publish the model.

    `payload`: `kind` ("pretrain" or "finetune"), `config` (PipelineConfig as JSON, paths
    absolute), `parts` (DatasetClips as dicts), `with_fields`, `run_dir`, `total_steps`,
    `class_names`, and for finetuning `init_encoder` (a safetensors path; None: random init).
    """
    import torch
    import torch.distributed as dist

    from signmae_core.train import Trainer
    from signmae_core.train.build import build_finetuning, build_pretraining

    cfg = PipelineConfig.model_validate(payload["config"])
    kind, names = payload["kind"], payload["class_names"]
    train: TrainConfig = getattr(cfg, kind)
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    parts = [DatasetClips(**p) for p in payload["parts"]]
    data = training_input(cfg, train, parts, payload["with_fields"], rank, world)
    torch.manual_seed(train.seed)
    figure_fn = None
    if kind == "pretrain":
        model, task, figure_fn = build_pretraining(cfg, payload["with_fields"])
    else:
        with tempfile.TemporaryDirectory(prefix="signmae-init-") as tmp:
            init = local_file(cfg, payload.get("init_encoder"), Path(tmp))
            model, task = build_finetuning(cfg, len(names), init)
    run_dir = Path(payload["run_dir"])
    meta = {"kind": kind, "class_names": names, "model": cfg.model.model_dump()}
    trainer = Trainer(model, task, train, payload["total_steps"], run_dir=run_dir, meta=meta,
                      figure_fn=figure_fn, prepare=data.prepare)
    result = trainer.fit(data.source)
    skipped = data.skipped()
    black_frames = data.prepare.failed if data.prepare is not None else 0
    if result.ran_out_of_data:
        raise RuntimeError(f"the clips ran out at step {result.state.step}")
    published: list[dict[str, Any]] = []
    if rank == 0:
        _publish(cfg, kind, names, model, run_dir, result.state, payload["store_dir"])
        published = publish_run(cfg, run_dir, payload["store_dir"])
    losses = [result.losses[s] for s in sorted(result.losses)]
    return {
        "published": published,
        "steps": result.state.step,
        "samples": result.state.samples,
        "clips_per_rank": _per_rank(result.local_samples, world),
        "resumed_from": result.resumed_from,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "world_size": world,
        "skipped_samples": _per_rank(skipped, world),
        "undecodable_frames": _per_rank(black_frames, world),
    }


def local_file(cfg: PipelineConfig, path: str | None, folder: Path) -> str | None:
    """`path` as a local file: itself, unless it is a file in an object-store root (e.g. the
    pretrain stage's encoder), which is fetched into `folder` (on the node that reads it)."""
    from signmae_core.store import ArtifactStore

    store = ArtifactStore.from_config(cfg.store)
    if path is None or store.is_local or not path.startswith(f"{store.base}/"):
        return path
    return str(store.fetch(path, folder / Path(path).name))


def publish_run(cfg: PipelineConfig, run_dir: Path, store_dir: str) -> list[dict[str, Any]]:
    """An object-store root: upload the run's outputs (`run_files`) from the local run folder
    to the stage folder `store_dir`, one file at a time; returns their `OutputEntry` dumps for
    the record. A local root (the run folder is the stage folder): nothing to do, []."""
    from signmae_core.store import ArtifactStore, describe_output, publish

    store = ArtifactStore.from_config(cfg.store)
    if store.is_local:
        return []
    entries = []
    for path in run_files(run_dir):
        rel = path.relative_to(run_dir).as_posix()
        publish(store, path, f"{store_dir}/{rel}")
        entries.append(describe_output(rel, path, checksum=path.suffix == ".safetensors"))
    return [e.model_dump() for e in entries]


def _per_rank(value: int, world: int) -> list[int]:
    """`value` of every worker, in rank order (all workers call this together)."""
    if world == 1:
        return [value]
    import torch.distributed as dist

    gathered: list[int] = [0] * world
    dist.all_gather_object(gathered, value)
    return gathered


def _publish(cfg: PipelineConfig, kind: str, names: list[str], model: Any, run_dir: Path,
             state: Any, store_dir: str) -> None:
    """Rank 0: the model folder (and for pretraining its encoder export, whose `source` names
    the model folder in the store, not a work folder)."""
    from signmae_core.train.export import ENCODER_INFO, export_encoder, save_model_folder

    info = {
        "kind": "pretrain" if kind == "pretrain" else "classifier",
        "model": cfg.model.model_dump(mode="json"),
        "num_classes": len(names),
        "class_names": names,
        "input": model_input_info(cfg, cfg.evaluate.views),
        "trained": {"steps": state.step, "samples": state.samples},
    }
    save_model_folder(run_dir / "model", model, info)
    if kind == "pretrain":
        export_encoder(run_dir / "model", run_dir / "encoder")
        if Path(store_dir) != run_dir:  # an object-store root: run_dir is a work folder
            path = run_dir / "encoder" / ENCODER_INFO
            description = json.loads(path.read_text(encoding="utf-8"))
            description["source"]["folder"] = f"{store_dir}/model"
            path.write_text(json.dumps(description, indent=2), encoding="utf-8")


# ---- the stage around the worker ----------------------------------------------------------------
def run_files(run_dir: Path) -> list[Path]:
    """The run's files that the stage publishes: model/, encoder/, recon/, metrics.jsonl and the
    newest checkpoint."""
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
    return chosen


def register_outputs(writer: Any, run_dir: Path) -> None:
    """Record the run's files (`run_files`) in place in a local stage folder."""
    for path in run_files(run_dir):
        writer.add_existing(str(path.relative_to(run_dir)), checksum=path.suffix == ".safetensors")


def run_folder(ctx: StageContext) -> Path:
    """The local folder the run writes as it goes (checkpoints, metrics, figures, the model):
    the stage folder for a local (or mounted) root; for an object-store root a work folder in
    this machine's cache (`ArtifactStore.work_dir`), published into the store when the run
    ends (`publish_run`). A killed run resumes from the work folder, so on the same machine
    only (docs/STORE.md)."""
    folder = ctx.store.work_dir(ctx.key.dataset, ctx.key.stage, ctx.version)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def local_training_outputs(ctx: StageContext,
                           stages: tuple[str, ...] = ("pretrain", "finetune")) -> StageContext:
    """`ctx` whose plan hands out the finished outputs of `stages` as local folders (readers of
    model folders, metrics and figures want paths): an object-store root's outputs are copied
    to this machine's cache (`ArtifactStore.local_copy`, checkpoints left out); a local root's
    context is returned as it is."""
    if ctx.store.is_local:
        return ctx
    plan = copy.copy(ctx.plan)  # shares the memoized records and states

    def output(stage: str, dataset: str | None = None) -> StageOutput:
        out = ctx.plan.output(stage, dataset)
        if stage not in stages:
            return out
        folder = ctx.store.local_copy(out.folder, out.record, skip=("checkpoints/",))
        return StageOutput(out.record, str(folder))

    plan.output = output  # type: ignore[method-assign]
    return replace(ctx, plan=plan)


def restart_reason(ctx: StageContext, run_dir: Path) -> str | None:
    """Why the run must start over instead of resuming its checkpoints (None: resume).

    A version is known before the data is read (config and upstream versions), so the data
    under one version can change: then the old checkpoints belong to other data."""
    marker = run_dir / INPUTS_MARKER
    if ctx.force:
        return "--force"
    if ctx.inputs_changed:
        return "its inputs changed since the last run"
    if ctx.plan.state(ctx.key).kind == DAMAGED:
        return "an output of the last run is damaged"
    if not any((run_dir / name).exists() for name in RUN_OUTPUTS):
        return None
    try:
        started_on = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "no readable record of the inputs of the run in place"
    if started_on != ctx.writer.inputs:
        return "the run in place was started on other inputs"
    return None


def prepare_run(ctx: StageContext, run_dir: Path) -> None:
    """Start over when `restart_reason` says so (delete the last run's files); then write the
    inputs marker that the next attempt compares against."""
    reason = restart_reason(ctx, run_dir)
    if reason is not None:
        removed = [name for name in RUN_OUTPUTS if (run_dir / name).exists()]
        for name in removed:
            target = run_dir / name
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        if not ctx.store.is_local:  # the last run's files published into the store
            removed += _remove_published(ctx)
        if removed:
            print(f"[{ctx.label}] starting over ({reason})", flush=True)
    marker = run_dir / INPUTS_MARKER
    marker.write_text(json.dumps(ctx.writer.inputs, sort_keys=True, indent=1), encoding="utf-8")


def _remove_published(ctx: StageContext) -> list[str]:
    """Delete the run files a finished run published into an object-store stage folder."""
    import pyarrow.fs as pafs

    fs, removed = ctx.store.fs, []
    for name in RUN_OUTPUTS:
        info = fs.get_file_info(ctx.writer.path(name))
        if info.type == pafs.FileType.Directory:
            fs.delete_dir(info.path)
        elif info.type == pafs.FileType.File:
            fs.delete_file(info.path)
        else:
            continue
        removed.append(name)
    return removed


def run_training_stage(
    ctx: StageContext,
    parts: list[DatasetClips],
    class_names: list[str],
    with_fields: bool = False,
    init_encoder: str | None = None,
    skipped: dict[str, int] | None = None,
) -> StageResult:
    """Train `ctx.key.stage` ("pretrain" or "finetune") in the stage folder, resuming a killed
    run of the same inputs; `skipped` adds counts of clips left out (e.g. unlabelled ones)."""
    from signmae_core.train.engine import resolve_device

    from .train_ray import run_training

    kind = ctx.key.stage
    run_dir = run_folder(ctx)
    train: TrainConfig = getattr(ctx.cfg, kind)
    num_clips = sum(len(p.records) for p in parts)
    steps = total_steps(num_clips, train)
    prepare_run(ctx, run_dir)
    payload = {
        "kind": kind, "config": ctx.cfg.model_dump(mode="json"),
        "parts": [asdict(p) for p in parts], "with_fields": with_fields,
        "run_dir": str(run_dir), "total_steps": steps, "class_names": class_names,
        "init_encoder": init_encoder, "store_dir": ctx.writer.dir,
    }
    summary = run_training(
        "pipelines.training:train_worker", payload, num_workers=train.num_workers,
        use_gpu=resolve_device(train.device).type == "cuda",  # decided where the stage starts
        storage_path=str(run_dir / "ray"), name=kind, cpus_per_worker=train.cpus_per_worker,
        ray_config=ctx.cfg.ray,
    )
    published = summary.pop("published")
    if ctx.store.is_local:
        register_outputs(ctx.writer, run_dir)
    for entry in published:
        ctx.writer.add(OutputEntry(**entry))
    counts = {"ok": num_clips, "steps": summary["steps"], **(skipped or {})}  # ok: clips trained on
    damage = {"damaged_samples": sum(summary["skipped_samples"]),  # read past (docs/SHARDS.md)
              "undecodable_frames": sum(summary["undecodable_frames"])}  # each trained on as black
    counts.update({k: v for k, v in damage.items() if v})
    extra = {**summary, "datasets": [p.name for p in parts], "num_classes": len(class_names),
             "total_steps": steps}
    return StageResult(counts=counts, extra=extra)


# ---- what finetuning starts from, and the model over evaluation views -------------------------
ENCODER_FILE = "encoder/encoder.safetensors"  # in the pretrain stage folder


def initial_encoder(ctx: StageContext) -> str | None:
    """The encoder weights to start from (a safetensors path), or None for random weights."""
    choice = ctx.cfg.finetune.init_encoder
    if choice == SCRATCH:
        return None
    if choice:
        return str(Path(choice).resolve())
    return ctx.upstream("pretrain").path(ENCODER_FILE)


def predict_views(
    model: Any, clips: Any, views: int, batch_size: int, device: Any, threads: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """The model's output for every view of every clip, `(M, V, K)` (logits, or features for
    the probe), and the labels `(M,)`.

    `model` maps clips `(B, 3, T, H, W)` to `(B, K)`; `clips` offers `len()` and
    `load(index, None, view, num_views)` (a `ClipDataset` or `ShardClips`)."""
    import torch

    from signmae_core.train.engine import autocast

    def load(index: int) -> list[dict[str, Any]]:
        return [clips.load(index, None, view=v, num_views=views) for v in range(views)]

    logits, labels = [], []
    batches = [
        list(range(i, min(i + batch_size, len(clips)))) for i in range(0, len(clips), batch_size)
    ]
    with ThreadPoolExecutor(max(1, threads)) as pool:
        for indices in batches:
            items = list(pool.map(load, indices))
            video = torch.stack([view["clips"] for item in items for view in item]).to(device)
            with torch.no_grad(), autocast(device, "bf16"):
                out = model(video).float().cpu().numpy()
            logits.append(out.reshape(len(indices), views, -1))
            labels += [item[0]["label"] for item in items]
    return np.concatenate(logits), np.asarray(labels, dtype=np.int64)
