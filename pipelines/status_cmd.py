"""`signmae status` and `signmae gc`: what the store holds for a config, and its housekeeping.

`status` reads the plan (`Plan.table()`): per dataset and stage, whether it is done, under which
version, its ok and failed counts, its bytes on disk and who made it (the record's
`extra["provenance"]`: a Prefect flow run's name and id, or the `signmae` command), and the other
versions of that stage present in the store (superseded ones, or another config's).

`gc` removes superseded versions only. The rule: keep the plan's version of every stage of this
config and, transitively, every version a kept record read (its input fingerprints name them:
a pinned `masks.version` keeps the extraction it was made from); every other version folder
under `<root>/<dataset>/<stage>/` of this config's datasets and stages is superseded. Folders of
datasets or stages this config does not know are left alone, and so are version folders another
run holds the lock of. Dry run by default; `--apply` deletes a folder and its lock file
(`_locks/<dataset>__<stage>__<version>.lock`).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow.fs as pafs

from signmae_core.config import load_config
from signmae_core.store import RECORD_NAME, ArtifactStore, StageRecord, StoreError

from .dag import TRAIN_DATASET, Plan


# ---- what the store holds -----------------------------------------------------------------------
def folder_bytes(store: ArtifactStore, folder: str) -> int:
    """Bytes of every file under `folder` (0 when it does not exist)."""
    infos = store.fs.get_file_info(pafs.FileSelector(folder, recursive=True, allow_not_found=True))
    return sum(i.size or 0 for i in infos if i.type == pafs.FileType.File)


def version_folders(store: ArtifactStore, dataset: str, stage: str) -> list[str]:
    """Names of the version folders of a stage (complete or not), sorted."""
    infos = store.fs.get_file_info(
        pafs.FileSelector(store.stage_dir(dataset, stage), allow_not_found=True)
    )
    return sorted(i.base_name for i in infos
                  if i.type == pafs.FileType.Directory and not i.base_name.startswith("."))


def made_by(record: StageRecord | None) -> str:
    """Who made a record: `flow run NAME (ID)`, the command, or `-` when it does not say."""
    if record is None:
        return "-"
    provenance = record.extra.get("provenance") or {}
    if provenance.get("flow_run_id"):
        return f"flow run {provenance.get('flow_run_name') or '?'} ({provenance['flow_run_id']})"
    return str(provenance.get("command") or "-")


def _datasets(plan: Plan) -> list[str]:
    return [d.name for d in plan.cfg.datasets] + [TRAIN_DATASET]


def status_rows(plan: Plan) -> list[dict[str, Any]]:
    """`Plan.table()` rows with `bytes_on_disk`, `made_by`, `provenance`, `finished_at` and
    `other_versions` (each: version, complete, bytes_on_disk, made_by, finished_at)."""
    store = plan.store
    rows = []
    for row in plan.table():
        record = plan.record(plan.key(row["stage"], _dataset_arg(row["dataset"])))
        others = []
        for version in version_folders(store, row["dataset"], row["stage"]):
            if version == row["version"]:
                continue
            other = store.read_record(row["dataset"], row["stage"], version)
            others.append({
                "version": version, "complete": other is not None,
                "bytes_on_disk": folder_bytes(store, store.stage_dir(row["dataset"], row["stage"],
                                                                     version)),
                "made_by": made_by(other), "finished_at": other.finished_at if other else None,
            })
        rows.append({
            **row, "bytes_on_disk": folder_bytes(store, row["folder"]),
            "made_by": made_by(record),
            "provenance": record.extra.get("provenance") if record else None,
            "finished_at": record.finished_at if record else None, "other_versions": others,
        })
    return rows


def _dataset_arg(dataset: str) -> str | None:
    return None if dataset == TRAIN_DATASET else dataset


# ---- what gc removes ----------------------------------------------------------------------------
@dataclass
class Superseded:
    """A version folder gc removes: where, how big, whether it had a record."""

    dataset: str
    stage: str
    version: str
    folder: str
    bytes: int
    complete: bool


def kept_versions(plan: Plan) -> set[tuple[str, str, str]]:
    """(dataset, stage, version) of the plan's keys and, transitively, of every version a kept
    record read (matched by the input fingerprints its record holds)."""
    store = plan.store
    kept = {(k.dataset, k.stage, plan.version(k)) for k in plan.keys()}
    todo = list(kept)
    while todo:
        dataset, stage, version = todo.pop()
        record = store.read_record(dataset, stage, version)
        for name, fingerprint in (record.inputs if record else {}).items():
            up_dataset, _, up_stage = name.rpartition("/")
            if not up_dataset or up_stage not in plan.stages:
                continue  # not a stage input (sources, an encoder file)
            for up_version in store.versions(up_dataset, up_stage):
                up_record = store.read_record(up_dataset, up_stage, up_version)
                found = (up_dataset, up_stage, up_version)
                if up_record and up_record.fingerprint() == fingerprint and found not in kept:
                    kept.add(found)
                    todo.append(found)
    return kept


def superseded(plan: Plan) -> list[Superseded]:
    """Every version folder of this config's datasets and stages that gc would remove."""
    store = plan.store
    kept = kept_versions(plan)
    found = []
    for dataset in _datasets(plan):
        for stage in plan.order:
            for version in version_folders(store, dataset, stage):
                if (dataset, stage, version) in kept:
                    continue
                folder = store.stage_dir(dataset, stage, version)
                found.append(Superseded(dataset, stage, version, folder,
                                        folder_bytes(store, folder),
                                        store.exists(f"{folder}/{RECORD_NAME}")))
    return found


def remove(plan: Plan, item: Superseded) -> bool:
    """Delete one superseded folder under its stage lock, then the lock file itself (while still
    held: a run that wants the version later makes a new one); False when another run holds
    the lock (then both stay)."""
    store = ArtifactStore(plan.store.root_uri, lock_timeout_s=0.0)
    try:
        with store.lock(item.dataset, item.stage, item.version):
            store.fs.delete_dir(item.folder)
            store.lock_path(item.dataset, item.stage, item.version).unlink(missing_ok=True)
    except StoreError:
        return False
    return True


# ---- the commands -------------------------------------------------------------------------------
def human_bytes(size: int | None) -> str:
    """`1.2 MB` style (decimal units); `-` for None."""
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"


def _status_lines(rows: list[dict[str, Any]]) -> Iterator[str]:
    yield (f"{'dataset':<12} {'stage':<12} {'version':<13} {'state':<9} {'ok':>6} {'failed':>6} "
           f"{'on disk':>9}  made by")
    for row in rows:
        ok = "-" if row["ok"] is None else row["ok"]
        failed = "-" if row["failed"] is None else row["failed"]
        yield (f"{row['dataset']:<12} {row['stage']:<12} {row['version']:<13} "
               f"{row['state']:<9} {ok:>6} {failed:>6} "
               f"{human_bytes(row['bytes_on_disk']):>9}  {row['made_by']}")
        for other in row["other_versions"]:
            what = "superseded" if other["complete"] else "incomplete"
            yield (f"{'':<12} {'':<12} {other['version']:<13} {what:<16} "
                   f"{human_bytes(other['bytes_on_disk']):>13}  {other['made_by']}")


def cmd_status(args: argparse.Namespace) -> int:
    plan = Plan.from_config(load_config(args.config, args.overrides))
    rows = status_rows(plan)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"store {plan.store.root_uri}")
        for line in _status_lines(rows):
            print(line)
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    plan = Plan.from_config(load_config(args.config, args.overrides))
    items = superseded(plan)
    verb = "removed" if args.apply else "would remove"
    total = 0
    for item in items:
        if args.apply and not remove(plan, item):
            print(f"in use, left: {item.dataset}/{item.stage}/{item.version}")
            continue
        total += item.bytes
        what = "" if item.complete else " (incomplete)"
        print(f"{verb} {item.dataset}/{item.stage}/{item.version}{what}  "
              f"{human_bytes(item.bytes)}")
    print(f"gc: {verb} {len(items)} superseded version(s), {human_bytes(total)}"
          + ("" if args.apply else " (dry run: --apply deletes)"))
    return 0


def register(sub: Any, add_config_args: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add `status` and `gc` to the `signmae` command line."""
    p = sub.add_parser("status", help="per dataset and stage: done, version, counts, bytes, "
                       "who made it, superseded versions")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_config_args(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("gc", help="remove superseded stage versions (dry run unless --apply)")
    p.add_argument("--apply", action="store_true", help="delete (default: only print)")
    add_config_args(p)
    p.set_defaults(func=cmd_gc)
