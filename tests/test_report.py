"""The evaluation report: files written, HTML self-contained, figures present and consistent."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np

from signmae_core.eval.metrics import classification_metrics
from signmae_core.eval.report import write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _tiny_png() -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1, 1))
    ax.imshow(np.zeros((4, 4)))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def test_report_files_are_written_and_the_html_is_self_contained(tmp_path: Path) -> None:
    classes = ["hello", "thanks", "<b>yes</b>"]  # markup in a name must be escaped
    labels = np.array([0, 0, 0, 1, 2])
    scores = np.array(
        [[0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.6, 0.1, 0.3]]
    )
    metrics = classification_metrics(scores, labels, classes, topk=[1, 5])
    curves = {
        "pretrain": [{"step": s, "loss": 1.0 / s} for s in range(1, 6)],
        "finetune": [{"step": s, "loss": 2.0 / s, "acc": 0.1 * s} for s in range(1, 4)],
    }
    written = write_report(
        tmp_path, metrics, classes, curves=curves,
        reconstructions=[("tube sampler", _tiny_png())], setup={"views": 2},
    )

    assert json.loads(written["metrics"].read_text()) == metrics
    assert metrics["per_instance"]["top1"] == 3 / 5

    markdown = written["markdown"].read_text()
    assert "| per-instance | 0.6000 | 1.0000 |" in markdown
    linked = re.findall(r"!\[[^\]]*\]\((plots/[^)]+)\)", markdown)
    assert {Path(p).name for p in linked} == {
        "loss.png", "per_class_accuracy.png", "confusion_matrix.png", "recon_00.png"
    }
    for rel in linked:
        assert (tmp_path / rel).read_bytes().startswith(PNG_MAGIC)

    page = written["html"].read_text()
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == 4
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_MAGIC)
    # nothing outside the file: no links, scripts, style sheets or URLs other than data URIs
    assert not re.search(r"<(link|script)\b|href=|url\(|https?://", page)
    assert "&lt;b&gt;yes&lt;/b&gt;" in page and "<b>yes</b>" not in page
    assert not list(tmp_path.rglob(".tmp-*"))


def test_many_classes_render_without_tick_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    classes = [f"sign{i:03d}" for i in range(120)]
    labels = rng.integers(0, 120, size=300)
    scores = rng.random((300, 120))
    metrics = classification_metrics(scores, labels, classes)
    written = write_report(tmp_path, metrics, classes)
    page = written["html"].read_text()
    assert page.count("data:image/png;base64,") == 2  # per-class accuracy + confusion matrix
    assert "Most confused pairs" in page


def test_report_shows_within_group_accuracy_and_the_baselines_beside_the_model(
    tmp_path: Path,
) -> None:
    classes = ["a", "b", "c", "d"]
    labels = np.array([0, 1, 2, 3])
    scores = np.array([[0.1, 0.2, 0.0, 0.7], [0.1, 0.2, 0.0, 0.7],
                       [0.3, 0.0, 0.2, 0.5], [0.0, 0.0, 0.0, 1.0]])
    groups = [("handshape", np.array([0, 1])), ("movement", np.array([0, 2]))]
    metrics = classification_metrics(scores, labels, classes, topk=[1], groups=groups)
    baseline = {"per_instance": {"top1": 0.5}, "per_class": {"top1": 0.5}, "num_clips": 4,
                "class_groups": {"handshape": {"accuracy": 1.0}, "movement": {"accuracy": 0.0}},
                "seconds": 0.1, "description": "a floor"}
    metrics["baselines"] = {"train_clips": 8, "num_classes": 4, "methods": {"floor": baseline}}
    markdown = write_report(tmp_path, metrics, classes)["markdown"].read_text()
    # the model: top-1 1/4 (only d); handshape {a, b}: a -> b miss, b -> b hit -> 1/2;
    # movement {a, c}: a -> a hit, c -> a miss -> 1/2
    assert "| handshape | 0.5000 | 2 | 1 | 0.5000 |" in markdown
    assert "| movement | 0.5000 | 2 | 1 | 0.5000 |" in markdown
    assert "| model | 0.2500 | 0.2500 | 0.5000 | 0.5000 |" in markdown
    assert "| floor | 0.5000 | 0.5000 | 1.0000 | 0.0000 |" in markdown
    assert "| chance | 0.2500 | 0.2500 | 0.5000 | 0.5000 |" in markdown
