"""The whole DAG with an object-store root: `store.root=s3://...` changes nothing else.

Every stage (ingest -> evaluate, `ci_tiny`, oracle extraction, one training step each) runs
twice on the same synthetic data: once into a local store root, once into a local S3-compatible
server (moto on 127.0.0.1, the `s3_server` fixture of tests/test_shards.py). Expectations are
read independently of the store code: the S3 store is downloaded with `pyarrow.fs.copy_files`
and the data stages' outputs are compared by the golden test's content digests (extraction rows
included); the training records' files (sizes, safetensors sha256) and the evaluation's
metrics and predictions must be the same too.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import pytest
from test_golden_outputs import output_digests
from test_shards import s3_server  # noqa: F401 - the module-scoped moto server fixture

from pipelines.cli import main
from signmae_core.config import load_config

STAGES = ["ingest", "decode", "extract", "masks", "shard", "shard_fields",
          "pretrain", "finetune", "evaluate"]
TRAINING = ("pretrain", "finetune")
ENCODER_INFO = "encoder/encoder.json"  # names the model folder it came from: paths differ
VOLATILE = (ENCODER_INFO, "metrics.jsonl")  # metric lines carry wall-clock times and speeds


def _args(store: str | Path, data: Path) -> list[str]:
    sets = [f"store.root={store}", f"datasets.0.root={data}", "extract.backend=oracle"]
    return ["-c", "ci_tiny", *[a for s in sets for a in ("--set", s)]]


def _only_folder(stage_dir: Path) -> Path:
    found = [p for p in stage_dir.iterdir() if (p / "_stage.json").is_file()]
    assert len(found) == 1, found
    return found[0]


def _record(store: Path, dataset: str, stage: str) -> dict[str, Any]:
    return json.loads((_only_folder(store / dataset / stage) / "_stage.json").read_text())


def _losses(store: Path, stage: str) -> list[tuple[int, float]]:
    """(step, loss) of every metric line of a training run."""
    path = _only_folder(store / "_train" / stage) / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


def _evaluation(store: Path) -> tuple[dict[str, Any], list[list[str]]]:
    """The evaluate stage's metrics (timings left out) and its predictions table."""
    folder = _only_folder(store / "_train" / "evaluate")
    metrics = json.loads((folder / "metrics.json").read_text())
    baselines = metrics.pop("baselines")
    metrics["baselines"] = {name: m["per_instance"] for name, m in baselines["methods"].items()}
    with open(folder / "predictions.csv", newline="", encoding="utf-8") as handle:
        return metrics, list(csv.reader(handle))


@pytest.mark.slow
def test_every_stage_runs_on_an_object_store_root_and_makes_what_a_local_root_makes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ray_local: None,
    s3_server: str,  # noqa: F811
) -> None:
    from signmae_core.synth import ensure_generated

    monkeypatch.chdir(tmp_path)  # an object-store run logs under ./runs/_logs
    data, local = tmp_path / "synthetic", tmp_path / "local"
    ensure_generated(data, load_config("ci_tiny").synth)
    # Credentials in the URI travel with the pickled filesystem to Ray workers started before
    # the server's environment variables were set.
    root = f"s3://testing:testing@bucket/dag?{s3_server}"
    assert main(["run", *STAGES, *_args(local, data)]) == 0
    assert main(["run", *STAGES, *_args(root, data)]) == 0

    fs, base = pafs.FileSystem.from_uri(root)
    names = [i.base_name for i in fs.get_file_info(pafs.FileSelector(base, recursive=True))]
    assert not [n for n in names if n.startswith(".tmp-")]
    remote = tmp_path / "remote"
    pafs.copy_files(base, str(remote), source_filesystem=fs)

    expected = output_digests(local)
    assert any(name.startswith("extract/parts/") for name in expected)
    assert output_digests(remote) == expected
    for stage in TRAINING:  # the same files: model, encoder, figures, metrics, checkpoint
        made = [_record(s, "_train", stage) for s in (local, remote)]
        files = [[o for o in m["outputs"] if o["path"] not in VOLATILE] for m in made]
        assert files[0] and files[0] == files[1]
        assert _losses(local, stage) == _losses(remote, stage) != []
        assert made[0]["counts"]["steps"] == made[1]["counts"]["steps"] >= 1
    encoders = [json.loads((_only_folder(s / "_train" / "pretrain") / ENCODER_INFO).read_text())
                for s in (local, remote)]
    folder = _only_folder(remote / "_train" / "pretrain").name
    assert encoders[1]["source"].pop("folder") == f"{base}/_train/pretrain/{folder}/model"
    assert encoders[0]["source"].pop("folder") == str(local / "_train/pretrain" / folder / "model")
    assert encoders[0] == encoders[1]
    assert any(o["path"].startswith("recon/")
               for o in _record(remote, "_train", "pretrain")["outputs"])
    local_metrics, local_predictions = _evaluation(local)
    remote_metrics, remote_predictions = _evaluation(remote)
    assert remote_metrics["per_instance"] == local_metrics["per_instance"]
    assert remote_metrics == local_metrics
    assert remote_predictions == local_predictions and len(local_predictions) > 1
