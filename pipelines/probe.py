"""`signmae run probe`: a k-nearest-neighbour probe of the frozen encoder finetuning starts from.

Output::

    <root>/_train/probe/<version>/metrics.json   per-instance and per-class Top-k, within-group
                                                 accuracy, per-class accuracy, the setup
    <root>/_train/probe/<version>/predictions.csv per query clip: video_id, dataset, label,
                                                 predicted label, correct
    <root>/_train/probe/<version>/_stage.json    the stage record

What pretraining alone taught the encoder, with no finetuning: every labelled clip of
`probe.gallery_splits` and `probe.query_splits` goes through the encoder (`probe.views` temporal
evaluation views, as evaluation cuts them), its tokens pooled as the classifier pools them
(`model.pool`) and layer-normalised, the views' unit vectors averaged; each query clip is
classified by a weighted vote of its `probe.k` most similar gallery clips (the labelled budget
of `finetune.clips_per_class` applies to the gallery)
(`signmae_core.baselines.knn.weighted_knn_scores`). The encoder is the one `finetune` would start
from: the pretrain stage's output, `finetune.init_encoder`'s file, or, for `scratch`, the random
weights `finetune.seed` gives (the probe's floor).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from signmae_core.errors import InputError

from .baselines_cmd import combined_groups
from .execute import StageContext, StageResult
from .training import (
    DatasetClips,
    combined_classes,
    dataset_clips,
    initial_encoder,
    labelled,
    labelled_budget,
    local_training_outputs,
    open_clips,
    predict_views,
)


def clip_features(ctx: StageContext, parts: list[DatasetClips], encoder: str | None,
                  num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Pooled encoder features of every clip of `parts`, `(M, D)` unit vectors (views averaged),
    and their labels `(M,)`."""
    import torch

    from signmae_core.train.build import build_finetuning
    from signmae_core.train.engine import resolve_device

    settings = ctx.cfg.probe
    device = resolve_device(settings.device)
    torch.manual_seed(ctx.cfg.finetune.seed)  # scratch: the weights finetuning starts from
    model, _ = build_finetuning(ctx.cfg, num_classes, encoder)
    model = model.to(device).eval()

    def pooled(video: torch.Tensor) -> torch.Tensor:
        """Clips `(B, 3, T, H, W)` -> pooled, normalised features `(B, D)`."""
        return model.forward_head(model.forward_features(video), pre_logits=True)

    clips = open_clips(ctx.cfg, parts, train=False, with_fields=False)
    views, labels = predict_views(pooled, clips, settings.views, settings.batch_size, device,
                                  settings.loader_threads)  # (M, V, D)
    views = views / np.maximum(np.linalg.norm(views, axis=-1, keepdims=True), 1e-12)
    return views.mean(axis=1), labels


def _write_predictions(path: Path, parts: list[DatasetClips], names: list[str],
                       labels: np.ndarray, predicted: np.ndarray) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["video_id", "dataset", "label", "predicted", "correct"])
        records = [(p.name, r["video_id"]) for p in parts for r in p.records]
        for (dataset, video_id), label, guess in zip(records, labels, predicted, strict=True):
            writer.writerow([video_id, dataset, names[label], names[guess], int(label == guess)])


def compute(ctx: StageContext) -> StageResult:
    """Classify the query clips by their nearest gallery clips in the encoder's feature space."""
    from signmae_core.baselines.knn import weighted_knn_scores
    from signmae_core.eval.metrics import classification_metrics, group_indices

    ctx = local_training_outputs(ctx)  # object-store root: the encoder file copied locally
    settings = ctx.cfg.probe
    gallery = labelled_budget(ctx, [labelled(dataset_clips(ctx, d.name, settings.gallery_splits))
                                    for d in ctx.datasets], ctx.cfg.finetune.clips_per_class)
    queries = [labelled(dataset_clips(ctx, d.name, settings.query_splits)) for d in ctx.datasets]
    names = combined_classes(gallery)
    if not any(p.records for p in gallery) or not any(p.records for p in queries):
        raise InputError(f"the probe needs labelled clips in {settings.gallery_splits} (gallery) "
                         f"and in {settings.query_splits} (queries)")
    if combined_classes(queries) != names:
        raise InputError("the gallery and query clips have different class maps")
    encoder = initial_encoder(ctx)
    gallery_x, gallery_y = clip_features(ctx, gallery, encoder, len(names))
    query_x, query_y = clip_features(ctx, queries, encoder, len(names))
    scores = weighted_knn_scores(query_x, gallery_x, gallery_y, len(names), settings.k,
                                 settings.temperature)
    groups = group_indices(combined_groups(ctx.plan, queries), names)
    metrics: dict[str, Any] = classification_metrics(scores, query_y, names, settings.topk,
                                                     groups=groups)
    metrics["setup"] = {
        "encoder": "random (scratch)" if encoder is None else ctx.cfg.finetune.init_encoder
        or f"pretrain {ctx.plan.version(ctx.plan.key('pretrain'))}",
        "gallery clips": int(len(gallery_y)), "query clips": int(len(query_y)),
        "k": settings.k, "temperature": settings.temperature, "views": settings.views,
        "feature dim": int(gallery_x.shape[1]),
    }
    with ctx.writer.output("metrics.json") as target:
        target.write_text(json.dumps(metrics, indent=1) + "\n", encoding="utf-8")
    with ctx.writer.output("predictions.csv") as target:
        _write_predictions(target, queries, names, query_y, scores.argmax(axis=1))
    top1 = metrics["per_instance"].get("top1")
    if top1 is not None:
        print(f"[probe] k-NN per-instance Top-1 {top1:.1%} (chance {1 / len(names):.1%}, "
              f"{len(query_y)} clips, {len(gallery_y)} neighbours to choose from)", flush=True)
    return StageResult(counts={"ok": int(len(query_y))}, extra={
        "per_instance": metrics["per_instance"], "per_class": metrics["per_class"],
        "class_groups": {k: g["accuracy"] for k, g in metrics["class_groups"].items()},
    })
