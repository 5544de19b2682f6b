"""Stage-level test helpers: the `signmae` command in a subprocess, paused at a named point and
killed there for real (SIGKILL); the tiny config's data made once; a training run's outputs.

    python tests/cli_runs.py MARKER POINT [signmae arguments...]

runs `pipelines.cli.main(arguments)` (what the `signmae` command runs) after installing one pause
point; at the point the process writes MARKER (JSON: what it saw there) and sleeps until it is
killed. The points are hooks on what the code under test must call anyway, not seams in it;
they act in the command's own process only (training with `num_workers=1`; not in Ray tasks or
Ray Train workers, which run elsewhere):

- `backward:N`   after the N-th backward pass (`torch.autograd.backward`): with `grad_accum=A`,
                 N = (s - 1) * A + m stops inside optimizer step s, after its micro-batch m < A;
- `rename:NAME`  just before a `.tmp-*` folder is renamed to NAME (`os.replace` / `os.rename`),
                 e.g. a checkpoint folder written in full but not in place yet;
- `progress:N`   after a stage's N-th progress update (`pipelines.progress.Progress.update`),
                 e.g. the masks stage with N field files finished and no record written;
- `sample:N`     after the N-th sample a shard writer added (`ShardWriter.add`, flushed), e.g.
                 in the middle of a shard;
- `none`         no pause: the command as it is.

With `flow_args(**parameters)` in place of the `signmae` arguments the subprocess runs the
`signmae-pipeline` Prefect flow with those parameters instead (a flow run against the server
`PREFECT_API_URL` names), exiting 0 when the flow run ends Completed:

    python tests/cli_runs.py MARKER POINT --flow '{"config": "ci_tiny", "stages": ["ingest"]}'
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
_REPLACE = os.replace  # the real one: the marker is written with it, whatever is hooked later
PAUSE_S = 600.0  # how long a paused process waits to be killed before it exits on its own
UNKILLED = 97  # the exit status of a paused process nobody killed


# ---- in the subprocess --------------------------------------------------------------------------
def _pause(marker: Path, point: str, **seen: Any) -> None:
    """Write the marker atomically, then sleep until killed."""
    tmp = marker.with_name(f".{marker.name}.tmp")
    tmp.write_text(json.dumps({"point": point, "pid": os.getpid(), **seen}), encoding="utf-8")
    _REPLACE(tmp, marker)
    time.sleep(PAUSE_S)
    os._exit(UNKILLED)


def _after_backward(marker: Path, point: str, target: int) -> None:
    import torch.autograd

    real, calls = torch.autograd.backward, [0]

    def backward(*args: Any, **kwargs: Any) -> Any:
        out = real(*args, **kwargs)
        calls[0] += 1
        if calls[0] == target:
            _pause(marker, point, backward_passes=calls[0])
        return out

    torch.autograd.backward = backward


def _before_rename(marker: Path, point: str, name: str) -> None:
    def hooked(real: Any) -> Any:
        def rename(src: Any, dst: Any, *args: Any, **kwargs: Any) -> Any:
            source, target = Path(os.fsdecode(src)), Path(os.fsdecode(dst))
            if target.name == name and source.name.startswith(".tmp-") and source.is_dir():
                files = sorted(p.name for p in source.iterdir())
                _pause(marker, point, tmp=str(source), final=str(target), files=files)
            return real(src, dst, *args, **kwargs)

        return rename

    os.replace, os.rename = hooked(os.replace), hooked(os.rename)


def _after_progress(marker: Path, point: str, target: int) -> None:
    from pipelines.progress import Progress

    real, calls = Progress.update, [0]

    def update(self: Progress, status: str) -> None:
        real(self, status)
        calls[0] += 1
        if calls[0] == target:
            _pause(marker, point, updates=calls[0], counts=dict(self.counts))

    Progress.update = update


def _after_sample(marker: Path, point: str, target: int) -> None:
    from signmae_core.shards import ShardWriter

    real, calls = ShardWriter.add, [0]

    def add(self: ShardWriter, key: str, members: Any) -> None:
        real(self, key, members)
        calls[0] += 1
        if calls[0] == target:
            self._handle.flush()  # what was written so far is in the file when it is killed
            _pause(marker, point, samples=calls[0], key=key)

    ShardWriter.add = add


def _install(marker: Path, point: str) -> None:
    kind, _, arg = point.partition(":")
    hooks = {"backward": _after_backward, "progress": _after_progress, "sample": _after_sample}
    if kind in hooks:
        hooks[kind](marker, point, int(arg))
    elif kind == "rename":
        _before_rename(marker, point, arg)
    elif kind != "none":
        raise SystemExit(f"unknown pause point {point!r}")


# ---- in the test --------------------------------------------------------------------------------
def cli_env(**extra: str) -> dict[str, str]:
    """The test session's environment (HOME and caches set by conftest) with this checkout first
    on the import path."""
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT), **extra}


def _start(args: list[str], point: str, cwd: Path, env: dict[str, str] | None,
           marker: Path) -> tuple[subprocess.Popen, Path]:
    log = cwd / f"signmae-{uuid.uuid4().hex[:6]}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), str(marker), point, *args],
            cwd=cwd, env=env or cli_env(), stdout=out, stderr=subprocess.STDOUT,
        )
    return proc, log


def tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.is_file() else ""


def run_cli(args: list[str], cwd: Path, env: dict[str, str] | None = None,
            timeout: float = 300) -> None:
    """`signmae ARGS` in a subprocess, to the end; fails the test unless it exits with 0."""
    proc, log = _start(args, "none", cwd, env, cwd / "unused-marker")
    try:
        status = proc.wait(timeout=timeout)
    finally:
        proc.kill()
        proc.wait()
    assert status == 0, f"signmae {' '.join(args)} exited with {status}:\n{tail(log)}"


def kill_at(args: list[str], point: str, cwd: Path, env: dict[str, str] | None = None,
            timeout: float = 180) -> dict[str, Any]:
    """Run `signmae ARGS` in a subprocess until it reaches `point`, SIGKILL it there, and return
    what the marker says it saw. Fails the test when the command ends before the point."""
    marker = cwd / f"paused-{uuid.uuid4().hex[:6]}.json"
    proc, log = _start(args, point, cwd, env, marker)
    deadline = time.monotonic() + timeout
    try:
        while not marker.exists():
            status = proc.poll()
            assert status is None, (
                f"signmae {' '.join(args)} ended (status {status}) before {point}:\n{tail(log)}"
            )
            assert time.monotonic() < deadline, f"no {point} within {timeout} s:\n{tail(log)}"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"status {proc.returncode}:\n{tail(log)}"
    return json.loads(marker.read_text(encoding="utf-8"))


def make_tiny_data(root: Path, stages: list[str], overrides: list[str]) -> list[str]:
    """The `ci_tiny` synthetic signer under `root/synthetic` and `stages` run on it in this process
    (store `root/store`); returns the `--config/--set` arguments that name them (absolute paths,
    so a copy of the store can be named with one more `--set store.root=...`)."""
    from pipelines.cli import main
    from signmae_core.config import load_config
    from signmae_core.synth import ensure_generated

    data = [f"store.root={root / 'store'}", f"datasets.0.root={root / 'synthetic'}", *overrides]
    ensure_generated(root / "synthetic", load_config("ci_tiny", data).synth)
    args = ["--config", "ci_tiny", *[a for o in data for a in ("--set", o)]]
    assert main(["run", *stages, *args]) == 0
    return args


def copy_store(source: Path, target: Path) -> list[str]:
    """A copy of the store `source` at `target` (files keep their times); returns the `--set`
    that points a command at it."""
    shutil.copytree(source, target, copy_function=shutil.copy2)
    return ["--set", f"store.root={target}"]


# ---- a training run's outputs ---------------------------------------------------------------
def run_folder(store: Path, stage: str) -> Path:
    """The one version folder of a training stage in `store`."""
    folders = [p for p in (store / "_train" / stage).iterdir() if p.is_dir()]
    assert len(folders) == 1, folders
    return folders[0]


def metrics_rows(run: Path) -> list[dict[str, Any]]:
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def weights(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(path))


def assert_same_run(run: Path, reference: Path, tol: float = 1e-6) -> None:
    """Final model weights and per-step loss curves equal within `tol` (absolute)."""
    import torch

    ours, theirs = metrics_rows(run), metrics_rows(reference)
    assert [r["step"] for r in ours] == [r["step"] for r in theirs]
    for a, b in zip(ours, theirs, strict=True):
        assert abs(a["loss"] - b["loss"]) <= tol, (a["step"], a["loss"], b["loss"])
    got, want = weights(run / "model" / "model.safetensors"), weights(
        reference / "model" / "model.safetensors")
    assert sorted(got) == sorted(want)
    for name, tensor in want.items():
        torch.testing.assert_close(got[name], tensor, rtol=0, atol=tol, msg=name)


# ---- a flow run instead of the command ----------------------------------------------------------
FLOW = "--flow"


def flow_args(**parameters: Any) -> list[str]:
    """Arguments for `run_cli` / `kill_at` that run the `signmae-pipeline` flow with these
    parameters (config, overrides, stages, datasets, force) instead of the `signmae` command."""
    return [FLOW, json.dumps(parameters)]


def _run_flow(parameters: dict[str, Any]) -> int:
    """The pipeline flow, as `signmae demo` runs it (the workers' output in the run's log file);
    prints the flow run's final state; 0 when it completed."""
    from flows.pipeline import signmae_pipeline
    from pipelines.dag import Plan
    from pipelines.runner import run_log
    from signmae_core.config import load_config

    plan = Plan.from_config(load_config(parameters.get("config"), parameters.get("overrides")))
    with run_log(plan, False):
        state = signmae_pipeline(**parameters, return_state=True)
    print(f"flow run state: {state.name}: {state.message}", flush=True)
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    _install(Path(sys.argv[1]), sys.argv[2])
    if sys.argv[3:4] == [FLOW]:
        sys.exit(_run_flow(json.loads(sys.argv[4])))
    from pipelines.cli import main

    sys.exit(main(sys.argv[3:]))
