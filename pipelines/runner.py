"""Run stages in DAG order through the plan and the one envelope (`signmae run`).

The one-command demo is a Prefect flow run: `flows/demo.py`.

The config is checked and the plan made before anything starts: a bad config or a missing
upstream output costs no Ray start-up. Ray starts only when a stage has work for it.

The console is for people: a progress bar per running stage (`pipelines.progress`), one summary
line per finished stage. The noise of the Ray workers (TensorFlow Lite, absl and MediaPipe
warnings, repeated by every worker) and Ray's start-up warnings go to the run's log file,
`<store root>/_logs/<UTC time>.log` (`runs/_logs/` for a remote store), named at the end of the
run; `verbose` shows them on the console too.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from signmae_core.config import PipelineConfig

from .dag import Plan, StageKey
from .execute import Outcome, execute
from .progress import BARS
from .ray_runtime import log_line, ray_session, worker_output_to

LOG_FOLDER = "_logs"


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


def log_path(plan: Plan) -> Path:
    """A new log file for this run: `<store root>/_logs/<UTC time>-<pid>.log` (local stores),
    else `runs/_logs/...` under the working folder."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    folder = (Path(plan.store.base) if plan.store.is_local else Path("runs")) / LOG_FOLDER
    return folder / f"{stamp}-{os.getpid()}.log"


@contextlib.contextmanager
def run_log(plan: Plan, verbose: bool = False) -> Iterator[Path]:
    """The block's worker output and Ray warnings go to a new log file (also on the console with
    `verbose`); its path is printed at the end. Progress bars are closed on the way out."""
    path = log_path(plan)
    try:
        with worker_output_to(path, verbose):
            log_line(f"signmae run, config {plan.cfg.name}, store {plan.store.root_uri}")
            yield path
    finally:
        BARS.close()
        print(f"log: {path}", file=sys.stderr, flush=True)


def run_stages(
    cfg: PipelineConfig,
    names: list[str] | None = None,
    datasets: list[str] | None = None,
    force: bool = False,
    plan: Plan | None = None,
    provenance: dict[str, Any] | None = None,
    verbose: bool = False,
) -> list[Outcome]:
    """Run the named stages (all available ones by default) in DAG order over the datasets;
    `provenance` (who runs them, e.g. `{"command": "signmae run ..."}`) goes into the records
    these runs write; `verbose` shows the workers' output on the console (see `run_log`)."""
    plan = plan or Plan.from_config(cfg)
    for name in names or []:
        plan.stage(name)  # an unknown name fails before anything runs
    keys = plan.keys(names, datasets)
    missing = sorted({k.stage for k in keys if not plan.stage(k.stage).available})
    if missing:
        print(f"not implemented yet, skipped: {', '.join(missing)}")
    todo: list[StageKey] = [k for k in keys if plan.stage(k.stage).available]
    outcomes = []
    with run_log(plan, verbose), ray_session(plan.cfg.ray):
        for key in todo:
            outcome = execute(plan, key, force=force, provenance=provenance)
            line = describe(outcome)
            print(line, flush=True)
            log_line(line)
            outcomes.append(outcome)
    return outcomes


__all__ = ["describe", "log_path", "run_log", "run_stages"]
