"""Ingest: dataset adapters -> probed videos -> the manifest and the class map.

The pure steps live in `plan.py` and `probe.py`; `pipelines/ingest.py` runs them (probing in
parallel) and writes the store. See docs/INGEST.md.

    planned = plan_videos(dataset)                        # adapter rows, ids, paths, file facts
    probes = {v.video_id: probe_video(v.abs_path, limits) for v in planned if v.probe_needed}
    rows, extras, classes, added = build_rows(planned, probes, dataset, classes)
"""

from __future__ import annotations

from typing import Any

# Imported on first use, so that `signmae_core.ingest.source` (used by the clip reader) loads
# without pyarrow or the adapters.
_EXPORTS = {
    "STAGE": "plan",
    "PlannedVideo": "plan",
    "build_rows": "plan",
    "plan_videos": "plan",
    "sources_fingerprint": "plan",
    "Probe": "probe",
    "probe_video": "probe",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
