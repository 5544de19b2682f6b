"""The one execute envelope: up to date? -> repair -> lock -> compute -> record -> report.

Every stage runs through `execute(plan, key)`, whoever calls it (`signmae run`, the demo, the
Prefect flows). A stage's compute function receives a `StageContext` (the resolved config, its
dataset, its upstream outputs and a writer for its own folder), writes its outputs through the
writer and returns a `StageResult` (rows with a status, counts, facts for the record); it opens
no store and prints no failures. The envelope

1. returns the record at once when the plan says the key is done (unless `force`);
2. refuses when an upstream output is missing or damaged, naming the command that makes it;
3. deletes the outputs the plan found damaged, so the stage's own resume redoes just them;
4. locks the stage folder, removes the old record and temporary leftovers, runs the compute;
5. writes the record last, prints the failed rows one way, and raises `StageFailed` when every
   item failed (the record stays: it is the truth about that run).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from signmae_core.config import DatasetConfig, PipelineConfig
from signmae_core.errors import InputError, SignmaeError
from signmae_core.store import ArtifactStore, StageRecord, StageWriter

from .dag import DAMAGED, MISSING, TRAIN_DATASET, Plan, StageKey, StageOutput

FAILURES_SHOWN = 5
_PROVENANCE: ContextVar[dict[str, Any] | None] = ContextVar("signmae_provenance", default=None)


@contextlib.contextmanager
def made_by(provenance: dict[str, Any]) -> Iterator[None]:
    """Within the block, `execute` records `provenance` as who made what it writes (callers
    such as the Prefect task set it without changing how they call `execute`)."""
    token = _PROVENANCE.set(dict(provenance))
    try:
        yield
    finally:
        _PROVENANCE.reset(token)


class StageFailed(SignmaeError):
    """A stage finished with no item done: nothing downstream can use it."""


@dataclass
class StageContext:
    """What a stage's compute function gets: config, dataset(s), upstream outputs, its writer."""

    plan: Plan
    key: StageKey
    writer: StageWriter
    force: bool
    previous: StageRecord | None  # the record this run replaces (None: first run or killed)

    @property
    def inputs_changed(self) -> bool:
        """A record of this version existed, made from other input fingerprints."""
        return self.previous is not None and self.previous.inputs != self.writer.inputs

    @property
    def cfg(self) -> PipelineConfig:
        return self.plan.cfg

    @property
    def store(self) -> ArtifactStore:
        return self.plan.store

    @property
    def dataset(self) -> DatasetConfig:
        """The dataset of a per-dataset stage."""
        return self.plan.cfg.dataset(self.key.dataset)

    @property
    def datasets(self) -> list[DatasetConfig]:
        """Every configured dataset (what training stages combine)."""
        return list(self.plan.cfg.datasets)

    @property
    def version(self) -> str:
        return self.plan.version(self.key)

    @property
    def label(self) -> str:
        """`stage dataset`, for progress lines."""
        if self.key.dataset == TRAIN_DATASET:
            return self.key.stage
        return f"{self.key.stage} {self.key.dataset}"

    def upstream(self, stage: str, dataset: str | None = None) -> StageOutput:
        """A finished upstream output (the same dataset's unless `dataset` is given)."""
        if dataset is None and self.key.dataset != TRAIN_DATASET:
            dataset = self.key.dataset
        return self.plan.output(stage, dataset)


@dataclass
class StageResult:
    """What a compute function returns: per-item rows (`video_id`, `status`, `error`), counts
    (`ok` and `failed` are counted from the rows unless given) and facts for the record."""

    rows: Iterable[dict[str, Any]] = ()
    counts: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    """A record and whether this call made it (False: it was already up to date)."""

    key: StageKey
    record: StageRecord
    ran: bool
    seconds: float


def execute(plan: Plan, key: StageKey, force: bool = False,
            provenance: dict[str, Any] | None = None) -> Outcome:
    """Run one stage for one dataset through the envelope; see the module docstring.

    `provenance` says who ran it (`{"command": "signmae run ..."}`, or a Prefect flow run's
    `flow_run_id` and `flow_run_name`; default: the one `made_by` set); it goes into the
    record's `extra["provenance"]`, which `signmae status` shows. A key found up to date keeps
    the provenance of the run that made it.
    """
    provenance = provenance or _PROVENANCE.get()
    started = time.perf_counter()
    state = plan.state(key)
    if state.kind == MISSING:
        raise InputError(f"cannot run {key.stage} for {key.dataset}: {state.why}")
    if state.done and (not force or plan.pinned(key)):  # a pinned version is never recomputed
        record = plan.record(key)
        assert record is not None
        _raise_if_all_failed(key, record)
        return Outcome(key, record, False, time.perf_counter() - started)
    for up in plan.upstream(key):
        plan.output(up.stage, None if up.dataset == TRAIN_DATASET else up.dataset)
        if not plan.state(up).done:  # stale or waiting: it would read what is about to change
            raise InputError(
                f"{up.stage} for {up.dataset} is {plan.state(up)}: run `{plan.command(up)}` first"
            )
    spec = plan.stage(key.stage)
    compute = spec.load()
    old = plan.record(key)
    inputs = plan.inputs(key) or {}
    if state.kind == DAMAGED and not force:
        _remove_damaged(plan, key, state.damaged)
    with plan.store.open_stage(
        key.dataset, key.stage, plan.version(key), config_hash=plan.config_hash(key),
        code_version=spec.code_version, inputs=inputs,
    ) as writer:
        context = StageContext(plan, key, writer, force, previous=old)
        result = compute(context)
        rows = list(result.rows)
        counts = {"ok": sum(r["status"] == "ok" for r in rows),
                  "failed": sum(r["status"] != "ok" for r in rows)}
        writer.counts.update({**counts, **result.counts})
        print_failures(context.label, rows)
        made_by = {"provenance": dict(provenance)} if provenance else {}
        record = writer.commit(**result.extra, **made_by)
    plan.forget(key)
    _raise_if_all_failed(key, record)
    return Outcome(key, record, True, time.perf_counter() - started)


def _remove_damaged(plan: Plan, key: StageKey, damaged: list[str]) -> None:
    """Delete damaged outputs (a folder entry: nothing; its items are checked by the stage)."""
    fs = plan.store.fs
    folder = plan.folder(key)
    for rel in damaged:
        if rel.endswith("/"):
            continue
        if plan.store.exists(f"{folder}/{rel}"):
            fs.delete_file(f"{folder}/{rel}")
    print(f"[{key.stage} {key.dataset}] repairing {len(damaged)} damaged output(s)",
          file=sys.stderr)


def _raise_if_all_failed(key: StageKey, record: StageRecord) -> None:
    ok, failed = record.counts.get("ok", 0), record.counts.get("failed", 0)
    if ok == 0 and failed > 0:
        raise StageFailed(
            f"{key.stage} failed for every item of {key.dataset} ({failed} of {failed}); "
            f"see the failures above or the rows of its output"
        )


def print_failures(label: str, rows: Iterable[dict[str, Any]], limit: int = FAILURES_SHOWN
                   ) -> None:
    """The first `limit` failed rows with their reasons, then how many more."""
    failed = [row for row in rows if row.get("status") not in ("ok", None)]
    failed.sort(key=lambda row: str(row.get("video_id")))
    for row in failed[:limit]:
        reason = row.get("error") or "unknown error"
        print(f"[{label}] failed {row.get('video_id')}: {reason}", file=sys.stderr)
    if len(failed) > limit:
        print(f"[{label}] ... {len(failed) - limit} more failed", file=sys.stderr)
