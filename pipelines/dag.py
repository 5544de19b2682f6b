"""The DAG plan: every stage declared once, every version known before anything runs.

A `Stage` says what a stage is: its name, the stages it needs (the DAG's edges), its code
version, the config sections that shape its output and where its compute function lives. A
`Plan` is made once per invocation from a config: it resolves paths once and answers, memoized,
for every (stage, dataset): its version, its record, its state (done / will run / stale / damaged
/ waiting) and why, and where its output is. `pipelines.execute.execute` is the one envelope that
runs a stage; `signmae plan` prints what the plan knows without running anything.

The version rule (docs/STORE.md): a version is a hash of the stage's name and code version, the
output fields of its config sections (runtime fields left out) and its upstream versions. What
upstream actually wrote (the fingerprints of their records) decides whether a version is up to
date, never its name: a dataset that grew keeps its versions, and the next run brings them up to
date incrementally.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import pyarrow.fs as pafs

from signmae_core.config import DatasetConfig, PipelineConfig, config_hash
from signmae_core.errors import InputError
from signmae_core.store import ArtifactStore, StageRecord, sha256_file

TRAIN_DATASET = "_train"  # the store's pseudo-dataset of stages that combine every dataset

DONE = "done"
WILL_RUN = "will run"
STALE = "stale"
DAMAGED = "damaged"
WAITING = "waiting"
MISSING = "missing"


@dataclass(frozen=True)
class Stage:
    """One stage of the DAG, declared once (see `pipelines.stages.STAGES`).

    `compute` is `"module:function"`, imported only when the stage runs; the function takes a
    `StageContext` and returns a `StageResult`. `optional_needs(cfg)` names the needs this
    config can do without (e.g. finetuning from scratch needs no pretraining). `extra_inputs`
    adds input fingerprints that are not upstream records (source files, an encoder file).
    """

    name: str
    needs: tuple[str, ...]
    code_version: int
    sections: tuple[str, ...]
    per_dataset: bool
    compute: str | None
    summary: str
    dataset_config: bool = False  # the dataset description shapes the output (ingest)
    optional_needs: Callable[[PipelineConfig], set[str]] | None = None
    extra_inputs: Callable[[PipelineConfig, DatasetConfig | None], dict[str, str]] | None = None

    @property
    def available(self) -> bool:
        return self.compute is not None

    def load(self) -> Callable[[Any], Any]:
        if self.compute is None:
            raise InputError(f"stage {self.name} is not implemented yet")
        module, _, function = self.compute.partition(":")
        return getattr(importlib.import_module(module), function)

    def edges(self, cfg: PipelineConfig) -> tuple[str, ...]:
        """The stages this one reads under this config."""
        dropped = self.optional_needs(cfg) if self.optional_needs else set()
        return tuple(n for n in self.needs if n not in dropped)


@dataclass(frozen=True)
class StageKey:
    """A stage applied to one dataset (or to every dataset, `TRAIN_DATASET`, for training)."""

    stage: str
    dataset: str

    def __str__(self) -> str:
        return f"{self.dataset}/{self.stage}"


@dataclass
class State:
    """Where a key stands: `kind` is one of done / will run / stale / damaged / waiting /
    missing; `why` says which input changed, which file is damaged, what it waits for."""

    kind: str
    why: str = ""
    damaged: list[str] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.kind == DONE

    def __str__(self) -> str:
        return f"{self.kind}: {self.why}" if self.why else self.kind


@dataclass
class StageOutput:
    """A finished stage output: its record and its folder in the store."""

    record: StageRecord
    folder: str

    def path(self, rel: str) -> str:
        return f"{self.folder}/{rel}"


class Plan:
    """What this config makes, per stage and dataset; memoized, no Ray, writes nothing."""

    def __init__(self, cfg: PipelineConfig, stages: list[Stage] | None = None) -> None:
        from .stages import STAGES

        self.cfg = cfg.with_absolute_paths()
        self.stages = {s.name: s for s in (stages or STAGES)}
        self.order = [s.name for s in (stages or STAGES)]
        self._versions: dict[StageKey, str] = {}
        self._records: dict[StageKey, StageRecord | None] = {}
        self._states: dict[StageKey, State] = {}
        self._inputs: dict[StageKey, dict[str, str]] = {}

    @classmethod
    def from_config(cls, cfg: PipelineConfig) -> Plan:
        return cls(cfg)

    @cached_property
    def store(self) -> ArtifactStore:
        return ArtifactStore.from_config(self.cfg.store)

    # ---- keys and edges -----------------------------------------------------------------------
    def stage(self, name: str) -> Stage:
        try:
            return self.stages[name]
        except KeyError:
            raise InputError(
                f"unknown stage {name!r} (stages: {', '.join(self.order)})"
            ) from None

    def key(self, stage: str, dataset: str | None = None) -> StageKey:
        """The key of a stage for a dataset (training stages ignore `dataset`)."""
        spec = self.stage(stage)
        if not spec.per_dataset:
            return StageKey(stage, TRAIN_DATASET)
        return StageKey(stage, self.cfg.dataset(dataset).name)

    def keys(self, stages: list[str] | None = None, datasets: list[str] | None = None
             ) -> list[StageKey]:
        """Keys of the named stages (all by default) in DAG order, data stages per dataset."""
        chosen = [self.cfg.dataset(n).name for n in datasets] if datasets else [
            d.name for d in self.cfg.datasets
        ]
        wanted = set(stages or self.order)
        keys = []
        for name in self.order:
            if name not in wanted:
                continue
            spec = self.stages[name]
            keys += [StageKey(name, d) for d in chosen] if spec.per_dataset else [
                StageKey(name, TRAIN_DATASET)
            ]
        return keys

    def upstream(self, key: StageKey) -> list[StageKey]:
        """The keys `key` reads: the same dataset's stages, or every dataset's for training."""
        spec = self.stages[key.stage]
        found = []
        for need in spec.edges(self.cfg):
            need_spec = self.stages[need]
            if not need_spec.per_dataset:
                found.append(StageKey(need, TRAIN_DATASET))
            elif spec.per_dataset:
                found.append(StageKey(need, key.dataset))
            else:
                found += [StageKey(need, d.name) for d in self.cfg.datasets]
        return found

    def with_upstream(self, keys: Iterable[StageKey]) -> list[StageKey]:
        """`keys` and every key they read, directly or not, in DAG order."""
        every = self.keys()
        needed = set(keys)
        for key in reversed(every):  # DAG order: a key's upstream keys come before it
            if key in needed:
                needed.update(self.upstream(key))
        return [key for key in every if key in needed]

    def dataset_config(self, key: StageKey) -> DatasetConfig | None:
        return None if key.dataset == TRAIN_DATASET else self.cfg.dataset(key.dataset)

    # ---- versions ----------------------------------------------------------------------------
    def output_config(self, key: StageKey) -> dict[str, Any]:
        """The config that shapes this output: its sections' output fields (and the dataset's
        description for ingest, the dataset names for training stages)."""
        spec = self.stages[key.stage]
        payload: dict[str, Any] = {s: getattr(self.cfg, s).output_dump() for s in spec.sections}
        if spec.dataset_config:
            payload["dataset"] = self.cfg.dataset(key.dataset).output_dump()
        if not spec.per_dataset:
            payload["datasets"] = [d.name for d in self.cfg.datasets]
        return payload

    def config_hash(self, key: StageKey) -> str:
        return config_hash(self.output_config(key))

    def pinned(self, key: StageKey) -> bool:
        """True when the config names this key's version (`masks.version`): read, never made."""
        return key.stage == "masks" and bool(self.cfg.masks.version)

    def version(self, key: StageKey) -> str:
        """`hash(stage, code version, output config, upstream versions)`; a pinned
        `masks.version` is used as it is."""
        if key not in self._versions:
            if self.pinned(key):
                self._versions[key] = self.cfg.masks.version
            else:
                spec = self.stages[key.stage]
                self._versions[key] = config_hash(
                    {
                        "stage": spec.name,
                        "code_version": spec.code_version,
                        "config": self.output_config(key),
                        "upstream": {str(k): self.version(k) for k in self.upstream(key)},
                    }
                )
        return self._versions[key]

    def folder(self, key: StageKey) -> str:
        return self.store.stage_dir(key.dataset, key.stage, self.version(key))

    # ---- records and states -------------------------------------------------------------------
    def record(self, key: StageKey) -> StageRecord | None:
        """The stage record of this key's version, whatever its state (None: never finished)."""
        if key not in self._records:
            self._records[key] = self.store.read_record(key.dataset, key.stage, self.version(key))
        return self._records[key]

    def inputs(self, key: StageKey) -> dict[str, str] | None:
        """Fingerprints of what this key reads now; None while an upstream is not done."""
        if key in self._inputs:
            return self._inputs[key]
        fingerprints: dict[str, str] = {}
        for up in self.upstream(key):
            record = self.record(up)
            if record is None or not self.state(up).done:
                return None
            fingerprints[str(up)] = record.fingerprint()
        spec = self.stages[key.stage]
        if spec.extra_inputs is not None:
            fingerprints.update(spec.extra_inputs(self.cfg, self.dataset_config(key)))
        self._inputs[key] = fingerprints
        return fingerprints

    def state(self, key: StageKey, verify: bool = False) -> State:
        """Where `key` stands now (memoized; `verify` also checks recorded sha256 sums)."""
        if key in self._states and not verify:
            return self._states[key]
        state = self._compute_state(key, verify)
        self._states[key] = state
        return state

    def _compute_state(self, key: StageKey, verify: bool) -> State:
        spec = self.stages[key.stage]
        if not spec.available:
            return State(MISSING, "not implemented yet")
        record = self.record(key)
        if self.pinned(key):
            if record is None:
                return State(MISSING, f"pinned masks.version {self.cfg.masks.version} not found "
                             "(a pinned version is read, never computed: unset it to compute)")
            return State(DONE, "pinned by masks.version")
        waiting = [str(up) for up in self.upstream(key) if not self.state(up).done]
        if waiting:
            return State(WAITING if record else WILL_RUN, f"after {', '.join(waiting)}")
        if record is None:
            return State(WILL_RUN, "no output yet")
        why = self._mismatch(key, record)
        if why:
            return State(STALE, why)
        damaged = self.damaged_outputs(key, record, verify)
        if damaged:
            return State(DAMAGED, f"{len(damaged)} output(s): {', '.join(damaged[:3])}", damaged)
        return State(DONE)

    def _mismatch(self, key: StageKey, record: StageRecord) -> str:
        spec = self.stages[key.stage]
        if record.code_version != spec.code_version:
            return f"code version {record.code_version} -> {spec.code_version}"
        if record.config_hash != self.config_hash(key):
            return "made with other settings under this version (older code)"
        inputs = self.inputs(key) or {}
        changed = sorted(
            name for name in set(inputs) | set(record.inputs)
            if inputs.get(name) != record.inputs.get(name)
        )
        return f"input changed: {', '.join(changed)}" if changed else ""

    def damaged_outputs(self, key: StageKey, record: StageRecord, verify: bool = False
                        ) -> list[str]:
        """Recorded outputs that are missing or whose size (or, with `verify`, sha256) differs."""
        folder = self.folder(key)
        infos = self.store.fs.get_file_info(
            pafs.FileSelector(folder, recursive=True, allow_not_found=True)
        )
        sizes = {
            i.path[len(folder) + 1:]: i.size for i in infos if i.type == pafs.FileType.File
        }
        damaged = []
        for entry in record.outputs:
            if entry.path.endswith("/"):
                size = sum(s for p, s in sizes.items() if p.startswith(entry.path))
            else:
                size = sizes.get(entry.path)
            if size != entry.bytes:
                damaged.append(entry.path)
            elif verify and entry.sha256 and self.store.is_local:
                if sha256_file(f"{folder}/{entry.path}") != entry.sha256:
                    damaged.append(entry.path)
        return damaged

    def forget(self, key: StageKey) -> None:
        """Drop what is memoized about records and states after `key` ran (versions stay:
        they do not depend on what is on disk). Everything goes, not only `key`'s descendants:
        an input such as an encoder file may have been written by `key` without an edge."""
        self._states.clear()
        self._inputs.clear()
        self._records.clear()

    # ---- finished outputs, for the stages and commands that read them ---------------------------
    def output(self, stage: str, dataset: str | None = None) -> StageOutput:
        """The finished, intact output a reader needs; else an InputError naming the command."""
        key = self.key(stage, dataset)
        record = self.record(key)
        state = self.state(key)
        if record is None or state.kind in (WILL_RUN, MISSING):
            known = ", ".join(self.store.versions(key.dataset, key.stage)) or "none"
            raise InputError(
                f"no {stage} output for {self._what(key)} (version {self.version(key)}; "
                f"completed versions: {known}): run `{self.command(key)}` first"
            )
        if state.kind == DAMAGED:
            raise InputError(
                f"{stage} output for {self._what(key)} is damaged ({state.why}): "
                f"run `{self.command(key)}` to repair it"
            )
        return StageOutput(record, self.folder(key))

    def command(self, key: StageKey) -> str:
        """The command that makes (or repairs) `key`."""
        if key.dataset == TRAIN_DATASET:
            return f"signmae run {key.stage}"
        return f"signmae run {key.stage} --dataset {key.dataset}"

    def _what(self, key: StageKey) -> str:
        return "this config" if key.dataset == TRAIN_DATASET else f"dataset {key.dataset}"

    def table(self, verify: bool = False) -> Iterator[dict[str, Any]]:
        """One row per key: what `signmae plan` prints."""
        for key in self.keys():
            state = self.state(key, verify=verify)
            record = self.record(key)
            yield {
                "dataset": key.dataset,
                "stage": key.stage,
                "version": self.version(key),
                "state": state.kind,
                "why": state.why,
                "ok": record.counts.get("ok") if record else None,
                "failed": record.counts.get("failed") if record else None,
                "bytes": sum(o.bytes for o in record.outputs) if record else None,
                "folder": self.folder(key),
            }


def closest(name: str, known: list[str], what: str) -> str:
    """`unknown <what> 'x'` with the closest known names, for error messages."""
    near = difflib.get_close_matches(name, known, n=5, cutoff=0.4)
    hint = f"; closest: {', '.join(near)}" if near else ""
    return f"unknown {what} {name!r}{hint}"
