"""The one training engine's settings, for pretraining and finetuning, and evaluation."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from .base import Section, runtime_field


class TrainConfig(Section):
    """Optimizer, schedule and loop settings shared by pretraining and finetuning.

    `batch_size` is the global batch of one forward pass summed over all workers; one optimizer
    step sees `batch_size * grad_accum` clips whatever the number of workers.
    """

    epochs: int = Field(1, ge=1, description="Passes over the training clips.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps.")
    batch_size: int = Field(8, ge=1, description="Global clips per forward pass (all workers).")
    grad_accum: int = Field(1, ge=1, description="Forward passes per optimizer step.")
    lr: float = Field(1.5e-4, gt=0, description="Peak learning rate (not scaled by batch size).")
    min_lr: float = Field(0.0, ge=0, description="Learning rate at the end of the cosine.")
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up steps before the cosine.")
    weight_decay: float = Field(0.05, ge=0, description="AdamW decoupled weight decay.")
    betas: tuple[float, float] = Field((0.9, 0.95), description="AdamW betas.")
    grad_clip: float | None = Field(1.0, gt=0, description="Max global grad norm (None: off).")
    layer_decay: float = Field(
        1.0, gt=0, le=1, description="Layer-wise lr decay (finetuning; 1: same lr everywhere)."
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Finetuning loss smoothing.")
    precision: Literal["bf16", "fp32"] = Field(
        "bf16", description="Autocast dtype on CUDA; the CPU always trains in fp32."
    )
    compile: bool = runtime_field(False, description="torch.compile the model.")
    device: str = runtime_field(
        "auto", description="auto (CUDA when available), cpu, cuda or cuda:N."
    )
    num_workers: int = runtime_field(
        1, ge=1, description="Ray Train workers (1: one process, no Ray)."
    )
    cpus_per_worker: float = runtime_field(
        1.0, gt=0, description="Ray CPUs reserved per train worker."
    )
    loader_threads: int = runtime_field(2, ge=0, description="Threads that load clips (0: inline).")
    splits: list[str] = Field(
        default_factory=lambda: ["train"], description="Manifest splits the stage trains on."
    )
    log_every: int = runtime_field(10, ge=1, description="Steps between metric lines.")
    checkpoint_every: int = runtime_field(
        0, ge=0, description="Steps between checkpoints (0: at end)."
    )
    keep_checkpoints: int = runtime_field(2, ge=1, description="Newest checkpoints kept on disk.")
    recon_every: int = runtime_field(
        0, ge=0, description="Steps between reconstruction figures (0: at the end only)."
    )
    recon_samples: int = runtime_field(
        2, ge=1, description="Clips shown per reconstruction figure."
    )
    resume: bool = runtime_field(
        True, description="Continue from the newest checkpoint of the run."
    )
    init_encoder: str | None = Field(
        None,
        description="Finetuning: encoder weights (a safetensors path) to start from instead of "
        "the pretrain stage's output, or `scratch` for random weights.",
    )
    seed: int = Field(0, description="Seeds the model init, data order and mask sampler.")
    clips_per_class: int | None = Field(
        None,
        ge=1,
        description="Finetuning: keep at most this many labelled clips of each class (the same "
        "clips for every seed, spread over signers where the manifest names them): a labelled "
        "budget like a real dataset's. None: every labelled clip.",
    )
    head_only_steps: int = Field(
        0,
        ge=0,
        description="Finetuning: train the head alone on the frozen encoder for this many "
        "optimizer steps first, then everything (linear probing, then finetuning).",
    )

    def output_dump(self) -> dict[str, Any]:
        """As `Section.output_dump`, with an encoder path reduced to `file`: where the file lies
        is not what it holds (its checksum is the finetune stage's input); `clips_per_class`
        and `head_only_steps` only once set."""
        dumped = super().output_dump()
        if dumped["init_encoder"] not in (None, "scratch"):
            dumped["init_encoder"] = "file"
        if self.clips_per_class is None:  # configs from before it keep their versions
            dumped.pop("clips_per_class")
        if self.head_only_steps == 0:
            dumped.pop("head_only_steps")
        return dumped

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.batch_size % self.num_workers:
            raise ValueError(
                f"batch_size {self.batch_size} must be a multiple of num_workers {self.num_workers}"
            )
        return self


class EvalConfig(Section):
    """Evaluation of a finetuned classifier."""

    views: int = Field(2, ge=1, description="Temporal views per test clip, softmax-averaged.")
    topk: list[int] = Field(default_factory=lambda: [1, 5], description="Top-k accuracies.")
    batch_size: int = Field(8, ge=1, description="Clips per forward pass.")
    splits: list[str] = Field(
        default_factory=lambda: ["test"], description="Manifest splits evaluated."
    )
    confused_pairs: int = Field(10, ge=0, description="Most-confused class pairs listed.")
    device: str = runtime_field(
        "auto", description="auto (CUDA when available), cpu, cuda or cuda:N."
    )
    loader_threads: int = runtime_field(2, ge=0, description="Threads that load clips (0: inline).")


class ProbeConfig(Section):
    """The k-nearest-neighbour probe: what the encoder finetuning starts from knows, frozen."""

    k: int = Field(10, ge=1, description="Neighbours that vote (capped at the gallery size).")
    temperature: float = Field(
        0.07, gt=0, description="Votes weigh exp(cosine similarity / temperature)."
    )
    views: int = Field(2, ge=1, description="Temporal views per clip; their features averaged.")
    topk: list[int] = Field(default_factory=lambda: [1, 5], description="Top-k accuracies.")
    gallery_splits: list[str] = Field(
        default_factory=lambda: ["train"], description="Labelled splits the neighbours come from."
    )
    query_splits: list[str] = Field(
        default_factory=lambda: ["test"], description="Splits classified by their neighbours."
    )
    batch_size: int = runtime_field(8, ge=1, description="Clips per forward pass.")
    device: str = runtime_field(
        "auto", description="auto (CUDA when available), cpu, cuda or cuda:N."
    )
    loader_threads: int = runtime_field(2, ge=0, description="Threads that load clips (0: inline).")
