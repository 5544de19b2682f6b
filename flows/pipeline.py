"""The Prefect flows: the whole DAG (`signmae_pipeline`) and one flow per stage.

A flow asks the plan (`pipelines.dag.Plan`) which (stage, dataset) keys to run and in which
order, and runs one Prefect task per key, its upstream tasks the plan's edges (`wait_for`, so the
UI draws the DAG). Every task calls the one envelope, `pipelines.execute.execute`: the stage
records decide what is reused, never Prefect's cache (tasks cache nothing and persist no
result). A key the envelope found up to date ends `Completed` named "Skipped", its version in
the message; a key that ran ends `Completed` with its counts. A failed key fails the flow run
with its reason in the state message; the keys that finished stay reusable.

Tasks run one after another in the flow's thread: the parallelism is Ray's, inside each stage
(see docs/FLOWS.md). Transient failures (a lost Ray worker or node, a dropped connection, an
I/O error) are retried with backoff; a data problem is never an exception (a corrupt video is a
failed row of its stage), and a real error (`InputError`, `StageFailed`, a bad config) is not
retried.
"""

from __future__ import annotations

from typing import Any

from prefect import Flow, Task, flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.states import Completed, Failed, State

from pipelines import execute as envelope
from pipelines.dag import Plan, StageKey
from pipelines.progress import listening
from pipelines.ray_runtime import ray_session
from pipelines.runner import describe
from pipelines.stages import STAGE_NAMES
from signmae_core.config import ConfigError, PipelineConfig, load_config
from signmae_core.errors import SignmaeError
from signmae_core.store import StoreError

from .artifacts import ProgressArtifacts, publish_report, publish_stage_counts

SKIPPED = "Skipped"  # the state name of a key the envelope found up to date
RETRIES = 2
RETRY_DELAYS_S = [10.0, 60.0]  # backoff before the first and second retry
REAL_OS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError,
                  FileExistsError)
TRANSIENT_RAY_ERRORS = {  # ray.exceptions names: the work was lost, not wrong
    "WorkerCrashedError", "NodeDiedError", "LocalRayletDiedError", "ActorDiedError",
    "ActorUnavailableError", "ObjectLostError", "OwnerDiedError", "ObjectFetchTimedOutError",
    "RaySystemError", "RpcError", "OutOfMemoryError",
}


# ---- transient failures -------------------------------------------------------------------------
def is_transient(exc: BaseException) -> bool:
    """True for a failure that may pass on its own: a lost Ray worker, node or object, or an
    I/O error other than a missing or forbidden path. Errors a person must fix (`SignmaeError`
    such as `InputError` and `StageFailed`, `ConfigError`, `StoreError`) never are."""
    if isinstance(exc, (SignmaeError, ConfigError, StoreError, *REAL_OS_ERRORS)):
        return False
    if isinstance(exc, OSError):  # ConnectionError, TimeoutError, EIO, ...
        return True
    return any(
        cls.__module__.startswith("ray") and cls.__name__ in TRANSIENT_RAY_ERRORS
        for cls in type(exc).__mro__
    )


def _retry_if_transient(task: Task[Any, Any], task_run: TaskRun, state: State) -> bool:
    """Prefect's retry condition: retry only what `is_transient` accepts."""
    try:
        state.result()
    except BaseException as exc:  # noqa: BLE001 - the task's own exception, classified
        return is_transient(exc)
    return False


# ---- the task: one (stage, dataset) through the envelope ----------------------------------------
@task(
    name="stage",
    task_run_name="{dataset}/{stage}",
    cache_policy=NO_CACHE,
    persist_result=False,
    retries=RETRIES,
    retry_delay_seconds=RETRY_DELAYS_S,
    retry_jitter_factor=0.2,
    retry_condition_fn=_retry_if_transient,
)
def run_stage(plan: Plan, stage: str, dataset: str, force: bool = False) -> State:
    """Run one key through `pipelines.execute.execute`; its state says whether it ran.

    Returns `Completed` (named "Skipped" when it was up to date) carrying the key's row of the
    stage-counts table: dataset, stage, version, state, ok, failed, seconds."""
    key = StageKey(stage, dataset)
    with listening(ProgressArtifacts(key)), envelope.made_by(flow_provenance()):
        outcome = envelope.execute(plan, key, force=force)
    line = describe(outcome)
    print(line, flush=True)
    record = outcome.record
    row = {
        "dataset": dataset, "stage": stage, "version": record.version,
        "state": "Completed" if outcome.ran else SKIPPED,
        "ok": record.counts.get("ok"), "failed": record.counts.get("failed"),
        "seconds": round(outcome.seconds, 1),
    }
    if outcome.ran:
        return Completed(message=line, data=row)
    return Completed(name=SKIPPED, message=f"up to date: version {record.version} "
                     f"(ok {row['ok']}, failed {row['failed']}); {line}", data=row)


def flow_provenance() -> dict[str, str]:
    """Which flow run makes a record (`signmae status` shows it): its id and name."""
    from prefect.runtime import flow_run

    return {"flow_run_id": str(flow_run.id or ""), "flow_run_name": str(flow_run.name or ""),
            "flow": str(flow_run.flow_name or "")}


STAGE_TASKS: dict[str, Task[..., State]] = {  # one task name per stage, for the UI
    name: run_stage.with_options(name=name) for name in STAGE_NAMES
}


# ---- running keys -------------------------------------------------------------------------------
def resolve_config(config: str, overrides: list[str] | None, settings: PipelineConfig | None
                   ) -> PipelineConfig:
    """The flow's config: `settings` when given (else the named config or YAML path `config`),
    then the `--set`-style `overrides` (`masks.dilation=1`) on top."""
    if settings is None:
        return load_config(config, overrides)
    return load_config(None, overrides, **settings.model_dump(mode="json"))


def run_keys(plan: Plan, keys: list[StageKey], forced: set[StageKey], flow_name: str
             ) -> State | list[dict[str, Any]]:
    """One task per key, in DAG order, each waiting for its upstream tasks; then the artifacts.

    Returns the stage-counts rows, or a `Failed` state naming every failed key and its reason
    (keys after a failed one end `NotReady` and do not run)."""
    logger = get_run_logger()
    missing = sorted({k.stage for k in keys if not plan.stage(k.stage).available})
    if missing:
        print(f"not implemented yet, skipped: {', '.join(missing)}", flush=True)
    keys = [k for k in keys if plan.stage(k.stage).available]
    logger.info("%d stage run(s): %s", len(keys),
                ", ".join(f"{key} {plan.version(key)}" for key in keys))
    states: dict[StageKey, State] = {}
    with ray_session(plan.cfg.ray):
        for key in keys:
            upstream = [states[up] for up in plan.upstream(key) if up in states]
            states[key] = STAGE_TASKS[key.stage](
                plan, key.stage, key.dataset, key in forced, wait_for=upstream, return_state=True
            )
    rows = [_row(plan, key, state) for key, state in states.items()]
    publish_stage_counts(rows, flow_name)
    if any(key.stage == "evaluate" and state.is_completed() for key, state in states.items()):
        publish_report(plan)
    failed = [f"{key}: {_reason(state)}" for key, state in states.items() if state.is_failed()]
    if failed:
        blocked = sum(state.is_pending() for state in states.values())
        after = f"; {blocked} stage run(s) after it not started" if blocked else ""
        return Failed(message=f"{len(failed)} stage run(s) failed: {'; '.join(failed)}{after}")
    return rows


def _row(plan: Plan, key: StageKey, state: State) -> dict[str, Any]:
    """A key's row of the stage-counts table (a failed or blocked key has no counts)."""
    if state.is_completed():
        return state.result()
    return {"dataset": key.dataset, "stage": key.stage, "version": plan.version(key),
            "state": state.name, "ok": None, "failed": None, "seconds": None}


def _reason(state: State) -> str:
    """A failed task's exception as `Type: message` (else the state's message)."""
    exc = state.result(raise_on_failure=False)
    if isinstance(exc, BaseException):
        return f"{type(exc).__name__}: {exc}"
    return state.message or state.name or "failed"


# ---- which keys a flow runs ---------------------------------------------------------------------
def stage_keys(plan: Plan, stage: str, datasets: list[str] | None, downstream: bool
               ) -> list[StageKey]:
    """The keys of `stage` (over `datasets`), what reads them when `downstream`, and every key
    those read (skipped when up to date), in DAG order."""
    chosen = set(plan.keys([stage], datasets))
    if downstream:
        for key in plan.keys():  # DAG order: a key's upstream keys come before it
            if any(up in chosen for up in plan.upstream(key)):
                chosen.add(key)
    return plan.with_upstream(chosen)


# ---- the flows ---------------------------------------------------------------------------------
@flow(name="signmae-pipeline", validate_parameters=True, persist_result=False)
def signmae_pipeline(
    config: str = "cpu_demo",
    overrides: list[str] | None = None,
    settings: PipelineConfig | None = None,
    stages: list[str] | None = None,
    datasets: list[str] | None = None,
    force: bool = False,
) -> Any:
    """Run the whole DAG (or the named `stages`) over the datasets, reusing what is up to date.

    `config` names a config under configs/ or a YAML path; `settings` (the whole pipeline
    config, one schema) replaces it when given; `overrides` are `--set`-style `key=value`
    strings applied last. `force` recomputes the selected stages even when up to date."""
    plan = Plan.from_config(resolve_config(config, overrides, settings))
    for name in stages or []:
        plan.stage(name)  # an unknown name fails before anything runs
    keys = plan.keys(stages, datasets)
    return run_keys(plan, keys, set(keys) if force else set(), "signmae-pipeline")


def stage_flow(stage: str) -> Flow[..., Any]:
    """The flow `signmae-<stage>`: that stage over the datasets, what it reads (skipped when up
    to date) and, with `downstream` (the default), every stage that reads it."""

    def run(
        config: str = "cpu_demo",
        overrides: list[str] | None = None,
        settings: PipelineConfig | None = None,
        datasets: list[str] | None = None,
        force: bool = False,
        downstream: bool = True,
    ) -> Any:
        plan = Plan.from_config(resolve_config(config, overrides, settings))
        plan.stage(stage).load()  # a stage not implemented yet fails here, naming itself
        keys = stage_keys(plan, stage, datasets, downstream)
        forced = set(plan.keys([stage], datasets)) if force else set()
        return run_keys(plan, keys, forced, f"signmae-{stage}")

    run.__name__ = run.__qualname__ = f"signmae_{stage}"
    run.__doc__ = (
        f"Bring the {stage} stage up to date (and, with `downstream`, every stage that reads "
        "it); parameters as in `signmae_pipeline`, `force` recomputes this stage only."
    )
    return flow(name=f"signmae-{stage}", validate_parameters=True, persist_result=False)(run)


STAGE_FLOWS: dict[str, Flow[..., Any]] = {name: stage_flow(name) for name in STAGE_NAMES}
# the module attributes `signmae_<stage>` (deployment entrypoints: flows/pipeline.py:signmae_masks)
globals().update({f"signmae_{name}": made for name, made in STAGE_FLOWS.items()})
