"""`signmae run evaluate`: the finetuned classifier on the test clips, metrics and a report.

Output (see docs/TRAINING.md)::

    <root>/_train/evaluate/<version>/metrics.json      every figure (per-instance and per-class
                                                       Top-k, per-class accuracy, confusion
                                                       matrix, most confused pairs, within-group
                                                       accuracy, the baselines, the hands'
                                                       size in tokens, setup)
    <root>/_train/evaluate/<version>/report.md         the report, plots linked from plots/
    <root>/_train/evaluate/<version>/report.html       the same report, self-contained
    <root>/_train/evaluate/<version>/plots/*.png
    <root>/_train/evaluate/<version>/predictions.csv   per clip: video_id, dataset, true label,
                                                       top-5 labels and scores
    <root>/_train/evaluate/<version>/_stage.json       the stage record

Each test clip is cut into `evaluate.views` temporal views (the reader's evaluation views: the
whole frame, starts spread over the clip); their softmax is averaged. The classifier is the
finetune stage's output of this config (an upstream of the plan); the report adds the training
curves, and the pretraining curves and reconstructions when finetuning started from them.

Where a dataset declares class groups (`class_groups.json`, docs/INGEST.md), the metrics add
the accuracy within each kind of group. The floors and the keypoint baseline
(`pipelines.baselines_cmd`: raw-pixel and hand-keypoint 1-NN, a keypoint temporal conv; seconds
on the CPU) run on the same clips, so the report shows them beside the model. The hands' size
at the model's input, in tokens (`signmae_core.eval.hand_size`, from the test clips' extracted
part maps), says whether the run's geometry can resolve handshapes at all.
"""

from __future__ import annotations

import csv
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from signmae_core.errors import InputError

from . import outputs
from .baselines_cmd import combined_groups, compute_baselines
from .dag import StageOutput
from .execute import StageContext, StageResult
from .training import (
    DatasetClips,
    combined_classes,
    dataset_clips,
    labelled,
    labelled_budget,
    local_training_outputs,
    open_clips,
    predict_views,
)

TOP_PREDICTIONS = 5
METRICS_FILE = "metrics.jsonl"  # in a training stage folder


def _pretrained(ctx: StageContext) -> StageOutput | None:
    """The pretraining output finetuning started from, when it did and it is done."""
    plan = ctx.plan
    if "pretrain" not in plan.stage("finetune").edges(ctx.cfg):
        return None
    if not plan.state(plan.key("pretrain")).done:
        return None
    return plan.output("pretrain")


def _curves(ctx: StageContext, finetuned: StageOutput) -> dict[str, list[dict]]:
    """Loss curves of pretraining (when finetuning started from it) and finetuning."""
    from signmae_core.train.metrics import read_metrics

    curves = {}
    pretrained = _pretrained(ctx)
    if pretrained is not None:
        curves["pretrain"] = read_metrics(pretrained.path(METRICS_FILE))
    curves["finetune"] = read_metrics(finetuned.path(METRICS_FILE))
    return curves


def _reconstructions(ctx: StageContext) -> list[tuple[str, bytes]]:
    """The last reconstruction figure of the pretraining run, when there is one."""
    pretrained = _pretrained(ctx)
    if pretrained is None:
        return []
    figures = sorted(Path(pretrained.path("recon")).glob("step_*.png"))
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


def _score(ctx: StageContext, parts: list[DatasetClips], finetuned: StageOutput
           ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Averaged view scores `(M, K)`, labels `(M,)` and the model folder's info."""
    from signmae_core.eval.metrics import average_views
    from signmae_core.train.engine import resolve_device
    from signmae_core.train.export import load_model_folder

    settings = ctx.cfg.evaluate
    device = resolve_device(settings.device)
    model, info = load_model_folder(finetuned.path("model"), device=str(device))
    if combined_classes(parts) != info["class_names"]:
        raise InputError("the test clips' class map differs from the one the model was trained on")
    clips = open_clips(ctx.cfg, parts, train=False, with_fields=False)
    view_logits, labels = predict_views(
        model, clips, settings.views, settings.batch_size, device, settings.loader_threads
    )
    return average_views(view_logits), labels, info


def _hand_size(ctx: StageContext, parts: list[DatasetClips], model: dict[str, Any]
               ) -> dict[str, Any]:
    """The test clips' hands at the model's input, in tokens, from their extracted part maps
    (`signmae_core.eval.hand_size`)."""
    from signmae_core.eval.hand_size import hand_size
    from signmae_core.extract import iter_clips

    maps = (clip.part_maps
            for p in parts
            for clip in iter_clips(outputs.extraction(ctx.plan, p.name).folder,
                                   [r["video_id"] for r in p.records]))
    return hand_size(maps, model["img_size"], model["patch_size"])


def _setup(ctx: StageContext, parts: list[DatasetClips], finetuned: StageOutput,
           info: dict[str, Any], hands: dict[str, Any]) -> dict[str, Any]:
    """What the report's setup table shows."""
    model = info["model"]
    seen = (f"{hands['median_w']:.1f} x {hands['median_h']:.1f} tokens (median of "
            f"{hands['hands']} hand boxes; {hands['share_2x2']:.0%} at least 2 x 2)"
            if hands["hands"] else "no hands in the part maps")
    return {
        "model": f"{model['variant']}, {model['num_frames']} frames, {model['img_size']} px, "
                 f"{model['patch_size']} px patches",
        "hands at the model input": seen,
        "finetune version": finetuned.record.version,
        "trained steps": info.get("trained", {}).get("steps"),
        "datasets": ", ".join(p.name for p in parts),
        "splits": ", ".join(ctx.cfg.evaluate.splits),
        "views per clip": ctx.cfg.evaluate.views,
    }


def _write_outputs(ctx: StageContext, parts: list[DatasetClips], finetuned: StageOutput,
                   metrics: dict[str, Any], names: list[str], scores: np.ndarray,
                   labels: np.ndarray) -> None:
    """The report, metrics and predictions, written into a temporary folder, then published
    file by file through the writer."""
    from signmae_core.eval.report import write_report

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_report(folder, metrics, names, curves=_curves(ctx, finetuned),
                     reconstructions=_reconstructions(ctx), setup=metrics["setup"])
        video_ids = [r["video_id"] for p in parts for r in p.records]
        datasets = [p.name for p in parts for _ in p.records]
        _write_predictions(folder / "predictions.csv", video_ids, datasets, scores, labels, names)
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            with ctx.writer.output(str(path.relative_to(folder))) as target:
                shutil.copyfile(path, target)


def compute(ctx: StageContext) -> StageResult:
    """Evaluate the finetuned classifier on the labelled `evaluate.splits` clips."""
    from signmae_core.eval.metrics import classification_metrics, group_indices

    ctx = local_training_outputs(ctx)  # object-store root: model folders etc. copied locally
    settings = ctx.cfg.evaluate
    finetuned = ctx.upstream("finetune")
    parts = [labelled(dataset_clips(ctx, d.name, settings.splits, clip_files=True))
             for d in ctx.datasets]
    if not any(p.records for p in parts):
        raise InputError(f"no labelled clips in splits {settings.splits} to evaluate")
    scores, labels, info = _score(ctx, parts, finetuned)
    names = info["class_names"]
    groups = group_indices(combined_groups(ctx.plan, parts), names)
    metrics = classification_metrics(scores, labels, names, settings.topk,
                                     settings.confused_pairs, groups)
    train = labelled_budget(ctx, [labelled(dataset_clips(ctx, d.name, ctx.cfg.finetune.splits,
                                                         clip_files=True))
                                  for d in ctx.datasets], ctx.cfg.finetune.clips_per_class)
    metrics["baselines"] = compute_baselines(ctx.plan, train, parts, settings.topk)
    metrics["hand_size"] = _hand_size(ctx, parts, info["model"])
    metrics["setup"] = _setup(ctx, parts, finetuned, info, metrics["hand_size"])
    _write_outputs(ctx, parts, finetuned, metrics, names, scores, labels)
    summary = {
        "per_instance": metrics["per_instance"],
        "per_class": metrics["per_class"],
        "class_groups": {k: g["accuracy"] for k, g in metrics["class_groups"].items()},
        "baselines_top1": {name: m["per_instance"].get("top1")
                           for name, m in metrics["baselines"]["methods"].items()},
        "hand_size": metrics["hand_size"],
        "report": "report.html",
    }
    top1 = metrics["per_instance"].get("top1")
    if top1 is not None:  # one line for people; every figure is in metrics.json and the report
        print(f"[evaluate] per-instance Top-1 {top1:.1%} (chance {1 / len(names):.1%}, "
              f"{len(labels)} clips, {len(names)} classes)", flush=True)
    return StageResult(counts={"ok": int(len(labels))}, extra=summary)
