"""The README's main command: the synthetic default through the whole DAG as a Prefect flow run.

`run_demo` generates the synthetic dataset when it is missing, starts a temporary Prefect server
(unless this process already points at one: `PREFECT_API_URL`, a profile, a test harness), runs
the `signmae-pipeline` flow on the config's first dataset, and prints a summary: per stage what
ran and what was reused, per-instance and per-class Top-1/Top-5 beside chance, the report's path
and, when the server is kept (`keep_server`) or was already there, the flow run's UI address.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from pipelines.dag import Plan
from signmae_core.config import load_config
from signmae_core.errors import SignmaeError

T = TypeVar("T")
SERVER_HOME = Path("runs/prefect")  # the temporary server's database and log, like runs/ itself


class DemoFailed(SignmaeError):
    """The demo's flow run failed; the message is its state message."""


def run_demo(config: str, overrides: list[str] | None = None, force: bool = False,
             keep_server: bool = False, verbose: bool = False) -> list[dict[str, Any]]:
    """Synthesize, run the pipeline flow, print the summary; returns the stage-counts rows.

    Prefect's run logs go to the server (the UI); the console shows the stages' own lines and
    Prefect's warnings, and with `verbose` Prefect's run logs as well."""
    with prefect_console(logging.NOTSET if verbose else logging.WARNING):
        return _demo(config, overrides, force, keep_server, verbose)


def _demo(config: str, overrides: list[str] | None, force: bool, keep_server: bool,
          verbose: bool) -> list[dict[str, Any]]:
    from signmae_core.synth import ensure_config_datasets

    cfg = load_config(config, overrides)  # a bad config fails before any server starts
    plan = Plan.from_config(cfg)
    dataset = plan.cfg.dataset()
    for _, root, summary in ensure_config_datasets(plan.cfg):
        print(f"[synth] {root}: {summary['clips']} clips ({summary['status']})", flush=True)
    return with_prefect_server(
        lambda ui: _run_and_report(config, overrides, dataset.name, force, ui=ui,
                                   verbose=verbose),
        keep_server,
    )


def with_prefect_server(run: Callable[[bool], T], keep_server: bool = False) -> T:
    """`run(ui)` against the Prefect server this process points at, else against a temporary
    one (kept, after `run`, until Ctrl-C when `keep_server`); `ui` says whether a server outlives
    the run, so that printing its UI address is worth it."""
    from .server import configured_api_url, temporary_server

    if configured_api_url():
        return run(True)
    with temporary_server(SERVER_HOME) as api:
        print(f"[prefect] temporary server at {api.removesuffix('/api')} "
              f"(log: {SERVER_HOME / 'server.log'})", flush=True)
        result = run(keep_server)
        if keep_server:
            _wait_for_interrupt()
    return result


def _run_and_report(config: str, overrides: list[str] | None, dataset: str, force: bool,
                    ui: bool, verbose: bool = False) -> list[dict[str, Any]]:
    from pipelines.runner import run_log

    from .pipeline import signmae_pipeline

    plan = Plan.from_config(load_config(config, overrides))
    with run_log(plan, verbose):  # the workers' output goes to the run's log file
        state = signmae_pipeline(config=config, overrides=list(overrides or []),
                                 datasets=[dataset], force=force, return_state=True)
    print(f"[prefect] flow run {flow_run_name(state)}: {state.name}", flush=True)
    if not state.is_completed():
        raise DemoFailed(f"flow run failed: {state.message}")
    rows: list[dict[str, Any]] = state.result()
    print_summary(plan, rows)
    if ui:
        print(f"Prefect UI of this run: {flow_run_url(state)}", flush=True)
    return rows


@contextlib.contextmanager
def prefect_console(level: int) -> Iterator[None]:
    """Prefect's console handlers at `level` inside the block (the API handler is untouched)."""
    import prefect.main  # noqa: F401 - Prefect configures its logging on this import
    from prefect.logging.handlers import PrefectConsoleHandler

    handlers = [h for h in logging.getLogger().handlers if isinstance(h, PrefectConsoleHandler)]
    before = [h.level for h in handlers]
    for handler in handlers:
        handler.setLevel(level)
    try:
        yield
    finally:
        for handler, old in zip(handlers, before, strict=True):
            handler.setLevel(old)


def print_summary(plan: Plan, rows: list[dict[str, Any]]) -> None:
    """The stage table, the metrics beside chance and the report's path."""
    print(f"\n{'stage':<12} {'dataset':<12} {'state':<10} {'version':<13} {'ok':>5} "
          f"{'failed':>6} {'seconds':>8}")
    for row in rows:
        print(f"{row['stage']:<12} {row['dataset']:<12} {row['state']:<10} {row['version']:<13} "
              f"{_blank(row['ok']):>5} {_blank(row['failed']):>6} {_blank(row['seconds']):>8}")
    missing = [s.name for s in plan.stages.values() if not s.available]
    if missing:
        print(f"demo finished; stages not implemented yet: {', '.join(missing)}")
    else:
        print("demo finished: every stage ran")
    key = plan.key("evaluate")
    if plan.state(key).done:
        output = plan.output("evaluate")
        metrics = json.loads(plan.store.read_bytes(output.path("metrics.json")))
        print(metrics_table(metrics))
        print(f"report: {output.path('report.md')}")
    sys.stdout.flush()


def metrics_table(metrics: dict[str, Any]) -> str:
    """Per-instance and per-class Top-1/Top-5 beside chance (guessing among the K classes:
    k/K), as a small text table."""
    classes = int(metrics["num_classes"])
    chance = {k: min(k, classes) / classes for k in (1, 5)}
    lines = [f"\ntest clips {metrics['num_clips']}, classes {classes}",
             f"{'':<14} {'Top-1':>7} {'chance':>7} {'Top-5':>7} {'chance':>7}"]
    for group, title in (("per_instance", "per-instance"), ("per_class", "per-class")):
        values = metrics[group]
        lines.append(f"{title:<14} {_pct(values['top1']):>7} {_pct(chance[1]):>7} "
                     f"{_pct(values['top5']):>7} {_pct(chance[5]):>7}")
    return "\n".join(lines)


def flow_run_name(state: Any) -> str:
    """The name Prefect gave the flow run a state belongs to."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(state.state_details.flow_run_id).name


def flow_run_url(state: Any) -> str:
    """The UI address of the flow run a state belongs to."""
    from prefect.settings import PREFECT_UI_URL

    base = PREFECT_UI_URL.value() or ""
    return f"{base}/runs/flow-run/{state.state_details.flow_run_id}"


def _wait_for_interrupt() -> None:
    """Block until Ctrl-C (the server is stopped by the caller's `with`)."""
    import time

    print("the server is kept: press Ctrl-C to stop it", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("stopping the Prefect server", flush=True)


def _pct(value: float) -> str:
    return f"{100 * value:.1f} %"


def _blank(value: object) -> str:
    return "-" if value is None else str(value)


__all__ = ["DemoFailed", "metrics_table", "print_summary", "run_demo", "with_prefect_server"]
