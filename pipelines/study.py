"""What a study measured: each (arm, seed)'s read-outs, the arms' means and spreads, the results.

No Prefect here (`flows/study.py` runs the arms as flow runs). Per (arm, seed), from the stage
outputs of its plan: the finetuned classifier's evaluation (`evaluate/metrics.json`), the k-NN
probe of the encoder finetuning started from (`probe/metrics.json`), and the minutes each
training stage took (its record's start and finish). Per arm: the mean and standard deviation
(over seeds, ddof 1) of every read-out, and the hand leakage of its pretraining masks. Results
go to `<out>/results.json`, `results.md` and `results.png`, each written to a temporary name
and renamed.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from signmae_core.config import PipelineConfig, load_config
from signmae_core.config.study import StudyArm, StudyConfig

from . import outputs
from .dag import Plan

READ_OUTS = ("evaluate", "probe")  # the stages a study reads, per (arm, seed)
TIMED = ("pretrain", "finetune", "evaluate", "probe")
# (column, source, path in that source's summary): the figures tabulated per arm
METRICS = (
    ("top1", "evaluate", ("per_instance", "top1")),
    ("top5", "evaluate", ("per_instance", "top5")),
    ("class_top1", "evaluate", ("per_class", "top1")),
    ("handshape", "evaluate", ("class_groups", "handshape", "accuracy")),
    ("movement", "evaluate", ("class_groups", "movement", "accuracy")),
    ("probe_top1", "probe", ("per_instance", "top1")),
    ("probe_top5", "probe", ("per_instance", "top5")),
    ("probe_class_top1", "probe", ("per_class", "top1")),
    ("probe_handshape", "probe", ("class_groups", "handshape", "accuracy")),
    ("probe_movement", "probe", ("class_groups", "movement", "accuracy")),
)
PLOTTED = (("top1", "finetuned Top-1"), ("handshape", "finetuned handshape pairs"),
           ("probe_top1", "k-NN probe Top-1"))


# ---- one (arm, seed) ---------------------------------------------------------------------------
def arm_config(study: StudyConfig, arm: StudyArm, seed: int) -> PipelineConfig:
    """The pipeline config of one (arm, seed)."""
    return load_config(study.config, study.run_overrides(arm, seed))


def arm_stages(plan: Plan) -> list[str]:
    """The stages an arm needs, in DAG order: the read-outs and everything they read under this
    config (no pretraining for an arm that finetunes from scratch), and for an arm that
    pretrains, the mask fields its hand leakage is measured on."""
    wanted = plan.keys(list(READ_OUTS))
    if pretrains(plan.cfg):
        wanted.append(plan.key("masks", plan.cfg.dataset().name))
    return list(dict.fromkeys(key.stage for key in plan.with_upstream(wanted)))


def finished(plan: Plan) -> bool:
    """True when the arm's read-outs are done and up to date (so is everything they read)."""
    return all(plan.state(key).done for key in plan.keys(list(READ_OUTS)))


def pretrains(cfg: PipelineConfig) -> bool:
    """True when the arm's finetuning starts from this config's pretraining."""
    return not cfg.finetune.init_encoder


def _minutes(plan: Plan, stage: str) -> float | None:
    record = plan.record(plan.key(stage))
    if record is None:
        return None
    took = dt.datetime.fromisoformat(record.finished_at) - dt.datetime.fromisoformat(
        record.started_at)
    return round(took.total_seconds() / 60, 2)


def _dig(tree: dict[str, Any], path: Sequence[str]) -> float | None:
    for part in path:
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return None if tree is None else float(tree)


def run_row(plan: Plan, arm: StudyArm, seed: int) -> dict[str, Any]:
    """One (arm, seed)'s read-outs, minutes and versions, from its finished stage outputs."""
    read = {stage: json.loads(plan.store.read_bytes(plan.output(stage).path("metrics.json")))
            for stage in READ_OUTS}
    row: dict[str, Any] = {"arm": arm.name, "seed": seed}
    for column, stage, path in METRICS:
        row[column] = _dig(read[stage], path)
    row["test_clips"] = read["evaluate"]["num_clips"]
    row["classes"] = read["evaluate"]["num_classes"]
    row["floors"] = {name: method["per_instance"].get("top1")
                     for name, method in read["evaluate"]["baselines"]["methods"].items()}
    timed = [s for s in TIMED if s in arm_stages(plan)]
    row["minutes"] = {stage: _minutes(plan, stage) for stage in timed}
    row["versions"] = {stage: plan.version(plan.key(stage)) for stage in timed}
    return row


# ---- hand leakage of an arm's masks ------------------------------------------------------------
def hand_leakage_of(cfg: PipelineConfig, draws: int, seed: int = 0,
                    splits: Sequence[str] | None = None) -> dict[str, float]:
    """The hand leakage of `cfg.masking` over the first dataset's clips of `splits` (None: its
    pretraining splits; empty: every split): `draws` masks per clip on its evaluation view
    (`signmae_core.masking.hand_leakage`). Needs the dataset's decoded clips and mask fields.

    Returns `leakage` (leaked / masked hand tokens), `hand_masked` (masked / all hand tokens),
    `hand_tokens_per_clip` and `clips`."""
    import torch

    from signmae_core.data import ClipDataset, ClipRecord, Sampling
    from signmae_core.masking import Leakage, TokenMasker, hand_leakage
    from signmae_core.models import token_grid

    plan = Plan(cfg)
    dataset = cfg.dataset().name
    reader = outputs.field_reader(plan, dataset)
    wanted = set(cfg.pretrain.splits if splits is None else splits)
    records = [ClipRecord(r["video_id"], r["clip_path"], dataset=dataset)
               for r in outputs.clip_rows(plan, dataset)
               if r["status"] == "ok" and r["video_id"] in reader
               and (not wanted or r["split"] in wanted)]
    data = ClipDataset(records, Sampling.from_config(cfg), fields=reader, train=False)
    fields = torch.from_numpy(np.stack([data.load(i, None)["fields"] for i in range(len(data))]))
    grid = token_grid(cfg.model)
    masker = TokenMasker.from_config(cfg.masking, grid)
    generator = torch.Generator().manual_seed(seed)
    total = Leakage()
    for _ in range(draws):
        draw = masker(fields, generator=generator)
        total = total + hand_leakage(draw.mask, draw.maps.hands, grid)
    return {"leakage": round(total.share, 4), "hand_masked": round(total.hand_masked_share, 4),
            "hand_tokens_per_clip": total.hand_tokens / (draws * max(1, len(records))),
            "clips": len(records)}


# ---- over seeds --------------------------------------------------------------------------------
def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None, int]:
    """Mean, sample standard deviation (None for one value) and count of the known values."""
    known = [v for v in values if v is not None and not math.isnan(v)]
    if not known:
        return None, None, 0
    std = float(np.std(known, ddof=1)) if len(known) > 1 else None
    return float(np.mean(known)), std, len(known)


def summarize(study: StudyConfig, rows: list[dict[str, Any]],
              leakage: dict[str, dict[str, float] | None]) -> list[dict[str, Any]]:
    """Per arm: mean and std of every read-out over its seeds, minutes per seed, leakage, and
    the difference of its mean from its baseline arm's and whether it exceeds the larger std."""
    arms = []
    for arm in study.arms:
        mine = [r for r in rows if r["arm"] == arm.name and not r.get("error")]
        summary: dict[str, Any] = {"arm": arm.name, "description": arm.description,
                                   "seeds": [r["seed"] for r in mine],
                                   "failed": [r["seed"] for r in rows
                                              if r["arm"] == arm.name and r.get("error")]}
        for column, _, _ in METRICS:
            mean, std, _ = mean_std([r[column] for r in mine])
            summary[column] = {"mean": mean, "std": std}
        minutes = [sum(v for v in r["minutes"].values() if v) for r in mine]
        summary["minutes"] = mean_std(minutes)[0]
        summary["leakage"] = leakage.get(arm.name)
        arms.append(summary)
    by_name = {summary["arm"]: summary for summary in arms}
    for arm, summary in zip(study.arms, arms, strict=True):
        base = by_name[study.baseline_of(arm).name]
        summary["baseline"] = base["arm"]
        summary["vs_baseline"] = {
            column: None if summary is base else _separation(summary[column], base[column])
            for column in ("top1", "handshape", "probe_top1")}
    return arms


def _separation(arm: dict[str, float | None], base: dict[str, float | None]
                ) -> dict[str, Any] | None:
    """Difference of means and whether it exceeds the larger of the two standard deviations."""
    if arm["mean"] is None or base["mean"] is None:
        return None
    diff = arm["mean"] - base["mean"]
    spread = max(s for s in (arm["std"], base["std"], 0.0) if s is not None)
    return {"diff": diff, "spread": spread, "beats": bool(diff > spread and spread > 0)}


# ---- the results -------------------------------------------------------------------------------
def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _pct(value: dict[str, float | None] | float | None) -> str:
    if isinstance(value, dict):
        mean, std = value["mean"], value["std"]
        if mean is None:
            return "-"
        return f"{100 * mean:.1f}" + ("" if std is None else f" ± {100 * std:.1f}")
    return "-" if value is None else f"{100 * value:.1f}"


def results_markdown(study: StudyConfig, arms: list[dict[str, Any]], rows: list[dict[str, Any]]
                     ) -> str:
    """The study's tables: per arm (mean ± std over seeds, in %), then per (arm, seed)."""
    base = study.baseline_arm.name
    others = [f"`{a.name}` against `{a.baseline}`" for a in study.arms
              if a.baseline not in (None, base) and a.name != a.baseline]
    against = f"`{base}`" + (f" ({', '.join(others)})" if others else "")
    lines = [f"# Study {study.name}", "",
             f"Config `{study.config}`; arms differ only by their overrides. Mean ± standard "
             f"deviation over seeds, in %; Δ against {against} in points, `*` where it exceeds "
             "the larger standard deviation. Leakage: share of masked hand tokens whose hand is "
             "visible in a neighbouring time slot.", "",
             "| arm | seeds | Top-1 | Top-5 | per-class Top-1 | handshape pairs | movement pairs "
             "| k-NN Top-1 | k-NN handshape | Δ Top-1 | Δ handshape | leakage | minutes |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for a in arms:
        if a["minutes"] is None:  # no seed of this arm finished
            why = f"failed: seeds {a['failed']}" if a["failed"] else "not run"
            lines.append(f"| {a['arm']} | 0 | {why} |")
            continue
        delta = {c: a["vs_baseline"][c] for c in ("top1", "handshape")}
        cells = [f"{100 * d['diff']:+.1f}{'*' if d['beats'] else ''}" if d else "-"
                 for d in delta.values()]
        leak = a["leakage"]["leakage"] if a["leakage"] else None
        lines.append(
            f"| {a['arm']} | {len(a['seeds'])} | {_pct(a['top1'])} | {_pct(a['top5'])} | "
            f"{_pct(a['class_top1'])} | {_pct(a['handshape'])} | {_pct(a['movement'])} | "
            f"{_pct(a['probe_top1'])} | {_pct(a['probe_handshape'])} | {cells[0]} | {cells[1]} | "
            f"{_pct(leak)} | {a['minutes']:.1f} |")
    lines += ["", "| arm | seed | Top-1 | handshape | movement | k-NN Top-1 | minutes "
              "(pretrain / finetune / evaluate / probe) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("error"):
            lines.append(f"| {r['arm']} | {r['seed']} | failed: {r['error']} |")
            continue
        minutes = " / ".join(_blank(r["minutes"].get(s)) for s in TIMED)
        lines.append(f"| {r['arm']} | {r['seed']} | {_pct(r['top1'])} | {_pct(r['handshape'])} "
                     f"| {_pct(r['movement'])} | {_pct(r['probe_top1'])} | {minutes} |")
    floors = next((r["floors"] for r in rows if not r.get("error")), {})
    if floors:
        lines += ["", "Floors on the same test clips: " + ", ".join(
            f"{name} {_pct(value)} %" for name, value in floors.items()) + "."]
    return "\n".join(lines) + "\n"


def _blank(value: object) -> str:
    return "-" if value is None else str(value)


def results_plot(arms: list[dict[str, Any]], path: Path, title: str,
                 chance: float | None = None) -> None:
    """Bars of the plotted read-outs per arm with standard-deviation error bars (none for an
    arm of one seed), and a line at chance Top-1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [a for a in arms if a["top1"]["mean"] is not None]
    width = 0.8 / len(PLOTTED)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(shown) + 2), 4))
    x = np.arange(len(shown))
    for i, (column, label) in enumerate(PLOTTED):
        means = [100 * (a[column]["mean"] or 0.0) for a in shown]
        stds = [np.nan if a[column]["std"] is None else 100 * a[column]["std"] for a in shown]
        ax.bar(x + (i - (len(PLOTTED) - 1) / 2) * width, means, width, yerr=stds, capsize=3,
               label=label)
    if chance is not None:
        ax.axhline(100 * chance, color="grey", linestyle="--", linewidth=1,
                   label="chance Top-1")
    ax.set_xticks(x, [f"{a['arm']}\n(n={len(a['seeds'])})" for a in shown])
    ax.set_ylabel("accuracy, %")
    ax.set_ylim(0, 100)
    ax.set_title(title, pad=24)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=len(PLOTTED) + 1, fontsize=8,
              frameon=False)  # above the bars, never over them
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def write_results(study: StudyConfig, rows: list[dict[str, Any]], arms: list[dict[str, Any]]
                  ) -> Path:
    """results.json, results.md and results.png in the study's folder; returns the folder."""
    out = study.out_dir()
    out.mkdir(parents=True, exist_ok=True)
    payload = {"study": study.model_dump(mode="json"), "arms": arms, "runs": rows}
    _write_atomic(out / "results.json", (json.dumps(payload, indent=1) + "\n").encode())
    _write_atomic(out / "results.md", results_markdown(study, arms, rows).encode())
    classes = next((r["classes"] for r in rows if not r.get("error")), None)
    results_plot(arms, out / "results.png", f"study {study.name}",
                 1 / classes if classes else None)
    return out
