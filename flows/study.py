"""The study as a Prefect flow: every (arm, seed) a `signmae-pipeline` flow run of its own.

`signmae study configs/study_synth.yaml` generates the config's synthetic datasets when missing,
points at a Prefect server (a temporary one unless this process already has one, as the demo
does) and runs the `signmae-study` flow: per (arm, seed), in the study file's order, the
pipeline flow (a subflow named `<study>-<arm>-seed<seed>`) brings the arm's stages up to date
(`pipelines.study.arm_stages`: the evaluation and the probe, and what they read), reusing what
is done, so a rerun, or a study that adds an arm, trains only what is new. A failed arm is a
row with its reason; the others go on. Then the arms' hand leakage, the tables
(`pipelines.study`) and a markdown artifact `study-<name>` with the arms' table.
"""

from __future__ import annotations

import logging
from typing import Any

from prefect import flow, get_run_logger

from pipelines.study import (
    arm_config,
    arm_stages,
    finished,
    hand_leakage_of,
    pretrains,
    results_markdown,
    run_row,
    summarize,
    write_results,
)
from signmae_core.config.study import StudyConfig, load_study
from signmae_core.errors import SignmaeError

from .pipeline import signmae_pipeline


class StudyFailed(SignmaeError):
    """No arm of the study finished."""


@flow(name="signmae-study", validate_parameters=True, persist_result=False)
def signmae_study(study_file: str, arms: list[str] | None = None) -> list[dict[str, Any]]:
    """Run (or reuse) every (arm, seed) of the study file, or only the named `arms` (their
    baselines tabled as they stand, not run), and write the results; returns the per-arm
    summaries."""
    from prefect.artifacts import create_markdown_artifact

    from pipelines.dag import Plan

    logger = get_run_logger()
    study = load_study(study_file)
    chosen = _chosen(study, arms)
    tabled = _only(study, chosen)
    compared = {arm.name for arm in tabled.arms} - chosen
    rows: list[dict[str, Any]] = []
    for arm, seed in study.runs():
        if arm.name not in chosen | compared:
            continue
        plan = Plan.from_config(arm_config(study, arm, seed))
        if arm.name in compared:  # a baseline of a chosen arm: read as it stands, not run
            if finished(plan):
                rows.append(run_row(plan, arm, seed))
            continue
        name = f"{study.name}-{arm.name}-seed{seed}"
        state = signmae_pipeline.with_options(flow_run_name=name)(
            config=study.config, overrides=study.run_overrides(arm, seed),
            stages=arm_stages(plan), return_state=True)
        if state.is_completed():
            rows.append(run_row(Plan.from_config(plan.cfg), arm, seed))
        else:
            logger.warning("%s failed: %s", name, state.message)
            rows.append({"arm": arm.name, "seed": seed, "error": state.message or state.name})
    if all(row.get("error") for row in rows):
        raise StudyFailed(f"no arm of study {study.name} finished: {rows[0].get('error')}")
    leakage = {}
    for arm in study.arms:
        cfg = arm_config(study, arm, (arm.seeds or study.seeds)[0])
        if arm.name in chosen and pretrains(cfg):
            leakage[arm.name] = hand_leakage_of(cfg, study.leakage_draws)
    summary = summarize(tabled, rows, leakage)
    out = write_results(tabled, rows, summary)
    create_markdown_artifact(results_markdown(tabled, summary, rows),
                             key=f"study-{study.name.lower().replace('_', '-').replace('.', '-')}",
                             description=f"study {study.name}: arms and seeds")
    logger.info("results in %s", out)
    return summary


def _chosen(study: StudyConfig, arms: list[str] | None) -> set[str]:
    known = [arm.name for arm in study.arms]
    unknown = sorted(set(arms or []) - set(known))
    if unknown:
        raise StudyFailed(f"unknown arm(s) {', '.join(unknown)} (study arms: {', '.join(known)})")
    return set(arms or known)


def _only(study: StudyConfig, chosen: set[str]) -> StudyConfig:
    """The study restricted to the chosen arms (their baselines kept, to compare with)."""
    base = study.baseline_arm.name
    bases = {base} | {study.baseline_of(arm).name for arm in study.arms if arm.name in chosen}
    kept = [arm for arm in study.arms if arm.name in chosen | bases]
    return study.model_copy(update={"arms": kept, "baseline": base})


def run_study(study_file: str, arms: list[str] | None = None, keep_server: bool = False,
              verbose: bool = False) -> list[dict[str, Any]]:
    """`signmae study`: synthesize, run the study flow against a Prefect server, print the
    table and where the results are."""
    from pipelines.dag import Plan
    from pipelines.runner import run_log
    from signmae_core.config import load_config
    from signmae_core.synth import ensure_config_datasets

    from .demo import prefect_console, with_prefect_server

    study = load_study(study_file)  # a bad study file fails before any server starts
    _chosen(study, arms)
    base = load_config(study.config, study.overrides)
    for _, root, made in ensure_config_datasets(base):
        print(f"[synth] {root}: {made['clips']} clips ({made['status']})", flush=True)

    def run(ui: bool) -> list[dict[str, Any]]:
        with prefect_console(logging.NOTSET if verbose else logging.WARNING), \
                run_log(Plan.from_config(base), verbose):
            state = signmae_study(study_file=study_file, arms=arms, return_state=True)
        if not state.is_completed():
            raise StudyFailed(f"study flow run failed: {state.message}")
        summary: list[dict[str, Any]] = state.result()
        results = study.out_dir() / "results.md"
        print(results.read_text(encoding="utf-8"), flush=True)
        print(f"results: {results} (and results.json, results.png)", flush=True)
        return summary

    return with_prefect_server(run, keep_server)


__all__ = ["StudyFailed", "run_study", "signmae_study"]
