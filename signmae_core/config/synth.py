"""The synthetic signer dataset: the embedded default that needs no download."""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationInfo, field_validator

from .base import Section, runtime_field


class SynthConfig(Section):
    """Size and seed of the generated dataset (`signmae synth`)."""

    classes: int = Field(8, ge=1, le=500, description="Number of sign classes.")
    signers: int = Field(4, ge=2, le=100, description="Number of signers (split by signer).")
    reps: int = Field(2, ge=1, le=100, description="Repetitions of each sign by each signer.")
    frames: int = Field(32, ge=2, le=1000, description="Frames per clip.")
    size: int = Field(224, ge=32, le=1024, description="Square frame size in pixels (even).")
    fps: int = Field(25, ge=1, le=240, description="Frame rate of the written videos.")
    test_signers: int = Field(1, ge=1, description="Signers held out for the test split.")
    unlabeled: bool = Field(
        False,
        description="Every clip in the `pretrain` split: an unlabelled pool for pretraining "
        "(ingest keeps the label text but gives no label id; no test split).",
    )
    seed: int = Field(0, ge=0, description="Seed: the same seed gives byte-identical outputs.")
    crf: int = Field(
        18, ge=0, le=51, description="H.264 quality (x264 CRF): lower is better and larger."
    )
    workers: int = runtime_field(
        0,
        ge=0,
        le=64,
        description="Processes rendering clips (0: one per CPU, at most 8); output is the same.",
    )

    def output_dump(self) -> dict[str, Any]:
        """As `Section.output_dump`, without `unlabeled` while it is off, so datasets made before
        it existed keep their hash (and are not generated again)."""
        dump = super().output_dump()
        if not self.unlabeled:
            dump.pop("unlabeled", None)
        return dump

    @field_validator("size")
    @classmethod
    def _even_size(cls, value: int) -> int:
        if value % 2:
            raise ValueError("must be even (H.264 4:2:0 video)")
        return value

    @field_validator("test_signers")
    @classmethod
    def _some_training_signers(cls, value: int, info: ValidationInfo) -> int:
        signers = info.data.get("signers")
        if signers is not None and value >= signers:
            raise ValueError(
                f"must be smaller than signers ({signers}) so that some signers remain for training"
            )
        return value
