"""The Prefect flows over the DAG (flows/), against one temporary Prefect server per session.

What the flows owe, read back through the Prefect client (task run states, artifacts) and from
the stage records on disk, never from the flows' own return values alone:
- the pipeline flow runs every stage once; a rerun shows every task `Completed` named
  "Skipped" with the version of the stage record in its message, and rewrites no record;
- the masks flow with new mask settings reruns masks and what reads it, while ingest, decode
  and extraction are "Skipped" (their records untouched, no new version folders);
- a stage failing for a real reason fails the flow run with the reason in its state message,
  is not retried, and leaves the finished stages reusable; a transient failure is retried;
- the artifacts exist under their keys (stage counts, evaluation report, stage progress).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipelines.progress import END, START, UPDATE, Progress, listening

DATA_STAGES = ["ingest", "decode", "extract", "masks"]  # by hand: a stage dropped fails here
TRAIN_STAGES = ["pretrain", "finetune", "evaluate", "probe"]
BEFORE_MASKS = ["ingest", "decode", "extract"]  # what a mask recompute must not redo
DATASET = "synthetic"


# ---- the tiny pipeline, once (the Prefect server is the session's: conftest.py) ----------------
@dataclass
class Tiny:
    """ci_tiny with oracle extraction, its store and data under one temporary folder."""

    root: Path
    overrides: list[str]

    @property
    def store(self) -> Path:
        return self.root / "artifacts"

    def records(self) -> dict[Path, int]:
        """Every stage record on disk and its modification time."""
        return {p: p.stat().st_mtime_ns for p in self.store.rglob("_stage.json")}

    def versions(self, dataset: str, stage: str) -> set[str]:
        """Version folders with a stage record, read from disk."""
        return {p.parent.name for p in (self.store / dataset / stage).glob("*/_stage.json")}

    def record(self, dataset: str, stage: str, version: str) -> dict[str, Any]:
        return json.loads((self.store / dataset / stage / version / "_stage.json").read_text())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    from signmae_core.config import load_config
    from signmae_core.synth import ensure_generated

    root = tmp_path_factory.mktemp("flows")
    overrides = [f"store.root={root}/artifacts", f"datasets.0.root={root}/data/synthetic",
                 "extract.backend=oracle"]
    cfg = load_config("ci_tiny", overrides)
    ensure_generated(Path(cfg.datasets[0].root), cfg.synth)
    return Tiny(root, overrides)


def task_states(state: Any) -> dict[str, Any]:
    """The task runs of a flow run (by its final state), read through the Prefect client:
    task run name (`dataset/stage`) -> task run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    names = [r.name for r in runs]
    assert len(names) == len(set(names)), f"a stage ran twice in one flow run: {names}"
    return {r.name: r for r in runs}


def artifact(key: str) -> Any:
    """The latest artifact under `key` (None when there is none)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_latest_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )
    return found[0] if found else None


def all_keys() -> list[str]:
    """Every `dataset/stage` of ci_tiny that can run (new stages join from the registry; the
    stages named above by hand must be among them)."""
    from pipelines.stages import STAGES

    names = {s.name for s in STAGES if s.available}
    assert set(DATA_STAGES + TRAIN_STAGES) <= names
    return [f"{DATASET}/{s.name}" if s.per_dataset else f"_train/{s.name}"
            for s in STAGES if s.available]


@pytest.fixture(scope="module")
def first_run(tiny: Tiny, prefect_server: None, ray_local: None) -> Any:
    """The whole DAG once, as a flow run; its final state."""
    from flows.pipeline import signmae_pipeline

    state = signmae_pipeline(config="ci_tiny", overrides=tiny.overrides, return_state=True)
    assert state.is_completed(), state.message
    return state


# ---- tests --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_pipeline_flow_runs_every_stage_then_a_rerun_skips_each_with_its_version(
    tiny: Tiny, first_run: Any
) -> None:
    from flows.pipeline import signmae_pipeline

    first = task_states(first_run)
    assert sorted(first) == sorted(all_keys())
    for name, run in first.items():
        assert run.state.type.value == "COMPLETED" and run.state.name == "Completed", name
    upstream = {t.id: n for n, t in first.items()}
    masks_inputs = first[f"{DATASET}/masks"].task_inputs["wait_for"]
    assert [upstream[i.id] for i in masks_inputs] == [f"{DATASET}/extract"]  # the plan's edges

    before = tiny.records()
    again = signmae_pipeline(config="ci_tiny", overrides=tiny.overrides, return_state=True)
    assert again.is_completed(), again.message
    assert tiny.records() == before  # nothing recomputed, no record rewritten
    second = task_states(again)
    assert sorted(second) == sorted(all_keys())
    for name, run in second.items():
        dataset, stage = name.split("/")
        (version,) = tiny.versions(dataset, stage)  # one version on disk: the one it names
        assert run.state.type.value == "COMPLETED", name
        assert run.state.name == "Skipped", (name, run.state.name)
        assert f"version {version}" in run.state.message, (name, run.state.message)
        assert run.run_count == 1


@pytest.mark.slow
def test_flow_run_leaves_stage_counts_report_and_progress_artifacts(
    tiny: Tiny, first_run: Any
) -> None:
    counts = artifact("signmae-stage-counts")
    assert counts is not None and counts.type == "table"
    rows = json.loads(counts.data) if isinstance(counts.data, str) else counts.data
    assert {f"{r['dataset']}/{r['stage']}" for r in rows} == set(all_keys())
    for row in rows:
        record = tiny.record(row["dataset"], row["stage"], row["version"])
        assert (row["ok"], row["failed"]) == (record["counts"]["ok"], record["counts"]["failed"])

    report = artifact("signmae-evaluation-report")
    assert report is not None and report.type == "markdown"
    (version,) = tiny.versions("_train", "evaluate")
    on_disk = (tiny.store / "_train/evaluate" / version / "report.md").read_text()
    assert report.data == on_disk
    metrics = json.loads((tiny.store / "_train/evaluate" / version / "metrics.json").read_text())
    assert f"{metrics['per_instance']['top1']:.4f}" in report.data

    for stage in ("ingest", "decode", "extract"):  # stages that count items with `Progress`
        progress = artifact(f"signmae-progress-{stage}-{DATASET}")
        assert progress is not None and progress.type == "progress", stage
        assert float(progress.data) == pytest.approx(100.0), (stage, progress.data)
        assert "6/6 items" in progress.description, progress.description


@pytest.mark.slow
def test_masks_flow_with_new_settings_reruns_masks_and_downstream_only(
    tiny: Tiny, first_run: Any
) -> None:
    from flows.pipeline import signmae_masks  # type: ignore[attr-defined]
    from pipelines.stages import STAGES

    downstream = {"masks"}  # what reads masks, from the declared needs (not from the flows)
    for spec in STAGES:
        if spec.available and set(spec.needs) & downstream:
            downstream.add(spec.name)
    assert {"pretrain", "finetune", "evaluate"} <= downstream  # ci_tiny: segmentation sampler
    records_before = tiny.records()
    masks_before = tiny.versions(DATASET, "masks")

    state = signmae_masks(config="ci_tiny", overrides=[*tiny.overrides, "masks.dilation=1"],
                          return_state=True)
    assert state.is_completed(), state.message
    runs = task_states(state)
    ran = {name.split("/")[1] for name in runs}
    assert set(BEFORE_MASKS) | downstream <= ran, ran
    for stage in BEFORE_MASKS:
        run = runs[f"{DATASET}/{stage}"]
        assert run.state.name == "Skipped", (stage, run.state)
        assert len(tiny.versions(DATASET, stage)) == 1  # reused: no second version
    for name, run in runs.items():
        if name.split("/")[1] in downstream:
            assert run.state.name == "Completed", (name, run.state)
    new_masks = tiny.versions(DATASET, "masks") - masks_before
    assert len(new_masks) == 1
    (version,) = new_masks
    assert version in runs[f"{DATASET}/masks"].state.message
    for stage in BEFORE_MASKS:  # their records were read, not rewritten
        for path, mtime in records_before.items():
            if path.parts[-3] == stage:
                assert path.stat().st_mtime_ns == mtime, path
    for stage in downstream - {"masks"}:
        per_dataset = next(spec.per_dataset for spec in STAGES if spec.name == stage)
        dataset = DATASET if per_dataset else "_train"
        assert len(tiny.versions(dataset, stage)) == 2, stage  # one per mask version


@pytest.mark.slow
def test_stage_failing_for_a_real_reason_fails_the_flow_and_keeps_finished_stages(
    tiny: Tiny, first_run: Any
) -> None:
    from flows.pipeline import signmae_pipeline
    from signmae_core.config import DatasetConfig, load_config

    missing = tiny.root / "no-such-dataset"
    cfg = load_config("ci_tiny", tiny.overrides)  # a second dataset whose root is not there
    gone = DatasetConfig(name="gone", adapter="csv", root=str(missing), labels="labels.csv")
    settings = cfg.model_copy(update={"datasets": [*cfg.datasets, gone]})
    state = signmae_pipeline(settings=settings, stages=DATA_STAGES, return_state=True)
    assert state.is_failed()
    assert "gone/ingest" in state.message and str(missing) in state.message, state.message
    runs = task_states(state)
    failed = runs["gone/ingest"]
    assert failed.state.type.value == "FAILED" and failed.run_count == 1  # a real error: no retry
    for stage in DATA_STAGES:  # the other dataset's finished stages were reused
        assert runs[f"{DATASET}/{stage}"].state.name == "Skipped", stage
    assert runs["gone/decode"].state.type.value == "PENDING"  # after the failure: not run

    again = signmae_pipeline(config="ci_tiny", overrides=tiny.overrides, stages=DATA_STAGES,
                             return_state=True)
    assert again.is_completed(), again.message
    assert {r.state.name for r in task_states(again).values()} == {"Skipped"}


@pytest.mark.slow
def test_a_transient_failure_is_retried_and_the_stage_completes(
    tiny: Tiny, first_run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flows.pipeline as pipeline
    from pipelines import execute as envelope

    real = envelope.execute
    calls: list[str] = []

    def flaky(plan: Any, key: Any, force: bool = False) -> Any:
        calls.append(str(key))
        if key.stage == "decode" and calls.count(str(key)) == 1:
            raise ConnectionError("connection reset by peer")
        return real(plan, key, force=force)

    monkeypatch.setattr(envelope, "execute", flaky)
    monkeypatch.setitem(pipeline.STAGE_TASKS, "decode",
                        pipeline.STAGE_TASKS["decode"].with_options(retry_delay_seconds=0))
    state = pipeline.signmae_pipeline(config="ci_tiny", overrides=tiny.overrides,
                                      stages=["ingest", "decode"], return_state=True)
    assert state.is_completed(), state.message
    decode = task_states(state)[f"{DATASET}/decode"]
    assert decode.run_count == 2 and decode.state.name == "Skipped"
    assert calls.count(f"{DATASET}/decode") == 2


def test_transient_failures_are_told_from_real_ones() -> None:
    from flows.pipeline import is_transient
    from pipelines.execute import StageFailed
    from signmae_core.config import ConfigError
    from signmae_core.errors import InputError

    for exc in (ConnectionError("reset"), TimeoutError("slow"), OSError(5, "I/O error")):
        assert is_transient(exc), exc
    for exc in (InputError("no labels"), StageFailed("all failed"), ConfigError("bad"),
                FileNotFoundError("x"), PermissionError("x"), ValueError("x"), KeyError("x")):
        assert not is_transient(exc), exc


def test_ray_worker_loss_is_transient_and_a_task_error_is_not() -> None:
    import ray.exceptions

    from flows.pipeline import is_transient

    assert is_transient(ray.exceptions.WorkerCrashedError())
    assert is_transient(ray.exceptions.NodeDiedError("node"))
    assert not is_transient(ray.exceptions.RayTaskError("f", "traceback", ValueError("bad")))


def test_every_stage_has_a_flow_and_the_config_is_one_form() -> None:
    import flows.pipeline as pipeline
    from pipelines.stages import STAGE_NAMES

    for name in STAGE_NAMES:
        made = getattr(pipeline, f"signmae_{name}")
        assert made.name == f"signmae-{name}"
        assert {"config", "overrides", "settings", "datasets", "force", "downstream"} <= set(
            made.parameters.properties
        )
    schema = pipeline.signmae_pipeline.parameters
    assert {"config", "overrides", "settings", "stages", "datasets", "force"} <= set(
        schema.properties
    )
    assert "PipelineConfig" in schema.definitions  # the UI renders the config as one form
    from prefect.flows import load_flow_from_entrypoint  # what a deployment's worker does

    assert load_flow_from_entrypoint("flows/pipeline.py:signmae_masks").name == "signmae-masks"


def test_settings_and_overrides_make_the_flow_config() -> None:
    from flows.pipeline import resolve_config
    from signmae_core.config import load_config

    named = resolve_config("ci_tiny", ["masks.dilation=2"], None)
    assert named.name == "ci_tiny" and named.masks.dilation == 2
    settings = load_config("ci_tiny", ["decode.size=48"])
    given = resolve_config("cpu_demo", ["masks.dilation=1"], settings)
    assert given.decode.size == 48 and given.masks.dilation == 1 and given.name == "ci_tiny"


def test_progress_listeners_see_start_updates_and_end_and_cannot_break_a_stage(
    capsys: pytest.CaptureFixture[str],
) -> None:
    seen: list[tuple[str, int, int]] = []

    def broken(progress: Progress, event: str) -> None:
        raise RuntimeError("listener bug")

    with listening(lambda p, e: seen.append((e, p.done, p.total))), listening(broken):
        progress = Progress("masks synthetic", 3, every_s=0.0)
        for _ in range(3):
            progress.update("ok")
    assert seen == [(START, 0, 3), (UPDATE, 1, 3), (UPDATE, 2, 3), (END, 3, 3)]
    assert progress.fraction == 1.0
    assert "progress listener dropped: RuntimeError: listener bug" in capsys.readouterr().err
    after = Progress("outside", 1)  # listeners left with their block
    after.update("ok")
    assert len(seen) == 4
