"""The evaluation report: metrics.json, report.md (with PNG plots beside it) and report.html.

The HTML is self-contained: every plot is embedded as a base64 PNG and the style sheet is inline,
so the one file can be mailed, attached to a Prefect artifact or opened offline. The Markdown
links the same plots as files under `plots/`. Both are rendered from one list of blocks.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MAX_LABELLED_CLASSES = 40  # beyond this, plots drop per-class tick labels


# ---- blocks ------------------------------------------------------------------------------------
@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Paragraph:
    text: str


@dataclass
class Table:
    headers: list[str]
    rows: list[list[Any]]


@dataclass
class Image:
    name: str  # file name under plots/
    png: bytes
    caption: str


Block = Heading | Paragraph | Table | Image


# ---- plots -------------------------------------------------------------------------------------
def _figure_png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buffer.getvalue()


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_loss_curves(curves: dict[str, list[dict[str, Any]]]) -> bytes | None:
    """One panel per run (e.g. pretrain, finetune): loss against step from metrics rows."""
    runs = {name: rows for name, rows in curves.items() if any("loss" in r for r in rows)}
    if not runs:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 3.2), squeeze=False)
    for ax, (name, rows) in zip(axes[0], runs.items(), strict=True):
        points = [(r["step"], r["loss"]) for r in rows if r.get("loss") is not None]
        steps, losses = zip(*points, strict=True) if points else ((), ())
        ax.plot(steps, losses, lw=1.2)
        ax.set_title(f"{name} loss")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    return _figure_png(fig)


def plot_per_class_accuracy(per_class: dict[str, float | None]) -> bytes:
    """Bar chart of per-class Top-1 (sorted by accuracy when there are many classes)."""
    plt = _pyplot()
    names = [n for n, v in per_class.items() if v is not None]
    values = np.array([per_class[n] for n in names], dtype=float)
    many = len(names) > MAX_LABELLED_CLASSES
    if many:
        order = np.argsort(-values, kind="stable")
        names, values = [names[i] for i in order], values[order]
    fig, ax = plt.subplots(figsize=(min(14, 2 + 0.3 * len(names)) if not many else 10, 3.2))
    ax.bar(np.arange(len(values)), values, width=0.8, color="#4878a8")
    ax.set_ylim(0, 1)
    ax.set_ylabel("top-1")
    if many:
        ax.set_xlabel(f"{len(names)} classes, sorted by accuracy")
        ax.set_xticks([])
    else:
        ax.set_xticks(np.arange(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_title("per-class top-1 accuracy")
    ax.grid(axis="y", alpha=0.3)
    return _figure_png(fig)


def plot_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str]) -> bytes:
    """The confusion matrix, rows normalized to the true class's clips."""
    plt = _pyplot()
    matrix = np.asarray(matrix, dtype=float)
    totals = matrix.sum(axis=1, keepdims=True)
    normalized = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    size = min(12, 3 + 0.25 * len(class_names))
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(normalized, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if len(class_names) <= MAX_LABELLED_CLASSES:
        ticks = np.arange(len(class_names))
        ax.set_xticks(ticks, class_names, rotation=90, fontsize=7)
        ax.set_yticks(ticks, class_names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix (row-normalized)")
    return _figure_png(fig)


# ---- rendering ---------------------------------------------------------------------------------
def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "-" if value is None else str(value)


def render_markdown(title: str, blocks: list[Block]) -> str:
    """Markdown with images linked as `plots/<name>`."""
    lines = [f"# {title}", ""]
    for block in blocks:
        if isinstance(block, Heading):
            lines += [f"{'#' * block.level} {block.text}", ""]
        elif isinstance(block, Paragraph):
            lines += [block.text, ""]
        elif isinstance(block, Table):
            lines.append("| " + " | ".join(block.headers) + " |")
            lines.append("|" + "---|" * len(block.headers))
            for row in block.rows:
                cells = (_cell(v).replace("|", "\\|") for v in row)
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
        elif isinstance(block, Image):
            lines += [f"![{block.caption}](plots/{block.name})", ""]
    return "\n".join(lines)


_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px}
th{background:#f0f0f0}img{max-width:100%;display:block;margin:0.5em 0}
figcaption{color:#666;font-size:0.9em;margin-bottom:1.5em}
"""


def render_html(title: str, blocks: list[Block]) -> str:
    """One self-contained HTML page: inline CSS, images as data URIs."""
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
    ]
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"<h{block.level}>{esc(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            parts.append(f"<p>{esc(block.text)}</p>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{esc(h)}</th>" for h in block.headers)
            body = "".join(
                "<tr>" + "".join(f"<td>{esc(_cell(v))}</td>" for v in row) + "</tr>"
                for row in block.rows
            )
            parts.append(f"<table><tr>{head}</tr>{body}</table>")
        elif isinstance(block, Image):
            data = base64.b64encode(block.png).decode("ascii")
            parts.append(
                f'<figure><img alt="{esc(block.caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{esc(block.caption)}</figcaption></figure>"
            )
    parts.append("</body></html>")
    return "\n".join(parts)


# ---- within-group accuracy and the baselines -----------------------------------------------------
def group_table(class_groups: dict[str, dict[str, Any]]) -> Table:
    """Per kind of class group: accuracy, test clips (trials), groups, chance."""
    return Table(
        ["kind", "accuracy", "clips", "groups", "chance"],
        [[kind, g["accuracy"], g["trials"], g["groups"], g["chance"]]
         for kind, g in class_groups.items()],
    )


def comparison_table(baselines: dict[str, Any], model: dict[str, Any] | None = None) -> Table:
    """One row per method (the model first when given, chance last): per-instance Top-k,
    per-class Top-1 and the within-group accuracy of each kind of class group."""
    methods = dict(baselines["methods"])
    rows_from = ({"model": model} if model else {}) | methods
    first = next(iter(rows_from.values()))
    keys = sorted(first["per_instance"], key=lambda k: int(k[3:]))
    kinds = list(first.get("class_groups", {}))
    headers = ["method", *[f"Top-{k[3:]}" for k in keys], "per-class Top-1",
               *[f"{kind} groups" for kind in kinds]]
    rows = [
        [name, *[m["per_instance"][k] for k in keys], m["per_class"].get("top1"),
         *[m.get("class_groups", {}).get(kind, {}).get("accuracy") for kind in kinds]]
        for name, m in rows_from.items()
    ]
    classes = baselines["num_classes"]
    rows.append(["chance", *[min(int(k[3:]), classes) / classes for k in keys], 1 / classes,
                 *[first["class_groups"][kind]["chance"] for kind in kinds]])
    return Table(headers, rows)


def _groups_and_baselines(metrics: dict[str, Any]) -> list[Block]:
    blocks: list[Block] = []
    if metrics.get("class_groups"):
        blocks += [
            Heading("Within-group accuracy"),
            group_table(metrics["class_groups"]),
            Paragraph("For each test clip whose class is in a declared group of classes "
                      "(class_groups.json; e.g. minimal pairs that differ only in handshape), "
                      "is the highest-scoring class of that group the true one? Chance is the "
                      "mean of 1 / group size; a clip whose class is in two groups of one kind "
                      "counts once per group."),
        ]
    baselines = metrics.get("baselines")
    if baselines:
        blocks += [
            Heading("Floors and baselines"),
            comparison_table(baselines, metrics),
            Paragraph(f"Same test clips, same metrics; {baselines['train_clips']} training "
                      "clips as gallery or training set. " + " ".join(
                          f"{name}: {m['description']} ({m['seconds']:.1f} s)."
                          for name, m in baselines["methods"].items())),
        ]
    return blocks


# ---- the report --------------------------------------------------------------------------------
def report_blocks(
    metrics: dict[str, Any],
    class_names: Sequence[str],
    curves: dict[str, list[dict[str, Any]]] | None = None,
    reconstructions: Sequence[tuple[str, bytes]] = (),
    setup: dict[str, Any] | None = None,
) -> list[Block]:
    """The report's content: summary, setup, plots, worst classes, confused pairs."""
    blocks: list[Block] = [Heading("Summary")]
    keys = sorted(metrics["per_instance"], key=lambda k: int(k[3:]))
    blocks.append(
        Table(
            ["", *[k.replace("top", "Top-") for k in keys]],
            [
                ["per-instance", *[metrics["per_instance"][k] for k in keys]],
                ["per-class", *[metrics["per_class"][k] for k in keys]],
            ],
        )
    )
    blocks.append(
        Paragraph(
            f"{metrics['num_clips']} test clips, {metrics['num_classes_tested']} of "
            f"{metrics['num_classes']} classes present. Per-class = mean of the per-class "
            "accuracies over the classes present."
        )
    )
    blocks += _groups_and_baselines(metrics)
    if setup:
        rows = [[name, value] for name, value in setup.items()]
        blocks += [Heading("Setup"), Table(["setting", "value"], rows)]
    loss_png = plot_loss_curves(curves or {})
    if loss_png is not None:
        blocks += [Heading("Training"), Image("loss.png", loss_png, "training loss per step")]
    per_class = metrics["per_class_accuracy"]
    blocks += [
        Heading("Per-class accuracy"),
        Image("per_class_accuracy.png", plot_per_class_accuracy(per_class), "per-class top-1"),
    ]
    tested = sorted(
        ((n, v) for n, v in per_class.items() if v is not None), key=lambda nv: (nv[1], nv[0])
    )
    if tested:
        blocks += [
            Paragraph("Lowest per-class top-1:"),
            Table(["class", "top-1"], [[n, v] for n, v in tested[:10]]),
        ]
    if metrics["most_confused"]:
        blocks += [
            Heading("Most confused pairs"),
            Table(
                ["true", "predicted", "clips", "share of true"],
                [
                    [p["true"], p["predicted"], p["count"], p["share_of_true"]]
                    for p in metrics["most_confused"]
                ],
            ),
        ]
    matrix = np.asarray(metrics["confusion_matrix"])
    blocks += [
        Heading("Confusion matrix"),
        Image("confusion_matrix.png", plot_confusion_matrix(matrix, class_names), "confusion"),
    ]
    if reconstructions:
        blocks.append(Heading("Reconstructions"))
        for i, (caption, png) in enumerate(reconstructions):
            blocks.append(Image(f"recon_{i:02d}.png", png, caption))
    return blocks


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_report(
    out_dir: str | Path,
    metrics: dict[str, Any],
    class_names: Sequence[str],
    curves: dict[str, list[dict[str, Any]]] | None = None,
    reconstructions: Sequence[tuple[str, bytes]] = (),
    setup: dict[str, Any] | None = None,
    title: str = "SignMAE evaluation",
) -> dict[str, Path]:
    """Write metrics.json, report.md, plots/*.png and report.html into `out_dir`.

    `curves` maps a run name to its metrics rows (`{"step", "loss", ...}`); `reconstructions`
    are (caption, PNG bytes). Returns the written paths by kind.
    """
    out = Path(out_dir)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    blocks = report_blocks(metrics, class_names, curves, reconstructions, setup)
    written: dict[str, Path] = {}
    for block in blocks:
        if isinstance(block, Image):
            _write_atomic(out / "plots" / block.name, block.png)
    written["metrics"] = out / "metrics.json"
    _write_atomic(written["metrics"], json.dumps(metrics, indent=2).encode("utf-8"))
    written["markdown"] = out / "report.md"
    _write_atomic(written["markdown"], render_markdown(title, blocks).encode("utf-8"))
    written["html"] = out / "report.html"
    _write_atomic(written["html"], render_html(title, blocks).encode("utf-8"))
    return written
