"""Run stages in DAG order through the plan and the one envelope (`signmae run`).

The one-command demo is a Prefect flow run: `flows/demo.py`.

The config is checked and the plan made before anything starts: a bad config or a missing
upstream output costs no Ray start-up. Ray starts only when a stage has work for it.
"""

from __future__ import annotations

from signmae_core.config import PipelineConfig

from .dag import Plan, StageKey
from .execute import Outcome, execute
from .ray_runtime import ray_session


def describe(outcome: Outcome) -> str:
    """One summary line for a finished (or reused) stage."""
    key, record = outcome.key, outcome.record
    counts = ", ".join(f"{k} {v}" for k, v in record.counts.items()) or "no items"
    where = key.stage if key.dataset == "_train" else f"{key.stage}] {key.dataset}:"
    where = f"[{where}" if key.dataset != "_train" else f"[{key.stage}]"
    if not outcome.ran:
        ok = record.counts.get("ok")
        return f"{where} up to date (version {record.version}, ok {ok})"
    return f"{where} {counts} (version {record.version}) in {outcome.seconds:.1f} s"


def run_stages(
    cfg: PipelineConfig,
    names: list[str] | None = None,
    datasets: list[str] | None = None,
    force: bool = False,
    plan: Plan | None = None,
) -> list[Outcome]:
    """Run the named stages (all available ones by default) in DAG order over the datasets."""
    plan = plan or Plan.from_config(cfg)
    for name in names or []:
        plan.stage(name)  # an unknown name fails before anything runs
    keys = plan.keys(names, datasets)
    missing = sorted({k.stage for k in keys if not plan.stage(k.stage).available})
    if missing:
        print(f"not implemented yet, skipped: {', '.join(missing)}")
    todo: list[StageKey] = [k for k in keys if plan.stage(k.stage).available]
    outcomes = []
    with ray_session(plan.cfg.ray):
        for key in todo:
            outcome = execute(plan, key, force=force)
            print(describe(outcome), flush=True)
            outcomes.append(outcome)
    return outcomes


__all__ = ["describe", "run_stages"]
