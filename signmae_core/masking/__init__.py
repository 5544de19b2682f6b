"""Mask maps and masking samplers (see docs/MASKS.md).

- `fields`: per-frame part presence and hand motion fields of a clip on a cell grid (numpy);
- `storage`: their Parquet format and a random-access reader (pyarrow; import it directly);
- `pooling`: fields -> token grid -> one score per token (torch, on the fly);
- `samplers`: `tube`, `random`, `segmentation` behind one interface;
- `masker`: pooling + scores + sampler in one call for the training engine;
- `leakage`: the hand-leakage metric;
- `figure`: the PNG of `signmae inspect <id> --masks` (matplotlib, imported on use).

The package itself needs only numpy and torch (it runs on machines without the pipeline's stack).
"""

from .fields import FIELD_NAMES, FLIP_PERMUTATION, FieldParams, compute_fields
from .leakage import Leakage, hand_leakage
from .masker import MaskDraw, TokenMasker
from .noise import SampleKeys
from .pooling import ScoreWeights, TokenMaps, combine, pool_fields, token_maps
from .samplers import SAMPLERS, MaskSampler, build_sampler, masked_per_slot, num_masked

__all__ = [
    "FIELD_NAMES",
    "FLIP_PERMUTATION",
    "SAMPLERS",
    "SampleKeys",
    "FieldParams",
    "Leakage",
    "MaskDraw",
    "MaskSampler",
    "ScoreWeights",
    "TokenMaps",
    "TokenMasker",
    "build_sampler",
    "combine",
    "compute_fields",
    "hand_leakage",
    "masked_per_slot",
    "num_masked",
    "pool_fields",
    "token_maps",
]
