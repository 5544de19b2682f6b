"""Named configs for real datasets: each loads, its folder layout is written in the README, WLASL's
subsets are its first glosses, and the WLASL config ingests WLASL's own layout (the shared real
samples) with only its root overridden."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from stages_helper import manifest, run_stage

from signmae_core.config import load_config
from signmae_core.errors import InputError
from signmae_core.ingest.adapters import read_entries

REPO = Path(__file__).resolve().parents[1]
REAL_CONFIGS = {"wlasl100": "wlasl", "wlasl300": "wlasl", "wlasl1000": "wlasl",
                "wlasl2000": "wlasl", "nmfs_csl": "lists", "slovo": "slovo"}


def _real_datasets_section() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^## Real datasets\n(.*?)(?=^## )", text, re.MULTILINE | re.DOTALL)
    assert match, "README has no 'Real datasets' section"
    return match.group(1)


def _layout_blocks(section: str) -> dict[str, list[str]]:
    """The README's layout blocks: root folder line -> the entries listed under it."""
    fenced: list[list[str]] = []
    inside = False
    for line in section.splitlines():
        if line.startswith("```"):
            inside = not inside
            if inside:
                fenced.append([])
        elif inside:
            fenced[-1].append(line)
    blocks: dict[str, list[str]] = {}
    for lines in fenced:
        if lines and lines[0].endswith("/") and not lines[0].startswith(" "):
            blocks[lines[0].rstrip("/")] = [line.strip().split()[0] for line in lines[1:]
                                            if line.strip()]
    return blocks


def _expected_entries(name: str) -> list[str]:
    """What a dataset root must hold, from the config itself (not from the README)."""
    dataset = load_config(name).datasets[0]
    if dataset.adapter == "wlasl":
        return [dataset.labels or "WLASL_v0.3.json", "videos/<video_id>.mp4"]
    if dataset.adapter == "slovo":
        return [dataset.labels or "annotations.csv", "train/<attachment_id>.mp4",
                "test/<attachment_id>.mp4"]
    return [dataset.split_lists[split] for split in sorted(dataset.split_lists)]


def test_every_named_config_loads() -> None:
    names = sorted(p.stem for p in (REPO / "configs").glob("*.yaml"))
    assert set(REAL_CONFIGS) <= set(names)
    for name in names:
        cfg = load_config(name)
        assert cfg.name == name
        if name in REAL_CONFIGS:
            assert [d.adapter for d in cfg.datasets] == [REAL_CONFIGS[name]]
            assert cfg.datasets[0].name == name
            assert cfg.store.root == f"runs/{name}/artifacts"


@pytest.mark.parametrize("name", sorted(REAL_CONFIGS))
def test_each_real_config_has_its_layout_in_the_readme(name: str) -> None:
    section = _real_datasets_section()
    assert f"`{name}`" in section, f"the README's Real datasets section does not name {name}"
    root = load_config(name).datasets[0].root
    blocks = _layout_blocks(section)
    assert root in blocks, f"no layout block for {root}/ in the README ({sorted(blocks)})"
    for entry in _expected_entries(name):
        assert entry in blocks[root], f"{root}/{entry} is not in the README's layout"


def test_wlasl_subsets_are_the_first_n_glosses() -> None:
    for n in (100, 300, 1000, 2000):
        cfg = load_config(f"wlasl{n}")
        assert cfg.datasets[0].classes == n
        assert cfg.datasets[0].root == "data/WLASL"


def _wlasl_root(tmp_path: Path) -> Path:
    """A WLASL_v0.3.json with three glosses, two instances each (videos need not exist)."""
    glosses = [{"gloss": g, "instances": [
        {"video_id": f"{g}{i}", "split": "train", "frame_start": 1, "frame_end": -1}
        for i in range(2)]} for g in ("book", "drink", "computer")]
    (tmp_path / "WLASL_v0.3.json").write_text(json.dumps(glosses))
    return tmp_path


def test_classes_keeps_the_first_glosses_in_file_order(tmp_path: Path) -> None:
    root = _wlasl_root(tmp_path)
    sets = [f"datasets.0.root={root}"]
    two = read_entries(load_config("wlasl100", [*sets, "datasets.0.classes=2"]).datasets[0])
    assert [e.video_id for e in two] == ["book0", "book1", "drink0", "drink1"]
    every = read_entries(load_config("wlasl100", sets).datasets[0])  # 100 > 3: all of them
    assert [e.label for e in every] == ["book"] * 2 + ["drink"] * 2 + ["computer"] * 2


def test_classes_changes_the_ingest_version_only_when_set() -> None:
    from pipelines.dag import Plan

    def version(*sets: str) -> str:
        plan = Plan.from_config(load_config("ci_tiny", ["store.root=/tmp/unused", *sets]))
        return plan.version(plan.key("ingest", "synthetic"))

    assert "classes" not in load_config("ci_tiny").datasets[0].output_dump()
    assert version("datasets.0.adapter=wlasl", "datasets.0.classes=2") != version(
        "datasets.0.adapter=wlasl")


def test_classes_on_another_adapter_is_refused(tmp_path: Path) -> None:
    cfg = load_config("slovo", [f"datasets.0.root={tmp_path}", "datasets.0.classes=5"])
    with pytest.raises(InputError, match="wlasl adapter only"):
        read_entries(cfg.datasets[0])


def test_the_wlasl_config_ingests_wlasl_layout(real_data: Path, tmp_path: Path,
                                               ray_local: None) -> None:
    root = real_data / "wlasl_samples"
    glosses = json.loads((root / "WLASL_v0.3.json").read_text(encoding="utf-8"))
    ids = {str(i["video_id"]): g["gloss"] for g in glosses for i in g["instances"]}
    empty = {v for v in ids if (root / "videos" / f"{v}.mp4").stat().st_size == 0}
    assert empty  # the samples hold failed downloads, so failed rows are exercised
    cfg = load_config("wlasl2000", [f"datasets.0.root={root}", f"store.root={tmp_path}"])
    record = run_stage(cfg, "ingest", cfg.datasets[0])
    assert record.counts["ok"] == len(ids) - len(empty)
    assert record.counts["failed"] == len(empty)
    rows = manifest(cfg, cfg.datasets[0]).to_pylist()
    assert {r["video_id"]: r["label"] for r in rows} == ids
    assert {r["video_id"] for r in rows if r["status"] != "ok"} == empty

    first = [str(i["video_id"]) for i in glosses[0]["instances"]]  # the first gloss alone
    small = load_config("wlasl100", [f"datasets.0.root={root}", f"store.root={tmp_path}",
                                     "datasets.0.classes=1"])
    run_stage(small, "ingest", small.datasets[0])
    assert sorted(r["video_id"] for r in manifest(small, small.datasets[0]).to_pylist()) == \
        sorted(first)


def test_real_karsl_pretrains_on_every_real_clip_but_karsls_test_clips(
    real_data: Path, tmp_path: Path, ray_local: None
) -> None:
    """configs/real_karsl.yaml: finetuning sees KArSL's 70 training clips alone, evaluation its
    70 test clips, pretraining every other clip that decodes and no test clip of any dataset."""
    cfg = load_config("real_karsl", [f"store.root={tmp_path}"])
    for i, dataset in enumerate(cfg.datasets):
        relative = Path(dataset.root).relative_to("../shared/data/real")
        cfg.datasets[i] = dataset.model_copy(update={"root": str(real_data / relative)})
    with (real_data / "karsl70" / "labels.csv").open(encoding="utf-8") as f:
        karsl = list(csv.DictReader(f))
    with (real_data / "wlasl200" / "labels.csv").open(encoding="utf-8") as f:
        wlasl_test = {r["path"] for r in csv.DictReader(f) if r["split"] == "test"}
    samples = real_data / "wlasl_samples"
    instances = [i for g in json.loads((samples / "WLASL_v0.3.json").read_text(encoding="utf-8"))
                 for i in g["instances"]]
    samples_kept = [i for i in instances if i["split"] != "test"
                    and (samples / "videos" / f"{i['video_id']}.mp4").stat().st_size > 0]

    finetuned, evaluated, pretrained = set(), set(), set()
    for dataset in cfg.datasets:
        run_stage(cfg, "ingest", dataset)
        for row in manifest(cfg, dataset).to_pylist():
            clip = (dataset.name, row["path"])
            if row["status"] != "ok":
                continue
            if row["label_id"] is not None and row["split"] in cfg.finetune.splits:
                finetuned.add(clip)
            if row["label_id"] is not None and row["split"] in cfg.evaluate.splits:
                evaluated.add(clip)
            if row["split"] in cfg.pretrain.splits:
                pretrained.add(clip)

    assert finetuned == {("karsl70", r["path"]) for r in karsl if r["split"] == "train"}
    assert evaluated == {("karsl70", r["path"]) for r in karsl if r["split"] == "test"}
    assert len(finetuned) == len(evaluated) == 70
    assert not pretrained & evaluated
    assert not {("wlasl200", p) for p in wlasl_test} & pretrained
    counts = {name: sum(1 for d, _ in pretrained if d == name) for name, _ in pretrained}
    # every clip that decodes outside a test split: KArSL train, all of ISL, WLASL200 and the
    # WLASL samples (not the empty files) but their test splits, the 18 variants, the 4 misc
    assert counts == {"karsl70": 70, "isl151": 151, "wlasl200": 199 - len(wlasl_test),
                      "wlasl_samples": len(samples_kept), "wlasl_variants": 18, "misc": 4}
    assert 0 < len(samples_kept) < len(instances)
