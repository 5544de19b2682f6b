"""Prefect artifacts of a pipeline run: stage progress, a table of stage counts, the report.

Keys are lowercase with dashes (Prefect's rule), the same on every run, so the UI shows each
one's history: `signmae-progress-<stage>-<dataset>` (one per running stage, from the stages'
`pipelines.progress.Progress` through a listener: the stage modules never import Prefect),
`signmae-stage-counts` (one row per stage and dataset of the flow run) and
`signmae-evaluation-report` (the evaluate stage's `report.md`; its plots stay beside the file).
"""

from __future__ import annotations

import re
from typing import Any
from uuid import UUID

from pipelines.dag import TRAIN_DATASET, Plan, StageKey
from pipelines.progress import END, Progress

STAGE_COUNTS_KEY = "signmae-stage-counts"
REPORT_KEY = "signmae-evaluation-report"


def artifact_key(*parts: str) -> str:
    """`signmae-<parts>` in Prefect's key alphabet: lowercase letters, digits and dashes."""
    words = [re.sub(r"[^a-z0-9]+", "-", p.lower()).strip("-") for p in ("signmae", *parts)]
    return "-".join(w for w in words if w)


def progress_key(key: StageKey) -> str:
    """The progress artifact key of a (stage, dataset): `signmae-progress-masks-synthetic`."""
    if key.dataset == TRAIN_DATASET:
        return artifact_key("progress", key.stage)
    return artifact_key("progress", key.stage, key.dataset)


class ProgressArtifacts:
    """A `pipelines.progress` listener for one running stage: a progress artifact per
    `Progress` the stage makes, updated at each of its console lines (every few seconds)."""

    def __init__(self, key: StageKey) -> None:
        self.key = key
        self.ids: dict[int, UUID] = {}

    def __call__(self, progress: Progress, event: str) -> None:
        from prefect.artifacts import create_progress_artifact, update_progress_artifact

        percent = 100.0 * progress.fraction
        text = describe_progress(progress, finished=event == END)
        artifact = self.ids.get(id(progress))
        if artifact is None:
            self.ids[id(progress)] = create_progress_artifact(
                percent, key=progress_key(self.key), description=text
            )
        else:
            update_progress_artifact(artifact, percent, description=text)


def describe_progress(progress: Progress, finished: bool = False) -> str:
    """`extract synthetic: 12/36 items (ok 12), 1.5/s, about 16 s left`."""
    counts = ", ".join(f"{k} {v}" for k, v in sorted(progress.counts.items())) or "none yet"
    text = f"{progress.label}: {progress.done}/{progress.total} items ({counts})"
    if progress.done:
        text += f", {progress.rate:.1f}/s"
    eta = progress.eta_s
    if not finished and eta is not None:
        text += f", about {eta:.0f} s left"
    return text


def publish_stage_counts(rows: list[dict[str, Any]], flow_name: str) -> UUID:
    """The table of stage counts of this flow run (one row per stage and dataset)."""
    from prefect.artifacts import create_table_artifact

    ran = sum(r["state"] == "Completed" for r in rows)
    skipped = sum(r["state"] == "Skipped" for r in rows)
    return create_table_artifact(
        rows, key=STAGE_COUNTS_KEY,
        description=f"{flow_name}: {len(rows)} stage runs, {ran} ran, {skipped} skipped "
        "(up to date, reused from their stage records)",
    )


def publish_report(plan: Plan) -> UUID | None:
    """The evaluation report as a markdown artifact, when this config's evaluation is done."""
    from prefect.artifacts import create_markdown_artifact

    key = plan.key("evaluate")
    if not plan.state(key).done:
        return None
    output = plan.output("evaluate")
    markdown = plan.store.read_bytes(output.path("report.md")).decode("utf-8")
    return create_markdown_artifact(
        markdown, key=REPORT_KEY,
        description=f"evaluate version {output.record.version}: {output.folder}/report.md",
    )
