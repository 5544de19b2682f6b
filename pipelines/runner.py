"""Run stages in DAG order over the configured datasets, and the one-command demo."""

from __future__ import annotations

import time
from pathlib import Path

from signmae_core.config import DatasetConfig, PipelineConfig
from signmae_core.store import StageRecord

from .ray_runtime import ray_session
from .stages import STAGES, get_stage


def _summary(record: StageRecord | None) -> str:
    if record is None:
        return "done"
    counts = ", ".join(f"{k} {v}" for k, v in record.counts.items()) or "no items"
    return f"{counts} (version {record.version or '-'})"


def run_stages(
    cfg: PipelineConfig,
    names: list[str],
    datasets: list[str] | None = None,
    force: bool = False,
) -> dict[str, list[StageRecord]]:
    """Run the named stages in DAG order; data stages once per dataset, training stages once."""
    cfg = cfg.with_absolute_paths()
    order = [s for s in STAGES if s.name in set(names)]
    chosen: list[DatasetConfig] = [cfg.dataset(n) for n in datasets] if datasets else cfg.datasets
    missing = [s.name for s in order if not s.available]
    if missing:
        print(f"not implemented yet, skipped: {', '.join(missing)}")
    results: dict[str, list[StageRecord]] = {}
    with ray_session(cfg.ray):
        for stage in order:
            if not stage.available:
                continue
            run = stage.load()
            targets: list[DatasetConfig | list[DatasetConfig]] = (
                list(chosen) if stage.per_dataset else [chosen]
            )
            for target in targets:
                label = target.name if isinstance(target, DatasetConfig) else "+".join(
                    d.name for d in target
                )
                started = time.perf_counter()
                record = run(cfg, target, force=force)
                results.setdefault(stage.name, []).append(record)
                print(
                    f"[{stage.name}] {label}: {_summary(record)} "
                    f"in {time.perf_counter() - started:.1f} s"
                )
    return results


def run_demo(cfg: PipelineConfig, force: bool = False) -> dict[str, list[StageRecord]]:
    """Generate the synthetic dataset if needed, then run every available stage on it."""
    from signmae_core.synth import ensure_generated

    cfg = cfg.with_absolute_paths()
    dataset = cfg.dataset()
    summary = ensure_generated(Path(dataset.root), cfg.synth)
    print(f"[synth] {dataset.root}: {summary['clips']} clips ({summary['status']})")
    available = [s.name for s in STAGES if s.available]
    results = run_stages(cfg, available, datasets=[dataset.name], force=force)
    missing = [s.name for s in STAGES if not s.available]
    if missing:
        print(f"demo finished; stages not implemented yet: {', '.join(missing)}")
    else:
        print("demo finished: every stage ran")
    return results


__all__ = ["run_stages", "run_demo", "get_stage"]
