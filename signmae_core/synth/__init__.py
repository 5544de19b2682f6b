"""The synthetic signer dataset: the project's embedded default, with ground truth.

`generate(out, cfg)` writes H.264 videos, `labels.csv` (split by signer) and per-frame ground
truth (hand landmarks in MediaPipe order, part label maps); `ensure_generated` skips a complete
dataset of the same config (`ensure_config_datasets`: every synthetic dataset of a pipeline
config); `read_ground_truth` reads one clip's ground truth back.
Format and conventions: docs/SYNTH.md.
"""

from .generate import (
    CODE_VERSION,
    COMPLETION_FILE,
    HANDS,
    Clip,
    ensure_config_datasets,
    ensure_generated,
    generate,
    read_manifest,
    render_clip,
    synth_hash,
    synthetic_datasets,
)
from .ground_truth import GroundTruth, read_ground_truth

__all__ = [
    "CODE_VERSION",
    "COMPLETION_FILE",
    "HANDS",
    "Clip",
    "GroundTruth",
    "ensure_config_datasets",
    "ensure_generated",
    "generate",
    "read_ground_truth",
    "read_manifest",
    "render_clip",
    "synth_hash",
    "synthetic_datasets",
]
