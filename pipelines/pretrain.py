"""`signmae run pretrain`: masked video pretraining of the encoder on every configured dataset.

Output (see docs/TRAINING.md)::

    <root>/_train/pretrain/<version>/checkpoints/step_*/   resumable checkpoints (newest kept)
    <root>/_train/pretrain/<version>/metrics.jsonl         loss, lr, grad norm, clips/s per step
    <root>/_train/pretrain/<version>/recon/step_*.png      original / masked / reconstruction
                                                           under each sampler
    <root>/_train/pretrain/<version>/model/                the pretraining model (model folder)
    <root>/_train/pretrain/<version>/encoder/              its encoder (encoder.safetensors/.json)
    <root>/_train/pretrain/<version>/inputs.json           the input fingerprints of the run
    <root>/_train/pretrain/<version>/_stage.json           the stage record

The version (`pipelines.dag`) hashes the pretrain, model, data and masking settings with the
versions of every dataset's clip shards (and field shards, when the sampler or the loss reads
mask fields); the clips are read from the shards (`pipelines.training.training_input`:
`data.reader`, `data.decode_on`). A killed run resumes from its newest checkpoint when started
again on the same data; changed data under the same version starts it over
(`pipelines.training`).
"""

from __future__ import annotations

from .execute import StageContext, StageResult
from .training import combined_classes, dataset_clips, run_training_stage


def compute(ctx: StageContext) -> StageResult:
    """Pretrain on the `pretrain.splits` clips of every dataset (labels unused)."""
    with_fields = "shard_fields" in ctx.plan.stage(ctx.key.stage).edges(ctx.cfg)
    parts = [
        dataset_clips(ctx, d.name, ctx.cfg.pretrain.splits, with_fields) for d in ctx.datasets
    ]
    return run_training_stage(ctx, parts, combined_classes(parts), with_fields=with_fields)
