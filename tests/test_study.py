"""The study command, the k-NN probe and the summary over seeds.

Unit tests check the probe's vote, the study file's rules and the mean/std/separation against
numbers worked out by hand. The end-to-end test runs a two-arm, one-seed study of ci_tiny (oracle
extraction) through the study flow against the session's Prefect server and checks, from the
Prefect API and the stage outputs on disk: one flow run per (arm, seed) under its name; the
scratch arm never pretrains, the tube arm does; each arm's table row holds the figures its own
evaluation and probe wrote; a rerun reuses every stage.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from signmae_core.baselines.knn import weighted_knn_scores
from signmae_core.config import ConfigError
from signmae_core.config.study import StudyConfig, load_study


# ---- the probe's vote ---------------------------------------------------------------------------
def test_weighted_knn_votes_with_the_exponential_of_cosine_similarity() -> None:
    gallery = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])  # cosine to q: 1, 0, 1/sqrt(2)
    labels = np.array([0, 1, 1])
    query = np.array([[5.0, 0.0]])
    scores = weighted_knn_scores(query, gallery, labels, num_classes=3, k=2, temperature=0.5)
    # the two nearest: gallery 0 (cos 1, class 0) and gallery 2 (cos 0.7071, class 1)
    expected = [math.exp(1 / 0.5), math.exp((1 / math.sqrt(2)) / 0.5), 0.0]
    np.testing.assert_allclose(scores[0], expected, rtol=1e-9)
    all_three = weighted_knn_scores(query, gallery, labels, 3, k=10, temperature=0.5)
    np.testing.assert_allclose(all_three[0, 1], expected[1] + math.exp(0.0), rtol=1e-9)


# ---- the study file ------------------------------------------------------------------------------
def _study(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "s", "config": "ci_tiny", "overrides": ["decode.size=64"], "seeds": [0, 1],
        "arms": [{"name": "scratch", "overrides": ["finetune.init_encoder=scratch"]},
                 {"name": "tube", "overrides": ["masking.sampler=tube"], "seeds": [7]}],
    }
    data.update(changes)
    return data


def test_a_study_lists_its_runs_with_the_overrides_of_each(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(_study()))
    study = load_study(path)
    runs = [(arm.name, seed) for arm, seed in study.runs()]
    assert runs == [("scratch", 0), ("scratch", 1), ("tube", 7)]
    arm = study.arms[1]
    assert study.run_overrides(arm, 7) == [
        "decode.size=64", "masking.sampler=tube", "pretrain.seed=7", "finetune.seed=7"]
    assert study.baseline_arm.name == "scratch"


STUDY_FILES = sorted((Path(__file__).parents[1] / "configs" / "studies").glob("*.yaml"))


@pytest.mark.parametrize("path", STUDY_FILES, ids=lambda path: path.name)
def test_every_shipped_study_file_gives_a_valid_config_for_each_run(path: Path) -> None:
    from pipelines.study import arm_config

    study = load_study(path)
    versions = set()
    for arm, seed in study.runs():
        cfg = arm_config(study, arm, seed)  # an unknown key or bad value is a ConfigError
        assert (cfg.pretrain.seed, cfg.finetune.seed) == (seed, seed)
        versions.add(cfg.model_dump_json())
    assert len(versions) == len(study.runs())  # no two runs of a study are the same run


@pytest.mark.parametrize("changes, message", [
    ({"arms": [{"name": "a"}, {"name": "a"}]}, "unique"),
    ({"baseline": "nope"}, "not one of the arms"),
    ({"arms": [{"name": "a"}, {"name": "b", "baseline": "nope"}]}, "'nope' is not one of"),
    ({"arms": []}, "arms"),
    ({"colour": "red"}, "unknown config field 'colour'"),
])
def test_a_bad_study_file_is_one_clear_error(tmp_path: Path, changes: dict[str, Any],
                                             message: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(_study(**changes)))
    with pytest.raises(ConfigError, match=message):
        load_study(path)


def test_the_summary_gives_mean_sample_std_and_whether_an_arm_beats_the_baseline() -> None:
    from pipelines.study import METRICS, summarize

    study = StudyConfig.model_validate(_study(seeds=[0, 1, 2], arms=[
        {"name": "scratch"}, {"name": "tube"}]))

    def row(arm: str, seed: int, top1: float) -> dict[str, Any]:
        values: dict[str, Any] = {column: None for column, _, _ in METRICS}
        values.update(arm=arm, seed=seed, top1=top1, minutes={"finetune": 1.0})
        return values

    rows = [row("scratch", s, v) for s, v in enumerate([0.4, 0.5, 0.6])]
    rows += [row("tube", s, v) for s, v in enumerate([0.7, 0.8, 0.75])]
    rows.append({"arm": "tube", "seed": 3, "error": "killed"})
    arms = {a["arm"]: a for a in summarize(study, rows, {"tube": {"leakage": 0.5}})}
    # by hand: scratch mean 0.5, std sqrt(((0.1)^2 + 0 + (0.1)^2) / 2) = 0.1;
    # tube mean 0.75, std sqrt((0.05^2 + 0.05^2) / 2) = 0.05
    assert arms["scratch"]["top1"]["mean"] == pytest.approx(0.5)
    assert arms["scratch"]["top1"]["std"] == pytest.approx(0.1)
    assert arms["tube"]["top1"]["std"] == pytest.approx(0.05)
    assert arms["tube"]["seeds"] == [0, 1, 2] and arms["tube"]["failed"] == [3]
    versus = arms["tube"]["vs_baseline"]["top1"]
    assert versus["diff"] == pytest.approx(0.25) and versus["spread"] == pytest.approx(0.1)
    assert versus["beats"] is True
    assert arms["scratch"]["vs_baseline"]["top1"] is None  # the baseline against itself
    assert arms["tube"]["leakage"] == {"leakage": 0.5} and arms["scratch"]["leakage"] is None
    assert arms["tube"]["handshape"] == {"mean": None, "std": None}


def test_an_arm_that_names_its_own_baseline_is_compared_with_it() -> None:
    from pipelines.study import METRICS, results_markdown, summarize

    study = StudyConfig.model_validate(_study(seeds=[0, 1], arms=[
        {"name": "scratch"}, {"name": "tube"}, {"name": "scratch-b"},
        {"name": "tube-b", "baseline": "scratch-b"}]))
    top1 = {"scratch": [0.5, 0.5], "tube": [0.6, 0.6], "scratch-b": [0.8, 0.8],
            "tube-b": [0.7, 0.7]}
    rows = []
    for arm, values in top1.items():
        for seed, value in enumerate(values):
            row: dict[str, Any] = {column: None for column, _, _ in METRICS}
            row.update(arm=arm, seed=seed, top1=value, minutes={"finetune": 1.0}, floors={})
            rows.append(row)
    arms = {a["arm"]: a for a in summarize(study, rows, {})}
    # tube-b: 0.7 - 0.8 against its own baseline (against the study's it would be +0.2)
    assert arms["tube-b"]["vs_baseline"]["top1"]["diff"] == pytest.approx(-0.1)
    assert arms["tube"]["vs_baseline"]["top1"]["diff"] == pytest.approx(0.1)
    assert arms["scratch-b"]["vs_baseline"]["top1"]["diff"] == pytest.approx(0.3)
    assert arms["tube-b"]["baseline"] == "scratch-b" and arms["tube"]["baseline"] == "scratch"
    table = results_markdown(study, list(arms.values()), rows)
    assert "Δ against `scratch` (`tube-b` against `scratch-b`)" in table
    assert "| tube-b | 2 |" in table and "| -10.0 |" in table


def test_a_restricted_study_keeps_the_baselines_of_its_arms() -> None:
    from flows.study import _only

    study = StudyConfig.model_validate(_study(arms=[
        {"name": "scratch"}, {"name": "tube"}, {"name": "scratch-b"},
        {"name": "tube-b", "baseline": "scratch-b"}]))
    assert [a.name for a in _only(study, {"tube-b"}).arms] == ["scratch", "scratch-b", "tube-b"]
    assert [a.name for a in _only(study, {"tube"}).arms] == ["scratch", "tube"]


# ---- end to end: a tiny study through the flow --------------------------------------------------
@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("study")
    study = {
        "name": "tiny", "config": "ci_tiny", "seeds": [0], "out": str(root / "out"),
        "overrides": [f"store.root={root}/artifacts", f"datasets.0.root={root}/data/synthetic",
                      "extract.backend=oracle",
                      # the probe classifies the training clips, each its own neighbour: 100 %,
                      # so a table that mixes up evaluation and probe figures shows it
                      "probe.query_splits=[train]", "probe.k=1"],
        "arms": [{"name": "scratch", "overrides": ["finetune.init_encoder=scratch"]},
                 {"name": "tube", "overrides": ["masking.sampler=tube"]}],
        "leakage_draws": 2,
    }
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(study))
    from signmae_core.config import load_config
    from signmae_core.synth import ensure_config_datasets

    ensure_config_datasets(load_config("ci_tiny", study["overrides"]))
    return path


def _subflow_tasks(name: str) -> dict[str, str]:
    """Task run name -> state name of the newest flow run called `name`."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterName,
    )
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            name=FlowRunFilterName(any_=[name])), sort=FlowRunSort.START_TIME_DESC)
        assert runs, f"no flow run named {name}"
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[runs[0].id])))
    return {t.name: t.state.name for t in tasks}


def _flow_run_count(name: str) -> int:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    with get_client(sync_client=True) as client:
        return len(client.read_flow_runs(flow_run_filter=FlowRunFilter(
            name=FlowRunFilterName(any_=[name]))))


def _stage_metrics(store: Path, stage: str, version: str) -> dict[str, Any]:
    return json.loads((store / "_train" / stage / version / "metrics.json").read_text())


@pytest.mark.slow
def test_a_two_arm_study_runs_each_arm_as_a_flow_run_and_tabulates_what_each_measured(
    tiny_study: Path, prefect_server: None, ray_local: None
) -> None:
    from flows.study import signmae_study

    state = signmae_study(study_file=str(tiny_study), return_state=True)
    assert state.is_completed(), state.message
    scratch, tube = _subflow_tasks("tiny-scratch-seed0"), _subflow_tasks("tiny-tube-seed0")
    assert "_train/pretrain" not in scratch and scratch["_train/finetune"] == "Completed"
    assert tube["_train/pretrain"] == "Completed"
    assert {"_train/evaluate", "_train/probe"} <= set(scratch) & set(tube)

    out = tiny_study.parent / "out"
    results = json.loads((out / "results.json").read_text())
    store = tiny_study.parent / "artifacts"
    for row in results["runs"]:  # each row holds what that arm's own stages wrote
        evaluated = _stage_metrics(store, "evaluate", row["versions"]["evaluate"])
        probed = _stage_metrics(store, "probe", row["versions"]["probe"])
        assert probed["per_instance"]["top1"] == 1.0 != evaluated["per_instance"]["top1"]
        assert row["top1"] == evaluated["per_instance"]["top1"]
        assert row["probe_top1"] == probed["per_instance"]["top1"]
        assert row["handshape"] == evaluated["class_groups"]["handshape"]["accuracy"]
    finetunes = {row["arm"]: row["versions"]["finetune"] for row in results["runs"]}
    assert finetunes["scratch"] != finetunes["tube"]
    record = json.loads((store / "_train/finetune" / finetunes["scratch"] / "_stage.json")
                        .read_text())
    assert record["inputs"].get("init_encoder") == "scratch"
    arms = {a["arm"]: a for a in results["arms"]}
    assert arms["scratch"]["leakage"] is None
    assert 0 <= arms["tube"]["leakage"]["leakage"] <= 1
    table = (out / "results.md").read_text()
    assert "| scratch | 1 |" in table and "| tube | 1 |" in table
    assert (out / "results.png").stat().st_size > 0

    records = {p: p.stat().st_mtime_ns for p in store.rglob("_stage.json")}
    again = signmae_study(study_file=str(tiny_study), return_state=True)
    assert again.is_completed(), again.message
    assert set(_subflow_tasks("tiny-tube-seed0").values()) == {"Skipped"}
    assert {p: p.stat().st_mtime_ns for p in store.rglob("_stage.json")} == records

    # one arm: its baseline is tabled as it stands, read from the store, not run again
    scratch_runs = _flow_run_count("tiny-scratch-seed0")
    only_tube = signmae_study(study_file=str(tiny_study), arms=["tube"], return_state=True)
    assert only_tube.is_completed(), only_tube.message
    assert _flow_run_count("tiny-scratch-seed0") == scratch_runs
    first = {row["arm"]: row for row in results["runs"]}
    now = {row["arm"]: row for row in json.loads((out / "results.json").read_text())["runs"]}
    assert now["scratch"]["top1"] == first["scratch"]["top1"]
    assert now["scratch"]["versions"] == first["scratch"]["versions"]
    assert "| scratch | 1 |" in (out / "results.md").read_text()


@pytest.fixture(scope="module")
def more_clips(tiny_study: Path) -> list[str]:
    """Overrides of ci_tiny with 4 signers x 2 reps: 18 training clips (3 signers), 6 test."""
    from signmae_core.config import load_config
    from signmae_core.synth import ensure_config_datasets

    root = tiny_study.parent
    overrides = [f"store.root={root}/artifacts", f"datasets.0.root={root}/data/more",
                 "extract.backend=oracle", "synth.signers=4", "synth.reps=2"]
    ensure_config_datasets(load_config("ci_tiny", overrides))
    return overrides


def test_a_labelled_budget_takes_each_signer_in_turn_and_the_same_clips_every_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import pyarrow as pa

    from pipelines import training
    from pipelines.training import DatasetClips, labelled_budget

    ids = [f"s{s}_c{c}_r{r}" for s in range(4) for c in range(3) for r in range(3)]
    manifest = pa.table({"video_id": ids, "signer": [i.split("_")[0] for i in ids]})
    monkeypatch.setattr(training.outputs, "manifest", lambda plan, name: manifest)
    records = [{"video_id": i, "label": int(i.split("_")[1][1]), "split": "train"} for i in ids]
    part = DatasetClips("d", records, ["a", "b", "c"])
    ctx: Any = type("Ctx", (), {"plan": None})()

    (four,) = labelled_budget(ctx, [part], 4)
    signers_per_class = {(r["label"], r["video_id"].split("_")[0]) for r in four.records}
    assert len(four.records) == 12 and len(signers_per_class) == 12  # one clip per signer
    (five,) = labelled_budget(ctx, [part], 5)
    assert len(five.records) == 15 and {r["video_id"] for r in four.records} < {
        r["video_id"] for r in five.records}
    assert [r["video_id"] for r in five.records] == [
        r["video_id"] for r in labelled_budget(ctx, [part], 5)[0].records]
    assert labelled_budget(ctx, [part], None)[0].records == records
    assert labelled_budget(ctx, [part], 100)[0].records == records


@pytest.mark.slow
def test_finetuning_and_the_probe_keep_to_the_labelled_budget(
    more_clips: list[str], ray_local: None
) -> None:
    from pipelines.dag import Plan
    from pipelines.runner import run_stages
    from signmae_core.config import load_config

    cfg = load_config("ci_tiny", [*more_clips, "finetune.init_encoder=scratch",
                                  "finetune.clips_per_class=2"])
    run_stages(cfg, ["ingest", "decode", "shard", "finetune", "probe"])
    plan = Plan.from_config(cfg)
    assert plan.record(plan.key("finetune")).counts["ok"] == 6  # 3 classes x 2 of 18 clips
    probed = json.loads(plan.store.read_bytes(plan.output("probe").path("metrics.json")))
    assert probed["setup"]["gallery clips"] == 6 and probed["setup"]["query clips"] == 6


@pytest.mark.slow
def test_the_probe_predicts_what_a_hand_made_nearest_neighbour_of_the_encoder_predicts(
    more_clips: list[str], ray_local: None
) -> None:
    """The probe's predictions against a 1-NN built here: the random encoder of seed 3 (what a
    scratch finetuning starts from), tokens max-pooled and layer-normalised by hand, each of
    two evaluation views' unit features averaged, from the decoded clip files (not the shards)."""
    import csv

    import torch

    from pipelines import outputs
    from pipelines.dag import Plan
    from pipelines.runner import run_stages
    from signmae_core.config import load_config
    from signmae_core.data import ClipDataset, ClipRecord, Sampling
    from signmae_core.models import create_classifier

    cfg = load_config("ci_tiny", [*more_clips, "finetune.init_encoder=scratch", "finetune.seed=3",
                                  "model.pool=max", "probe.k=1", "probe.views=2"])
    run_stages(cfg, ["ingest", "decode", "shard", "probe"])
    plan = Plan.from_config(cfg)
    with open(plan.output("probe").path("predictions.csv"), newline="") as handle:
        predicted = {row["video_id"]: row["predicted"] for row in csv.DictReader(handle)}

    names = outputs.class_names(plan, "synthetic")
    rows = [r for r in outputs.clip_rows(plan, "synthetic") if r["status"] == "ok"]
    torch.manual_seed(3)
    model = create_classifier(cfg.model, len(names)).eval()

    def features(split: str) -> tuple[list[str], np.ndarray, list[int]]:
        chosen = [r for r in rows if r["split"] == split]
        clips = ClipDataset([ClipRecord(r["video_id"], r["clip_path"], r["label_id"])
                             for r in chosen], Sampling.from_config(cfg), train=False)
        per_clip = []
        for i in range(len(chosen)):
            views = []
            for view in range(2):
                video = clips.load(i, None, view=view, num_views=2)["clips"][None]
                with torch.no_grad():
                    tokens = model.forward_features(video)[0]  # (N, D)
                    pooled = torch.nn.functional.layer_norm(
                        tokens.max(dim=0).values, (tokens.shape[1],), model.fc_norm.weight,
                        model.fc_norm.bias, model.fc_norm.eps)
                views.append((pooled / pooled.norm()).numpy())
            per_clip.append(np.mean(views, axis=0))
        return [r["video_id"] for r in chosen], np.array(per_clip), [r["label_id"] for r in chosen]

    _, gallery, gallery_labels = features("train")
    query_ids, queries, _ = features("test")
    similarity = (queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ (
        gallery / np.linalg.norm(gallery, axis=1, keepdims=True)).T
    expected = {vid: names[gallery_labels[j]]
                for vid, j in zip(query_ids, similarity.argmax(axis=1), strict=True)}
    assert predicted == expected


def test_each_seed_and_labelled_budget_of_a_scratch_arm_has_its_own_probe_version() -> None:
    """Two runs that probe different encoders (or galleries) must not share an output folder,
    or a study's seeds overwrite each other's probe."""
    from pipelines.dag import Plan
    from signmae_core.config import load_config

    def version(*overrides: str) -> str:
        plan = Plan.from_config(load_config("ci_tiny", ["finetune.init_encoder=scratch",
                                                        *overrides]))
        return plan.version(plan.key("probe"))

    versions = {version("finetune.seed=0"), version("finetune.seed=1"),
                version("finetune.seed=0", "finetune.clips_per_class=2")}
    assert len(versions) == 3
