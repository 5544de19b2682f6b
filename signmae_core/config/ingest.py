"""Dataset descriptions and the ingest stage (manifest + class map); see docs/INGEST.md."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from .base import Section, runtime_field
from .synth import SynthConfig


class DatasetConfig(Section):
    """One dataset: where its videos and labels are and which adapter reads them."""

    name: str = Field("synthetic", pattern=r"^[A-Za-z0-9_.-]+$", description="Name in the store.")
    adapter: Literal["csv", "folder", "wlasl", "slovo", "lists"] = Field(
        "csv",
        description="Which adapter reads the layout: csv (a label table), folder (one folder per "
        "class), wlasl (WLASL_v0.3.json + videos/), slovo (annotations.csv), lists (split lists).",
    )
    root: str = runtime_field(
        "data/synthetic",
        description="Dataset root; label paths resolve inside it. Where the data lives, not what "
        "it is: moving a dataset keeps its versions (its files' fingerprints decide freshness).",
    )
    labels: str | None = Field(
        None,
        description="Label file relative to root; None: the adapter's usual name (csv: "
        "labels.csv, wlasl: WLASL_v0.3.json, slovo: annotations.csv).",
    )
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="csv adapter: manifest column -> column in the file, for path, video_id, "
        "label, signer, split, frame_start, frame_end, bbox (e.g. {label: gloss}).",
    )
    frame_base: Literal[0, 1] = Field(
        0,
        description="csv adapter: 0 if the file's windows are 0-based with an exclusive end, "
        "1 if they are 1-based and inclusive (as WLASL's). An empty end or -1 means to the end.",
    )
    split_lists: dict[str, str] = Field(
        default_factory=dict,
        description="lists adapter: split name -> list file (relative to root); each line is "
        "'path' or 'path label' (NMFs-CSL style).",
    )
    default_split: str = Field(
        "train", min_length=1, description="Split of videos whose label file gives none."
    )
    unlabeled_splits: list[str] = Field(
        default_factory=lambda: ["unlabeled", "pretrain"],
        description="Splits whose videos are for pretraining only: their label text is kept but "
        "they get no label_id and stay out of the class map.",
    )
    synth: SynthConfig | None = runtime_field(
        None,
        description="A synthetic dataset: generated at `root` with these settings when missing "
        "(`signmae demo`, `signmae study`). Its files' fingerprints decide versions, as for any "
        "dataset, so this setting is out of the hash.",
    )
    classes: int | None = Field(
        None,
        ge=1,
        description="wlasl adapter: keep the first N glosses of the label file, in file order "
        "(WLASL100/300/1000/2000 are the first 100/300/1000/2000 of WLASL_v0.3.json); None: all.",
    )

    def output_dump(self) -> dict[str, Any]:
        """As `Section.output_dump`, without `classes` while it is unset, so configs that do
        not use it keep the ingest versions they had before it existed."""
        dump = super().output_dump()
        if self.classes is None:
            dump.pop("classes", None)
        return dump


class IngestConfig(Section):
    """Probe limits that reject bad or hostile videos before anything is decoded."""

    max_pixels: int = Field(4096 * 2160, ge=1, description="Largest width*height accepted.")
    max_duration_s: float = Field(1800.0, gt=0, description="Longest video accepted (seconds).")
    max_file_bytes: int = Field(4 * 1024**3, ge=1, description="Largest file accepted (bytes).")
    min_side: int = Field(16, ge=1, description="Smallest width or height accepted (pixels).")
    max_in_flight: int | None = runtime_field(
        None, ge=1, description="Probe tasks in flight at once (None: twice the cluster's CPUs)."
    )
