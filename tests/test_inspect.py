"""`signmae inspect`: the clip found by its id or its file's stem, the closest ids for an unknown
name, the contact sheet and the mask figure read through the plan, and damage named in one line."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipelines.dag import Plan
from pipelines.inspect_cmd import inspect_masks, load_inspection, resolve_video_id
from signmae_core.clips import read_clip
from signmae_core.config import DatasetConfig, SynthConfig, load_config
from signmae_core.errors import InputError
from signmae_core.synth import generate

PNG = b"\x89PNG\r\n\x1a\n"


def config(store: Path, root: Path) -> Any:
    return load_config(
        None,
        [f"store.root={store}", "decode.size=64", "extract.backend=oracle", "model.variant=tiny",
         "model.num_frames=8", "model.img_size=64"],
        datasets=[DatasetConfig(name="syn", root=str(root)).model_dump()],
    )


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory, ray_local: None) -> tuple[Any, Path]:
    """Four synthetic clips plus a copy of one under another folder (the same file stem twice),
    through ingest, decode, extract (oracle) and masks; returns the config and the folder."""
    from pipelines.runner import run_stages

    folder = tmp_path_factory.mktemp("inspect")
    root = folder / "data"
    generate(root, SynthConfig(classes=2, signers=2, reps=1, frames=8, size=64, seed=3))
    (root / "extra").mkdir()
    shutil.copy(root / "videos" / "s00_c000_r00.mp4", root / "extra" / "s00_c000_r00.mp4")
    labels = (root / "labels.csv").read_text(encoding="utf-8").splitlines()
    copied = next(line for line in labels if line.startswith("videos/s00_c000_r00.mp4"))
    labels.append(copied.replace("videos/", "extra/"))
    (root / "labels.csv").write_text("\n".join(labels) + "\n", encoding="utf-8")
    cfg = config(folder / "store", root)
    run_stages(cfg, ["ingest", "decode", "extract", "masks"])
    return cfg, folder


def test_a_clip_is_found_by_its_id_or_its_file_stem(made) -> None:
    cfg, _ = made
    plan = Plan(cfg)
    assert resolve_video_id(plan, "syn", "videos__s01_c001_r00") == "videos__s01_c001_r00"
    assert resolve_video_id(plan, "syn", "s01_c001_r00") == "videos__s01_c001_r00"
    assert resolve_video_id(plan, "syn", "extra__s00_c000_r00") == "extra__s00_c000_r00"


def test_a_stem_of_two_files_names_both(made) -> None:
    cfg, _ = made
    with pytest.raises(InputError) as info:
        resolve_video_id(Plan(cfg), "syn", "s00_c000_r00")
    message = str(info.value)
    assert "matches 2 clips" in message
    assert "extra__s00_c000_r00" in message and "videos__s00_c000_r00" in message


def test_an_unknown_name_lists_the_closest_ids(made) -> None:
    cfg, _ = made
    with pytest.raises(InputError, match=r"dataset syn: unknown video id 's01_c001_r07'; "
                       r"closest: .*videos__s01_c001_r00"):
        resolve_video_id(Plan(cfg), "syn", "s01_c001_r07")
    with pytest.raises(InputError) as info:
        resolve_video_id(Plan(cfg), "syn", "zzz")
    assert "closest" not in str(info.value)  # nothing near: no list


def test_the_inspection_holds_the_stored_clip_and_its_extraction(made) -> None:
    cfg, _ = made
    plan = Plan(cfg)
    inspection = load_inspection(plan, "syn", "s01_c000_r00")
    assert inspection.video_id == "videos__s01_c000_r00"
    clip_file = Path(plan.output("decode", "syn").folder) / "clips" / "videos__s01_c000_r00.smclip"
    np.testing.assert_array_equal(inspection.frames, read_clip(clip_file))
    assert inspection.clip.video_id == "videos__s01_c000_r00"
    assert inspection.clip.num_frames == len(inspection.frames)


def test_the_command_writes_the_sheet_and_the_mask_figure(
    made, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.cli import main

    cfg, folder = made
    monkeypatch.chdir(tmp_path)
    yaml_file = tmp_path / "config.yaml"
    yaml_file.write_text(
        f"store: {{root: {folder / 'store'}}}\n"
        f"datasets: [{{name: syn, root: {folder / 'data'}}}]\n"
        "decode: {size: 64}\nextract: {backend: oracle}\n"
        "model: {variant: tiny, num_frames: 8, img_size: 64}\n", encoding="utf-8")
    args = ["--config", str(yaml_file)]
    assert main(["inspect", "s01_c000_r00", "--masks", *args]) == 0
    assert (tmp_path / "inspect_videos__s01_c000_r00.png").read_bytes()[:8] == PNG
    assert (tmp_path / "inspect_videos__s01_c000_r00_masks.png").read_bytes()[:8] == PNG
    figure = inspect_masks(Plan(cfg), "syn", "videos__s01_c001_r00", tmp_path / "m.png")
    assert figure.read_bytes()[:8] == PNG


def test_a_damaged_output_is_named_with_its_repair_command(made, tmp_path: Path) -> None:
    cfg, folder = made
    shutil.copytree(folder / "store", tmp_path / "store")  # damage a copy: versions stay
    moved = config(tmp_path / "store", folder / "data")
    plan = Plan(moved)
    part = sorted((Path(plan.output("extract", "syn").folder) / "parts").glob("*.parquet"))[0]
    part.write_bytes(part.read_bytes()[:200])
    with pytest.raises(InputError, match=r"damaged.*run `signmae run extract --dataset syn`"):
        load_inspection(Plan(moved), "syn", "s01_c000_r00")
