"""Reconstruction figures, drawn by the pipeline's own figure function inside the pretraining
stage, never change the run: with stochastic depth on (`model.drop_path > 0`, drawn from the
global torch RNG while training) a run that draws a figure after every step ends with the same
losses and weights as one that draws only the last. A figure that put the model in training mode
or drew from the global RNG would shift every later drop-path draw, and the runs would differ."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_runs import assert_same_run, copy_store, make_tiny_data, metrics_rows, run_folder

from pipelines.cli import main

STEPS = 3  # 3 training clips, batch 1
TRAIN = [
    "masking.sampler=tube", "model.drop_path=0.3", "pretrain.batch_size=1", "pretrain.epochs=1",
    "pretrain.num_workers=1", "pretrain.device=cpu", "pretrain.recon_samples=1",
]


@pytest.mark.slow
def test_figures_after_every_step_leave_the_run_unchanged(tmp_path: Path, ray_local: None) -> None:
    args = make_tiny_data(tmp_path / "data", ["ingest", "decode", "shard"], TRAIN)
    runs = {}
    for every in (0, 1):  # 0: a figure at the last step only
        store = tmp_path / f"every-{every}"
        command = ["run", "pretrain", *args, *copy_store(tmp_path / "data" / "store", store)]
        assert main([*command, "--set", f"pretrain.recon_every={every}"]) == 0
        runs[every] = run_folder(store, "pretrain")

    def figures(run: Path) -> list[str]:
        return sorted(p.name for p in (run / "recon").iterdir())

    assert figures(runs[0]) == [f"step_{STEPS:08d}.png"]
    assert figures(runs[1]) == [f"step_{s:08d}.png" for s in range(1, STEPS + 1)]
    assert all((runs[1] / "recon" / name).read_bytes()[:4] == b"\x89PNG" for name in
               figures(runs[1]))
    assert [r["step"] for r in metrics_rows(runs[1])] == list(range(1, STEPS + 1))
    assert_same_run(runs[1], runs[0])
