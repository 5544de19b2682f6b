"""The synthetic signer dataset: the embedded default that needs no download."""

from __future__ import annotations

from pydantic import Field

from .base import Section


class SynthConfig(Section):
    """Size and seed of the generated dataset (`signmae synth`)."""

    classes: int = Field(8, ge=1, description="Number of sign classes.")
    signers: int = Field(4, ge=2, description="Number of signers (split by signer).")
    reps: int = Field(2, ge=1, description="Repetitions of each sign by each signer.")
    frames: int = Field(32, ge=2, description="Frames per clip.")
    size: int = Field(224, ge=32, description="Square frame size in pixels.")
    fps: int = Field(25, ge=1, description="Frame rate of the written videos.")
    test_signers: int = Field(1, ge=1, description="Signers held out for the test split.")
    seed: int = Field(0, description="Seed: the same seed gives byte-identical outputs.")
