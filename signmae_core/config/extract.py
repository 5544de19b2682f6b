"""The extraction stage: keypoints and part segmentation (see docs/EXTRACT.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Section, runtime_field


class ExtractConfig(Section):
    """Backend, resolution and part-map settings of keypoint and part extraction."""

    backend: Literal["mediapipe", "oracle"] = Field(
        "mediapipe",
        description="mediapipe for real data; oracle reads the synthetic dataset's ground truth.",
    )
    frames_from: Literal["auto", "clip", "source"] = Field(
        "auto",
        description="Frames the backend sees: the stored clip, the source video's window at "
        "`resolution` (same crop), or auto: the source when that is larger than the clip.",
    )
    resolution: int = Field(
        448, ge=64, description="Side of the square frames read from the source video."
    )
    seg_scale: float = Field(
        0.25, gt=0, le=1, description="Part map size relative to the stored clip size."
    )
    hand_model_complexity: Literal[0, 1] = Field(1, description="MediaPipe Hands model (1: full).")
    max_num_hands: int = Field(2, ge=1, le=2, description="Hands MediaPipe looks for per frame.")
    min_detection_confidence: float = Field(0.3, ge=0, le=1, description="MediaPipe Hands.")
    min_tracking_confidence: float = Field(0.3, ge=0, le=1, description="MediaPipe Hands.")
    pose: bool = Field(
        True,
        description="Run MediaPipe Pose (complexity 1): body keypoints, face region, handedness.",
    )
    handedness: Literal["pose", "classifier"] = Field(
        "pose",
        description="Tell left from right by the pose's wrists when clear (else the classifier), "
        "or by MediaPipe's handedness classifier alone.",
    )
    max_wrist_distance: float | None = Field(
        3.0,
        gt=0,
        description="With pose: drop a found hand whose wrist is farther than this many palm "
        "lengths from both pose wrists (a phantom hand on the face or clothes); None keeps all.",
    )
    second_look: bool = Field(
        True,
        description="With pose: where tracking missed a hand whose pose wrist is visible, look "
        "again with Hands on an upscaled crop around the pose's hand points.",
    )
    second_look_crop: float = Field(
        8.0, gt=1, description="Side of the second look's crop in wrist-to-knuckle lengths."
    )
    second_look_size: int = Field(
        256, ge=64, description="Pixels the second look's crop is resized to."
    )
    mirrored_input: bool = Field(
        False, description="Videos are mirrored (selfie camera); ordinary video is not."
    )
    person_threshold: float = Field(
        0.5, gt=0, lt=1, description="Selfie Segmentation probability that counts as person."
    )
    finger_width: float = Field(
        0.24, gt=0, le=1, description="Finger width of rasterized hands, in palm lengths."
    )
    clip_hands_to_person: bool = Field(
        True, description="Intersect hand and face masks with the person mask."
    )
    num_workers: int | None = runtime_field(
        None, ge=1, description="Extraction workers (None: cluster CPUs / num_cpus_per_worker)."
    )
    num_cpus_per_worker: int = runtime_field(1, ge=1, description="CPUs reserved per worker.")
    clip_timeout_s: float = runtime_field(
        600.0, gt=0, description="A clip taking longer fails (its worker is restarted)."
    )
    clips_per_part: int = runtime_field(
        64, ge=1, description="Clips per Parquet part file (the unit written atomically)."
    )
