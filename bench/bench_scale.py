"""The data stages at two dataset sizes: peak memory of every process and time per clip.

For each size N (default 500 and 5,000 small synthetic clips: 16 frames, 96 px, 50 classes x 10
signers x N/500 repetitions) the bench runs the `signmae-pipeline` flow over ingest, decode,
extract (oracle extraction), masks and shard, as a flow run in a child process against a Prefect
server it starts on 127.0.0.1, with a local Ray the flow run starts (`ray.num_cpus`, 2 by
default). While it runs, the resident set size (RSS) of every process of the flow run (the
driver, the Ray processes it starts: GCS, raylet, dashboard, workers) and of the Prefect server
is read from /proc (Linux) every `--interval` seconds and summed; the peak of that sum is the
run's peak memory. Every fifth sample also sums the proportional set size (PSS: shared pages
divided among the processes that map them, so Ray's shared object store and shared libraries
count once).

Printed per size: wall time of the flow run, time per clip, each stage's seconds, peak summed
RSS and PSS, the processes that held the most at the peak and which stage was running then; then
the ratios (large / small) of peak RSS, peak PSS and time per clip. The machine's load (1-minute
average, as `uptime` shows it) is printed before and after each run. The synthetic data is
generated once per size under `--work` (not timed) and kept; the stores are made anew each run.

    .venv/bin/python bench/bench_scale.py                       # 500 vs 5000 (many minutes)
    .venv/bin/python bench/bench_scale.py --sizes 100 500 --work /tmp/bench-scale
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

STAGES = ["ingest", "decode", "extract", "masks", "shard"]
CLASSES, SIGNERS = 50, 10  # clips per repetition: 500
MB = 1024 * 1024


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        nargs=2,
        type=int,
        default=[500, 5000],
        metavar=("SMALL", "LARGE"),
        help="clip counts, multiples of 500",
    )
    parser.add_argument("--work", default="/tmp/signmae-bench-scale", help="data and stores")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between samples")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the flow run's local Ray")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        help="more config overrides for both runs (key=value)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: run the flow (JSON)
    return parser.parse_args(argv)


# ---- the flow run (in the child process) ---------------------------------------------------------
def run_child(parameters: dict[str, Any]) -> int:
    """Run the pipeline flow with `parameters`; print its stage rows as one JSON line."""
    from flows.pipeline import signmae_pipeline
    from pipelines.dag import Plan
    from pipelines.runner import run_log
    from signmae_core.config import load_config

    plan = Plan.from_config(load_config(parameters["config"], parameters["overrides"]))
    with run_log(plan, False):
        state = signmae_pipeline(**parameters, return_state=True)
    if not state.is_completed():
        print(f"flow run {state.name}: {state.message}", flush=True)
        return 1
    print("ROWS " + json.dumps(state.result()), flush=True)
    return 0


# ---- memory of process trees (read from /proc: Linux) --------------------------------------------
PAGE = os.sysconf("SC_PAGE_SIZE")


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process, from /proc/<pid>/stat."""
    found = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = entry.read_text().rsplit(")", 1)[1].split()  # state ppid pgrp ...
            found[int(entry.parent.name)] = int(fields[1])
    return found


def tree(roots: list[int]) -> list[int]:
    """The roots and all their descendants that are alive now."""
    children: dict[int, list[int]] = {}
    parents = _parents()
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    found, todo = [], [r for r in roots if r in parents]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


def pss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


def label(pid: int) -> str:
    """A short name: Ray's process titles (`ray::ExtractActor`, `ray::IDLE`) or the program."""
    words = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    words = [w for w in words if w]
    if not words:
        return "?"
    first = words[0]
    if first.startswith("ray::"):
        return first.split()[0].split(".")[0]
    if Path(first).name.startswith("python") and len(words) > 1:
        script = next((w for w in words[1:] if not w.startswith("-")), "")
        return "python " + Path(script).name
    return Path(first).name


@dataclass
class Sample:
    t: float
    rss: int
    pss: int | None
    by_label: Counter[str]


@dataclass
class Sampler:
    """Sums the memory of process trees every `interval` seconds in a thread."""

    roots: list[int]
    interval: float
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def sample(self, with_pss: bool) -> Sample:
        rss, pss, by_label = 0, 0 if with_pss else None, Counter()
        for pid in tree(self.roots):
            with contextlib.suppress(OSError, ValueError, IndexError):  # a process that ended
                size = rss_bytes(pid)
                if pss is not None:
                    pss += pss_bytes(pid)
                rss += size
                by_label[label(pid)] += size
        return Sample(time.monotonic(), rss, pss, by_label)

    def run(self) -> None:
        count = 0
        while not self._stop.is_set():
            self.samples.append(self.sample(with_pss=count % 5 == 0))
            count += 1
            self._stop.wait(self.interval)

    @contextlib.contextmanager
    def running(self) -> Iterator[Sampler]:
        thread = threading.Thread(target=self.run, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()


# ---- one size ------------------------------------------------------------------------------------
def overrides(work: Path, clips: int, cpus: int, more: list[str]) -> list[str]:
    return [
        f"store.root={work / f'store-{clips}'}",
        f"datasets.0.root={work / f'data-{clips}'}",
        f"synth.classes={CLASSES}",
        f"synth.signers={SIGNERS}",
        f"synth.reps={clips // (CLASSES * SIGNERS)}",
        "synth.frames=16",
        "synth.size=96",
        "extract.backend=oracle",
        f"ray.num_cpus={cpus}",
        *more,
    ]


def make_data(sets: list[str]) -> int:
    """Generate the synthetic clips once (kept between runs); returns their number."""
    from signmae_core.config import load_config
    from signmae_core.synth import ensure_generated

    cfg = load_config("ci_tiny", sets)
    started = time.perf_counter()
    summary = ensure_generated(Path(cfg.datasets[0].root), cfg.synth)
    print(
        f"data: {summary['clips']} clips ({summary['status']}, "
        f"{time.perf_counter() - started:.0f} s)",
        flush=True,
    )
    return int(summary["clips"])


def start_child(sets: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[str]:
    parameters = {"config": "ci_tiny", "overrides": sets, "stages": STAGES}
    command = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(parameters)]
    return subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=log.parent,
    )


def read_output(
    child: subprocess.Popen[str], log: Path
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """The child's stage rows and when each stage's summary line came (monotonic time)."""
    rows: list[dict[str, Any]] = []
    ended: dict[str, float] = {}
    assert child.stdout is not None
    with open(log, "w", encoding="utf-8") as out:
        for line in child.stdout:
            out.write(line)
            if line.startswith("ROWS "):
                rows = json.loads(line[5:])
            for stage in STAGES:
                if line.startswith(f"[{stage}] "):
                    ended[stage] = time.monotonic()
    return rows, ended


@dataclass
class Result:
    clips: int
    wall_s: float
    rows: list[dict[str, Any]]
    samples: list[Sample]
    ended: dict[str, float]
    started: float
    load: tuple[float, float]

    @property
    def peak(self) -> Sample:
        return max(self.samples, key=lambda s: s.rss)

    @property
    def peak_pss(self) -> int:
        return max(s.pss for s in self.samples if s.pss is not None)

    def stage_at(self, t: float) -> str:
        for stage in STAGES:
            if stage in self.ended and t <= self.ended[stage]:
                return stage
        return "after the last stage"


def run_size(args: argparse.Namespace, clips: int, server_pid: int, api: str) -> Result:
    work = Path(args.work)
    sets = overrides(work, clips, args.cpus, args.overrides)
    assert make_data(sets) == clips
    shutil.rmtree(work / f"store-{clips}", ignore_errors=True)
    ray_tmp = tempfile.mkdtemp(prefix="smb-", dir="/tmp")  # short: Ray's socket paths
    env = {
        **os.environ,
        "PREFECT_API_URL": api,
        "SIGNMAE_RAY_TMPDIR": ray_tmp,
        "RAY_USAGE_STATS_ENABLED": "0",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PYTHONPATH": str(REPO_ROOT),
    }
    env.pop("RAY_ADDRESS", None)
    load_before = os.getloadavg()[0]
    print(f"[{clips}] load before: {load_before:.2f}", flush=True)
    started = time.monotonic()
    child = start_child(sets, env, work / f"flow-{clips}.log")
    with Sampler([child.pid, server_pid], args.interval).running() as sampler:
        rows, ended = read_output(child, work / f"flow-{clips}.log")
        status = child.wait()
    wall = time.monotonic() - started
    shutil.rmtree(ray_tmp, ignore_errors=True)
    if status != 0 or not rows:
        raise SystemExit(f"the flow run failed ({status}); see {work / f'flow-{clips}.log'}")
    return Result(
        clips, wall, rows, sampler.samples, ended, started, (load_before, os.getloadavg()[0])
    )


# ---- the report ----------------------------------------------------------------------------------
def report(result: Result) -> None:
    peak = result.peak
    print(
        f"\n[{result.clips} clips] flow run {result.wall_s:.1f} s, "
        f"{1000 * result.wall_s / result.clips:.1f} ms per clip; load (1 min) "
        f"{result.load[0]:.2f} before, {result.load[1]:.2f} after",
        flush=True,
    )
    print("  stages: " + ", ".join(f"{r['stage']} {r['seconds']} s" for r in result.rows))
    print(
        f"  peak summed RSS {peak.rss / MB:.0f} MB at {peak.t - result.started:.0f} s "
        f"(stage: {result.stage_at(peak.t)}), peak summed PSS {result.peak_pss / MB:.0f} MB, "
        f"{len(result.samples)} samples"
    )
    top = ", ".join(f"{label} {rss / MB:.0f} MB" for label, rss in peak.by_label.most_common(6))
    print(f"  at the peak: {top}")
    for stage in STAGES:  # the highest sum while each stage ran
        window = [s for s in result.samples if result.stage_at(s.t) == stage]
        if window:
            print(f"  {stage:<7} max RSS {max(s.rss for s in window) / MB:.0f} MB")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return run_child(json.loads(args.child))
    from flows.server import start_server, stop, wait_healthy

    small, large = args.sizes
    assert small % (CLASSES * SIGNERS) == 0 and large % (CLASSES * SIGNERS) == 0, args.sizes
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    server, api = start_server(work / "prefect")
    try:
        wait_healthy(api, server, work / "prefect" / "server.log")
        results = [run_size(args, clips, server.pid, api) for clips in (small, large)]
    finally:
        stop(server)
    for result in results:
        report(result)
    a, b = results
    print(
        f"\nratios {b.clips}/{a.clips}: peak RSS {b.peak.rss / a.peak.rss:.2f}, "
        f"peak PSS {b.peak_pss / a.peak_pss:.2f}, time per clip "
        f"{(b.wall_s / b.clips) / (a.wall_s / a.clips):.2f}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
