"""The prepared GPU check of the shard input path (`bench/gpu_shards_check.py`) cannot rot: its
`--smoke` mode (CPU, tiny model, a couple of steps) runs on shards made by its own
`--make-shards` (the synthetic signer through the real ingest, decode and shard stages), in a
process where the packages a GPU machine lacks cannot be imported.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_shards_check.py"
ABSENT_THERE = ("pydantic", "pyarrow", "webdataset", "av", "ray", "prefect", "cv2")
BLOCKED_RUN = f"""
import runpy, sys
class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {ABSENT_THERE!r}:
            raise ImportError(f"{{name}} is not installed on the GPU machine")
sys.meta_path.insert(0, Absent())
sys.argv = [{str(SCRIPT)!r}, *sys.argv[1:]]
runpy.run_path({str(SCRIPT)!r}, run_name="__main__")
"""


def _script():
    spec = importlib.util.spec_from_file_location("gpu_shards_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_the_gpu_check_runs_on_the_cpu_without_the_pipeline_stack(
    tmp_path: Path, ray_local: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    shards = tmp_path / "shards"
    check = _script()
    check.make_shards(shards, Namespace(classes=3, signers=2, reps=1, stored=16, size=64))
    assert (shards / "index.json").is_file() and list((shards / "shards").glob("*.tar"))
    out = tmp_path / "result.json"
    done = subprocess.run(
        [sys.executable, "-c", BLOCKED_RUN, "--smoke", "--shards", str(shards), "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["clips"] == 6 and result["device"] == "cpu"
    for name in (
        "decoded_clips_per_s",
        "views_per_s_device",
        "views_per_s_loader",
        "step_s_random",
        "step_s_loader",
        "step_s_overlap",
        "ratio_loader_vs_random",
        "views_per_s_training",
    ):
        assert math.isfinite(result[name]) and result[name] > 0, name
    assert "loader-fed step vs random tensors" in done.stdout
