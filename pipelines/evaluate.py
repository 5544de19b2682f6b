"""`signmae run evaluate`: the finetuned classifier on the test clips, metrics and a report.

Output (see docs/TRAINING.md)::

    <root>/_train/evaluate/<version>/metrics.json      every figure (per-instance and per-class
                                                       Top-k, per-class accuracy, confusion
                                                       matrix, most confused pairs, setup)
    <root>/_train/evaluate/<version>/report.md         the report, plots linked from plots/
    <root>/_train/evaluate/<version>/report.html       the same report, self-contained
    <root>/_train/evaluate/<version>/plots/*.png
    <root>/_train/evaluate/<version>/predictions.csv   per clip: video_id, dataset, true label,
                                                       top-5 labels and scores
    <root>/_train/evaluate/<version>/_stage.json       the stage record

Each test clip is cut into `evaluate.views` temporal views (the reader's evaluation views: the
whole frame, starts spread over the clip); their softmax is averaged.
"""

from __future__ import annotations

import csv
import json
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from signmae_core.config import DatasetConfig, PipelineConfig, config_hash
from signmae_core.errors import InputError
from signmae_core.store import StageRecord

from . import finetune, pretrain
from .training import (
    STAGE_DATASET,
    ClipSet,
    combined_classes,
    dataset_clips,
    local_store,
    open_clip_set,
    stage_version,
)

CODE_VERSION = 1
STAGE_NAME = "evaluate"
TOP_PREDICTIONS = 5


def predict_views(
    model: Any, clips: ClipSet, views: int, batch_size: int, device: Any, threads: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """Logits of every view of every clip, `(M, V, K)`, and the labels `(M,)`."""
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


def _curves(cfg: PipelineConfig, datasets: list[DatasetConfig]) -> dict[str, list[dict]]:
    from signmae_core.train.metrics import read_metrics

    curves = {}
    for name, stage in (("pretrain", pretrain), ("finetune", finetune)):
        try:
            _, folder = stage.current(cfg, datasets)
        except InputError:
            continue
        curves[name] = read_metrics(Path(folder) / "metrics.jsonl")
    return curves


def _reconstructions(cfg: PipelineConfig, datasets: list[DatasetConfig]) -> list[tuple[str, bytes]]:
    """The last reconstruction figure of the pretraining run, when there is one."""
    try:
        _, folder = pretrain.current(cfg, datasets)
    except InputError:
        return []
    figures = sorted((Path(folder) / "recon").glob("step_*.png"))
    if not figures:
        return []
    return [(f"pretraining reconstructions, {figures[-1].stem}", figures[-1].read_bytes())]


def _write_predictions(
    path: Path, video_ids: list[str], datasets: list[str], scores: np.ndarray,
    labels: np.ndarray, names: list[str],
) -> None:
    top = np.argsort(-scores, axis=1, kind="stable")[:, :TOP_PREDICTIONS]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["video_id", "dataset", "label", "correct", "top_labels", "top_scores"])
        for i, video_id in enumerate(video_ids):
            writer.writerow([
                video_id, datasets[i], names[labels[i]], int(top[i, 0] == labels[i]),
                "|".join(names[j] for j in top[i]),
                "|".join(f"{scores[i, j]:.5f}" for j in top[i]),
            ])


def run(cfg: PipelineConfig, datasets: list[DatasetConfig], force: bool = False) -> StageRecord:
    """Evaluate the current finetuned classifier on the test splits; write metrics and report."""
    from signmae_core.eval.metrics import average_views, classification_metrics
    from signmae_core.eval.report import write_report
    from signmae_core.train.engine import resolve_device
    from signmae_core.train.export import load_model_folder

    store = local_store(cfg)
    finetune_record, finetune_folder = finetune.current(cfg, datasets, store)
    parts = [
        finetune.labelled(dataset_clips(cfg, d, cfg.evaluate.splits, store)) for d in datasets
    ]
    inputs = {k: v for part in parts for k, v in part.inputs.items()}
    inputs["finetune"] = finetune_record.fingerprint()
    settings = cfg.evaluate.model_dump(mode="json", exclude={"device", "loader_threads"})
    hashed = config_hash({"evaluate": settings, "datasets": [d.name for d in datasets]})
    version = stage_version(hashed, inputs)
    if not force:
        record = store.is_up_to_date(STAGE_DATASET, STAGE_NAME, version, hashed, CODE_VERSION,
                                     inputs)
        if record is not None:
            return record
    if not any(p.records for p in parts):
        raise InputError(f"no labelled clips in splits {cfg.evaluate.splits} to evaluate")

    device = resolve_device(cfg.evaluate.device)
    model, info = load_model_folder(Path(finetune_folder) / "model", device=str(device))
    names = info["class_names"]
    if combined_classes(parts) != names:
        raise InputError("the test clips' class map differs from the one the model was trained on")
    clips = open_clip_set(cfg, parts, train=False, with_fields=False)
    view_logits, labels = predict_views(
        model, clips, cfg.evaluate.views, cfg.evaluate.batch_size, device,
        cfg.evaluate.loader_threads,
    )
    scores = average_views(view_logits)
    metrics = classification_metrics(
        scores, labels, names, cfg.evaluate.topk, cfg.evaluate.confused_pairs
    )
    setup = {
        "model": f"{info['model']['variant']}, {info['model']['num_frames']} frames, "
        f"{info['model']['img_size']} px",
        "finetune version": finetune_record.version,
        "trained steps": info.get("trained", {}).get("steps"),
        "datasets": ", ".join(p.name for p in parts),
        "splits": ", ".join(cfg.evaluate.splits),
        "views per clip": cfg.evaluate.views,
    }
    metrics["setup"] = setup
    video_ids = [r["video_id"] for p in parts for r in p.records]
    dataset_names = [p.name for p in parts for _ in p.records]

    with store.open_stage(
        STAGE_DATASET, STAGE_NAME, version, config_hash=hashed, code_version=CODE_VERSION,
        inputs=inputs,
    ) as writer, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_report(
            folder, metrics, names, curves=_curves(cfg, datasets),
            reconstructions=_reconstructions(cfg, datasets), setup=setup,
        )
        _write_predictions(folder / "predictions.csv", video_ids, dataset_names, scores,
                           labels, names)
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            rel = str(path.relative_to(folder))
            with writer.output(rel) as target:
                shutil.copyfile(path, target)
        writer.counts["ok"] = int(len(labels))
        summary = {
            "per_instance": metrics["per_instance"],
            "per_class": metrics["per_class"],
            "report": "report.html",
        }
        print(f"[evaluate] {json.dumps(summary)}")
        return writer.commit(**summary)
