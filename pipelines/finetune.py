"""`signmae run finetune`: the classifier (pretrained encoder + linear head) on labelled clips.

Output (see docs/TRAINING.md)::

    <root>/_train/finetune/<version>/checkpoints/step_*/   resumable checkpoints (newest kept)
    <root>/_train/finetune/<version>/metrics.jsonl         loss, training accuracy, lr, ...
    <root>/_train/finetune/<version>/model/                the classifier (model folder, with
                                                           class names and input settings)
    <root>/_train/finetune/<version>/inputs.json           the input fingerprints of the run
    <root>/_train/finetune/<version>/_stage.json           the stage record

The encoder starts from `finetune.init_encoder`: unset, the pretrain stage's encoder for this
config (an upstream of the plan); a safetensors path, that file (its checksum is an input);
`scratch`, random weights. Unlabelled clips are left out.
"""

from __future__ import annotations

from signmae_core.errors import InputError

from .execute import StageContext, StageResult
from .training import (
    combined_classes,
    dataset_clips,
    initial_encoder,
    labelled,
    labelled_budget,
    run_training_stage,
)


def compute(ctx: StageContext) -> StageResult:
    """Finetune on the labelled `finetune.splits` clips of every dataset."""
    splits, budget = ctx.cfg.finetune.splits, ctx.cfg.finetune.clips_per_class
    if budget is not None and ctx.cfg.data.reader != "shards":
        raise InputError("finetune.clips_per_class needs data.reader: shards")
    parts = labelled_budget(ctx, [labelled(dataset_clips(ctx, d.name, splits))
                                  for d in ctx.datasets], budget)
    class_names = combined_classes(parts)
    if not class_names or not any(p.records for p in parts):
        raise InputError(f"no labelled clips in splits {splits} to finetune on")
    unlabeled = sum(p.unlabeled for p in parts)
    return run_training_stage(
        ctx, parts, class_names, init_encoder=initial_encoder(ctx),
        skipped={"unlabeled": unlabeled} if unlabeled else None,
    )
