"""Hostile input, as a person trying to break the pipeline would give it (issue 11):

- a YAML alias bomb ("billion laughs") in a config or an override is refused at once, in bounded
  memory, and no error quotes a huge value back;
- config values must be finite (`--set decode.fps=1e309` is refused, exit status 2);
- a long file name gives a derived video id within the length cap of given ids;
- a stage whose every item failed exits non-zero and says how many failed.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from pydantic import ValidationError
from video_files import write_bad_videos, write_video

from pipelines.cli import _one_line_validation, main
from signmae_core.config import (
    MAX_ECHO_CHARS,
    ConfigError,
    DatasetConfig,
    SynthConfig,
    load_config,
)
from signmae_core.ingest import plan_videos
from signmae_core.ingest.manifest import MAX_VIDEO_ID, check_video_id

REPO_ROOT = Path(__file__).resolve().parents[1]
MEMORY_BOUND = 200 * 1024 * 1024  # bytes a refused bomb may take, generously


def billion_laughs(key: str = "name") -> str:
    """The classic alias bomb: nine levels of nine aliases, 9^9 strings once expanded; the last
    level sits under `key` so that validation (and its error message) would see it."""
    lines = ["a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]"]
    for prev, cur in zip("abcdefg", "bcdefgh", strict=True):
        lines.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    lines.append(f"{key}: [" + ",".join(["*h"] * 9) + "]")
    return "\n".join(lines) + "\n"


# ---- a: alias bombs and huge values in errors ---------------------------------------------------
def test_alias_bomb_is_small() -> None:
    assert len(billion_laughs()) < 400


def test_alias_bomb_in_a_config_is_refused_fast_in_bounded_memory(tmp_path: Path) -> None:
    """Loaded in a child process whose address space is capped at 1 GiB (the unbounded load
    takes several GiB), so a regression fails here instead of exhausting the machine."""
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(billion_laughs())
    script = textwrap.dedent(
        """
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        from signmae_core.config import ConfigError, load_config
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            load_config(sys.argv[1])
        except ConfigError as exc:
            print(exc)
            grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
            print(grown * 1024)  # ru_maxrss is in KiB on Linux
            sys.exit(3)
        """
    )
    started = time.perf_counter()
    child = subprocess.run(
        [sys.executable, "-c", script, str(bomb)], cwd=REPO_ROOT, capture_output=True,
        text=True, timeout=120,
    )
    seconds = time.perf_counter() - started
    assert child.returncode == 3, child.stderr[-2000:]
    message, grown = child.stdout.strip().splitlines()
    assert "refused" in message and "alias" in message, message
    assert len(message) < 300
    assert int(grown) < MEMORY_BOUND
    assert seconds < 30


def test_alias_bomb_peak_memory_in_process(tmp_path: Path) -> None:
    import tracemalloc

    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(billion_laughs())
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError, match="refused, more than 100000 values"):
            load_config(str(bomb))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_BOUND


def test_alias_bomb_in_an_override_and_on_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inline = "[" + ",".join(["&x [1,2,3,4,5,6,7,8,9]"] + ["*x"] * 150) + "]"
    with pytest.raises(ConfigError, match="more than 100 YAML aliases"):
        load_config(None, [f"name={inline}"])
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(billion_laughs())
    assert main(["config", "-c", str(bomb)]) == 2
    err = capsys.readouterr().err
    assert "refused" in err and len(err) < 300


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path: Path) -> None:
    cyclic = tmp_path / "cyclic.yaml"
    cyclic.write_text("name: &n [1, *n]\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(str(cyclic))


def test_a_few_aliases_still_work(tmp_path: Path) -> None:
    path = tmp_path / "aliases.yaml"
    path.write_text("data:\n  crop_scale: &s [0.5, 1.0]\nmodel:\n  mean: &m [0.4, 0.4, 0.4]\n"
                    "  std: *m\n")
    cfg = load_config(str(path))
    assert cfg.model.std == (0.4, 0.4, 0.4) and cfg.data.crop_scale == (0.5, 1.0)


def test_errors_quote_at_most_a_bounded_part_of_a_bad_value(tmp_path: Path) -> None:
    """A big value without any alias (a 50,000-item list): the error stays one short line."""
    path = tmp_path / "huge.yaml"
    path.write_text("name: [" + ",".join(["lol"] * 50_000) + "]\n")
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    message = str(caught.value)
    assert message.startswith("config field 'name'") and "..." in message
    assert len(message) < MAX_ECHO_CHARS + 150

    with pytest.raises(ValidationError) as invalid:
        SynthConfig.model_validate({"classes": "x" * 100_000})
    line = _one_line_validation(invalid.value)
    assert line.startswith("--classes:") and "..." in line
    assert len(line) < MAX_ECHO_CHARS + 150


# ---- b: values must be finite -------------------------------------------------------------------
@pytest.mark.parametrize(
    "override",
    ["decode.fps=1e309", "decode.fps=.inf", "decode.fps=nan", "model.mean=[.nan, 0.5, 0.5]",
     "pretrain.betas=[0.9, .inf]", "masks.blur=-.inf"],
)
def test_config_values_must_be_finite(override: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="finite number"):
        load_config(None, [override])
    assert main(["config", "--set", override]) == 2
    assert "finite number" in capsys.readouterr().err


# ---- c: long file names -------------------------------------------------------------------------
def _long_name_dataset(root: Path, names: list[str]) -> DatasetConfig:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "labels.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerows([f"videos/{name}", "a"] for name in names)
    return DatasetConfig(name="long", adapter="csv", root=str(root))


def test_a_long_file_name_gives_an_id_within_the_cap(tmp_path: Path) -> None:
    one, two = "a" * 229 + "b.mp4", "a" * 229 + "c.mp4"
    dataset = _long_name_dataset(tmp_path / "data", [one, two])
    first = {item.rel_path: item for item in plan_videos(dataset)}
    again = {item.rel_path: item for item in plan_videos(dataset)}
    ids = [first[f"videos/{name}"].video_id for name in (one, two)]
    for video_id in ids:
        assert len(video_id) <= MAX_VIDEO_ID and check_video_id(video_id) is None
        assert video_id.startswith("videos__aaaa")
    assert ids[0] != ids[1]  # the names differ only in their last letter
    assert [again[f"videos/{name}"].video_id for name in (one, two)] == ids  # stable
    assert all(first[f"videos/{name}"].error is None for name in (one, two))


def test_a_long_file_name_is_decoded(tmp_path: Path, ray_local: None) -> None:
    """`videos/<230 letters>.mp4`: its clip's temporary file name fits in 255 bytes."""
    name = "s" * 230 + ".mp4"
    dataset = _long_name_dataset(tmp_path / "data", [name])
    write_video(tmp_path / "data" / "videos" / name, frames=10)
    config = _config_file(tmp_path, dataset)
    assert main(["run", "ingest", "decode", "-c", str(config)]) == 0
    clips = list((tmp_path / "store").glob("long/decode/*/clips/*.smclip"))
    assert len(clips) == 1 and len(clips[0].stem) <= MAX_VIDEO_ID


# ---- a stage whose every item failed ------------------------------------------------------------
def _config_file(tmp_path: Path, dataset: DatasetConfig) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        f"store:\n  root: {tmp_path / 'store'}\ndecode:\n  size: 32\n"
        f"datasets:\n  - name: {dataset.name}\n    adapter: csv\n    root: {dataset.root}\n"
    )
    return path


def test_every_video_corrupt_exits_non_zero_with_the_count(
    tmp_path: Path, ray_local: None, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "data"
    reasons = write_bad_videos(root / "videos")
    names = [n for n in ("zero_bytes.mp4", "text.mp4", "truncated.mp4") if n in reasons]
    dataset = _long_name_dataset(root, names)
    config = _config_file(tmp_path, dataset)
    assert main(["run", "ingest", "decode", "-c", str(config)]) != 0
    err = capsys.readouterr().err
    assert "ingest failed for every item of long (3 of 3)" in err


def test_every_clip_failing_to_decode_exits_non_zero_with_the_count(
    tmp_path: Path, ray_local: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """The videos probe fine, then are damaged in place (same size and time, so ingest stays up
    to date): decode fails for each of them."""
    root = tmp_path / "data"
    names = ["one.mp4", "two.mp4"]
    for name in names:
        write_video(root / "videos" / name, frames=12)
    config = _config_file(tmp_path, _long_name_dataset(root, names))
    assert main(["run", "ingest", "-c", str(config)]) == 0
    for name in names:
        video = root / "videos" / name
        stat = video.stat()
        video.write_bytes(b"\0" * stat.st_size)
        os.utime(video, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    capsys.readouterr()
    assert main(["run", "ingest", "decode", "-c", str(config)]) != 0
    out, err = capsys.readouterr()
    assert "up to date" in out  # ingest did not notice, decode did
    assert "decode failed for every item of long (2 of 2)" in err
