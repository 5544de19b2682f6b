"""Floors and a non-MAE baseline: raw-pixel and hand-keypoint 1-NN, a keypoint temporal conv.

Pure library code on arrays (no Ray, no store): `features` turns clips and landmarks into
vectors, `knn` and `temporal` score them, `suite.run_baselines` runs all three on one split
with the evaluation's metrics. `signmae baselines` and the evaluate stage read the clips and
the extraction through the plan (`pipelines/baselines_cmd.py`); see docs/BASELINES.md.
"""

from .suite import METHODS, ClipFeatures, run_baselines

__all__ = ["METHODS", "ClipFeatures", "run_baselines"]
