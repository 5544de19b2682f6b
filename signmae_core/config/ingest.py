"""Dataset descriptions and the ingest stage (manifest + class map)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Section


class DatasetConfig(Section):
    """One dataset: where its videos and labels are and which adapter reads them."""

    name: str = Field("synthetic", pattern=r"^[A-Za-z0-9_.-]+$", description="Name in the store.")
    adapter: Literal["csv", "folder", "wlasl", "slovo"] = Field(
        "csv", description="Which adapter reads the dataset layout."
    )
    root: str = Field("data/synthetic", description="Dataset root; label paths resolve inside it.")
    labels: str | None = Field(
        "labels.csv", description="Label file relative to root (csv/wlasl/slovo adapters)."
    )
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Column mapping for the csv adapter: manifest name -> name in the file.",
    )
    frame_base: Literal[0, 1] = Field(
        0, description="csv adapter: 1 if the file's frame windows are 1-based and inclusive."
    )
    split_lists: dict[str, str] = Field(
        default_factory=dict, description="split name -> list file of paths (NMFs-CSL style)."
    )


class IngestConfig(Section):
    """Probe limits that reject decompression bombs before anything is decoded."""

    max_pixels: int = Field(4096 * 2160, ge=1, description="Largest width*height accepted.")
    max_duration_s: float = Field(1800.0, gt=0, description="Longest video accepted (seconds).")
    max_file_bytes: int = Field(4 * 1024**3, ge=1, description="Largest file accepted (bytes).")
