"""The console is for people: a bar per running stage on a terminal, plain lines in a log, one
summary line per finished stage; the Ray workers' noise (TensorFlow Lite, absl, MediaPipe) and
Ray's start-up warnings go to the run's log file, and `--verbose` shows them."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cli_runs import cli_env

from pipelines import progress as progress_module
from pipelines.progress import END, START, UPDATE, Bars, Progress, listening

NOISE = re.compile(r"absl|TensorFlow Lite|XNNPACK|inference_feedback_manager", re.IGNORECASE)
STAGES = ["ingest", "decode", "extract"]


# ---- bars and lines ---------------------------------------------------------------------------
def _recording_bars() -> tuple[Bars, Any]:
    from rich.console import Console

    out = Console(file=io.StringIO(), force_terminal=True, width=140, record=True)
    return Bars(console=out), out


def _render(bars: Bars) -> str:
    from rich.console import Console

    console = Console(file=io.StringIO(), width=140, record=True)
    console.print(bars._display.get_renderable())
    return console.export_text()


def test_a_terminal_gets_a_bar_per_stage_with_items_rate_and_time_left(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bars, _ = _recording_bars()
    monkeypatch.setattr(progress_module, "BARS", bars)
    monkeypatch.setenv(progress_module.MODE_ENV, "bars")
    events: list[tuple[str, str]] = []
    with listening(lambda p, e: events.append((p.label, e))):
        first = Progress("extract synthetic", 4, every_s=0)
        second = Progress("masks synthetic", 2, every_s=0)
        for status in ("ok", "ok", "failed"):
            first.update(status)
        second.update("done")
        text = _render(bars)
        assert re.search(r"extract synthetic .*3/4 .*/s\s+left .*failed 1, ok 2", text), text
        assert re.search(r"masks synthetic .*1/2", text), text
        first.update("ok")  # its last item: the bar goes, the other stays
        assert "extract synthetic" not in _render(bars)
        second.update("done")
    assert bars._display is None  # the last bar gone: the display stopped
    assert capsys.readouterr().err == ""  # no plain lines beside the bars
    # the listeners (the flows' progress artifacts) see the same events as without bars
    assert events[:2] == [("extract synthetic", START), ("masks synthetic", START)]
    assert ("extract synthetic", END) in events and ("masks synthetic", END) in events
    assert ("extract synthetic", UPDATE) in events


def test_without_a_terminal_a_stage_prints_plain_lines(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bars, _ = _recording_bars()
    monkeypatch.setattr(progress_module, "BARS", bars)
    monkeypatch.delenv(progress_module.MODE_ENV, raising=False)  # stderr is captured: no tty
    progress = Progress("decode synthetic", 2, every_s=3600)
    progress.update("ok")
    progress.update("failed")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and re.fullmatch(
        r"\[decode synthetic\] 2/2 \(failed 1, ok 1\) [0-9.]+/s", lines[0]), lines
    assert bars._display is None


# ---- a real run in a subprocess ---------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from signmae_core.config import load_config
    from signmae_core.synth import ensure_generated

    root = tmp_path_factory.mktemp("console")
    ensure_generated(root / "synthetic", load_config("ci_tiny").synth)
    return root


def _signmae(root: Path, store: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`signmae ARGS` on ci_tiny with MediaPipe extraction into `root/store`, stdout and stderr
    captured (pipes: not a terminal)."""
    sets = [f"store.root={root / store}", f"datasets.0.root={root / 'synthetic'}",
            "extract.backend=mediapipe"]
    command = [sys.executable, "-m", "pipelines.cli", *args, "-c", "ci_tiny",
               *[f"--set={s}" for s in sets]]
    done = subprocess.run(command, cwd=root, env=cli_env(SIGNMAE_PROGRESS=""),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _log_file(stderr: str) -> Path:
    found = re.findall(r"^log: (.+\.log)$", stderr, re.MULTILINE)
    assert len(found) == 1, stderr[-2000:]
    return Path(found[0])


def test_worker_noise_goes_to_the_log_file_not_the_console(tiny_data: Path) -> None:
    done = _signmae(tiny_data, "store", "run", *STAGES)
    console = done.stdout + done.stderr
    assert not NOISE.findall(console), console[-3000:]
    assert "Token authentication" not in console and "WARNING" not in console
    log = _log_file(done.stderr)
    assert log.parent == tiny_data / "store" / "_logs"
    text = log.read_text()
    assert re.search(r"TensorFlow Lite|XNNPACK", text), text[-3000:]
    assert "absl" in text
    summaries = [line for line in done.stdout.splitlines() if line.startswith("[")]
    assert [re.match(r"\[(\w+)\]", s).group(1) for s in summaries] == STAGES  # one per stage
    assert re.search(r"^\[extract synthetic\] 6/6 \(ok 6\)", done.stderr, re.MULTILINE)
    for line in summaries:
        assert line in text  # the log holds the summaries too


def test_verbose_shows_the_worker_noise_on_the_console(tiny_data: Path) -> None:
    done = _signmae(tiny_data, "store-verbose", "--verbose", "run", *STAGES)
    console = done.stdout + done.stderr
    assert NOISE.search(console), console[-3000:]
    assert NOISE.search(_log_file(done.stderr).read_text())
