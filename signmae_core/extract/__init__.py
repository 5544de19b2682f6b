"""Keypoints and part segmentation of stored clips (the extraction stage's library).

- `schema`: the Parquet output (one row per clip), `read_extraction`, `iter_clips`, `load_clip`;
- `encoding`: the part map byte encoding (`zlib-u8`);
- `rasterize`: part maps from hand landmarks, pose and a person mask;
- `mediapipe_backend`: MediaPipe Hands + Pose + Selfie Segmentation (imported lazily);
- `oracle_backend`: the synthetic dataset's ground truth on the clip grid;
- `worker`: one worker's `ClipExtractor` (a backend loaded once, one clip at a time).

Format and conventions: docs/EXTRACT.md.
"""

from .encoding import ENCODING, decode_part_map, encode_part_map
from .schema import (
    SCHEMA,
    ClipExtraction,
    ExtractionError,
    iter_clips,
    load_clip,
    part_files,
    read_extraction,
)

__all__ = [
    "ENCODING",
    "SCHEMA",
    "ClipExtraction",
    "ExtractionError",
    "decode_part_map",
    "encode_part_map",
    "iter_clips",
    "load_clip",
    "part_files",
    "read_extraction",
]
