"""The README's main command (`make demo` = `signmae demo`) on the tiny CI config.

The stages are listed here by hand (not read from the registry), so deleting or renaming a stage
fails the test; the outputs each stage owes are opened and checked, not only counted.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pipelines.cli import main

DATA_STAGES = ["ingest", "decode", "extract", "masks", "shard", "shard_fields"]
TRAIN_STAGES = ["pretrain", "finetune", "evaluate", "probe"]
CLASSES = 3  # ci_tiny: synth.classes
TEST_CLIPS = 3  # ci_tiny: 2 signers x 3 classes x 1 rep, one signer held out


def _only_version(folder: Path) -> Path:
    versions = [p for p in folder.iterdir() if (p / "_stage.json").is_file()]
    assert len(versions) == 1, versions
    return versions[0]


def _check_weights(folder: Path, name: str) -> None:
    weights = load_file(str(folder / f"{name}.safetensors"))
    assert weights and all(torch.isfinite(t).all() for t in weights.values())
    assert json.loads((folder / f"{name}.json").read_text())


def _check_shards(folder: Path, clips: int) -> list[str]:
    """The shard set's index against its files (names, sizes, sha256, samples); its shards."""
    index = json.loads((folder / "index.json").read_text())
    assert index["samples"] == clips
    for entry in index["shards"]:
        data = (folder / entry["path"]).read_bytes()
        assert len(data) == entry["bytes"]
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            keys = {m.name.split(".", 1)[0] for m in tar.getmembers()}
        assert len(keys) == entry["samples"]
    return sorted(entry["path"] for entry in index["shards"])


def _check_metrics(evaluate: Path) -> dict:
    metrics = json.loads((evaluate / "metrics.json").read_text())
    for key in ("num_clips", "num_classes", "num_classes_tested", "per_instance", "per_class",
                "per_class_accuracy", "confusion_matrix", "most_confused", "setup"):
        assert key in metrics, key
    assert metrics["num_clips"] == TEST_CLIPS and metrics["num_classes"] == CLASSES
    for group in ("per_instance", "per_class"):
        assert set(metrics[group]) == {"top1", "top5"}
        assert all(0 <= v <= 1 for v in metrics[group].values())
        assert metrics[group]["top1"] <= metrics[group]["top5"]
    assert len(metrics["per_class_accuracy"]) == CLASSES
    matrix = metrics["confusion_matrix"]
    assert len(matrix) == CLASSES and sum(map(sum, matrix)) == TEST_CLIPS
    return metrics


def _check_hand_size(metrics: dict, extract: Path, video_ids: set[str], tokens_across: float
                     ) -> None:
    """The report's hand size against the test clips' part maps, measured here with numpy: a
    hand's box per frame (labels 3 left, 4 right), as a share of the map, in tokens."""
    from signmae_core.extract import iter_clips

    sizes = []
    for clip in iter_clips(extract, video_ids):
        for frame in clip.part_maps:
            for label in (3, 4):
                ys, xs = np.nonzero(frame == label)
                if len(xs):
                    sizes.append(((xs.max() - xs.min() + 1) / frame.shape[1] * tokens_across,
                                  (ys.max() - ys.min() + 1) / frame.shape[0] * tokens_across))
    sizes = np.array(sizes)
    hands = metrics["hand_size"]
    assert hands["hands"] == len(sizes) > 0
    assert hands["median_w"] == pytest.approx(np.median(sizes[:, 0]), abs=1e-3)
    assert hands["median_h"] == pytest.approx(np.median(sizes[:, 1]), abs=1e-3)
    assert hands["share_2x2"] == pytest.approx(((sizes >= 2).all(axis=1)).mean())
    assert "hands at the model input" in metrics["setup"]


@pytest.mark.slow
def test_demo_runs_every_stage_writes_what_each_owes_and_reruns_as_skips(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    ray_local: None,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--config", "ci_tiny"]) == 0
    out = capsys.readouterr().out
    assert "[synth]" in out
    for stage in DATA_STAGES:
        assert f"[{stage}] synthetic:" in out, out
    for stage in TRAIN_STAGES:
        assert f"[{stage}] " in out, out
    assert "demo finished: every stage ran" in out
    assert re.search(r"^\[prefect\] flow run \S+: Completed$", out, re.M), out  # a flow run
    assert re.search(r"^per-instance +\d+\.\d %", out, re.M), out  # Top-1 beside chance
    assert re.search(r"^report: .+/_train/evaluate/\w+/report\.md$", out, re.M), out

    artifacts = tmp_path / "runs/ci_tiny/artifacts"
    for stage in DATA_STAGES:
        record = json.loads((_only_version(artifacts / "synthetic" / stage) / "_stage.json")
                            .read_text())
        assert record["counts"]["ok"] == 6 and record["counts"].get("failed", 0) == 0, record

    shards = _check_shards(_only_version(artifacts / "synthetic/shard"), 6)
    assert _check_shards(_only_version(artifacts / "synthetic/shard_fields"), 6) == shards

    pretrain = _only_version(artifacts / "_train/pretrain")
    _check_weights(pretrain / "model", "model")
    _check_weights(pretrain / "encoder", "encoder")
    finetune = _only_version(artifacts / "_train/finetune")
    _check_weights(finetune / "model", "model")
    class_names = json.loads((finetune / "model/model.json").read_text())["class_names"]
    assert len(class_names) == CLASSES

    evaluate = _only_version(artifacts / "_train/evaluate")
    metrics = _check_metrics(evaluate)
    report = (evaluate / "report.md").read_text()
    assert all(name in report for name in class_names)
    assert f"{metrics['per_instance']['top1']:.4f}" in report  # the report's tables: 4 places
    with open(evaluate / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == TEST_CLIPS and len({r["video_id"] for r in rows}) == TEST_CLIPS
    assert all(r["label"] in class_names for r in rows)
    _check_hand_size(metrics, _only_version(artifacts / "synthetic/extract"),
                     {r["video_id"] for r in rows}, tokens_across=64 / 16)  # ci_tiny's model
    probed = json.loads((_only_version(artifacts / "_train/probe") / "metrics.json").read_text())
    assert probed["num_clips"] == TEST_CLIPS and 0 <= probed["per_instance"]["top1"] <= 1

    # a second run finds everything up to date: no record is rewritten, and it says so
    before = {p: p.stat().st_mtime_ns for p in artifacts.rglob("_stage.json")}
    assert main(["demo", "--config", "ci_tiny"]) == 0
    assert {p: p.stat().st_mtime_ns for p in artifacts.rglob("_stage.json")} == before
    again = capsys.readouterr().out
    assert again.count(" up to date (version") == len(DATA_STAGES) + len(TRAIN_STAGES)
    assert len(re.findall(r" Skipped +\w{12} ", again)) == len(DATA_STAGES) + len(TRAIN_STAGES)

    assert main(["plan", "--config", "ci_tiny", "--json"]) == 0
    states = {r["stage"]: r["state"] for r in json.loads(capsys.readouterr().out)}
    assert states == {s: "done" for s in DATA_STAGES + TRAIN_STAGES}
