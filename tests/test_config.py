"""The typed config: defaults, named configs, overrides, round trip and stable hashes."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from signmae_core.config import CONFIG_DIR, ConfigError, PipelineConfig, load_config


def test_defaults_validate() -> None:
    cfg = PipelineConfig()
    assert cfg.masking.ratio == 0.9
    assert cfg.dataset().name == "synthetic"


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_named_configs_load(path) -> None:
    cfg = load_config(path.stem)
    assert isinstance(cfg, PipelineConfig)


def test_yaml_round_trip(tmp_path) -> None:
    cfg = load_config("cpu_demo", ["masks.dilation=2", "masking.motion_weight=2.5"])
    path = tmp_path / "saved.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), allow_unicode=True))
    again = load_config(str(path))
    assert again == cfg
    assert again.section_hash("masks") == cfg.section_hash("masks")


def test_overrides_apply_and_change_only_their_section_hash() -> None:
    base = load_config("cpu_demo")
    changed = load_config("cpu_demo", ["masks.dilation=2"])
    assert changed.masks.dilation == 2
    assert changed.section_hash("masks") != base.section_hash("masks")
    for section in ("decode", "extract", "model", "masking", "datasets"):
        assert changed.section_hash(section) == base.section_hash(section)


def test_override_into_list_of_datasets() -> None:
    cfg = load_config("cpu_demo", ["datasets.0.root=/data/other"])
    assert cfg.datasets[0].root == "/data/other"


def test_hash_is_stable_across_processes() -> None:
    code = (
        "from signmae_core.config import load_config;"
        "print(load_config('cpu_demo').section_hash('masks', 'decode'))"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True,
            env={"PYTHONHASHSEED": seed, "PATH": ""},
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert len(outs) == 1
    assert outs == {load_config("cpu_demo").section_hash("masks", "decode")}


def test_hash_ignores_key_order() -> None:
    from signmae_core.config import config_hash

    a = {"cell": 4, "dilation": 1, "nested": {"x": [1, {"p": 1, "q": 2}], "y": None}}
    b = {"nested": {"y": None, "x": [1, {"q": 2, "p": 1}]}, "dilation": 1, "cell": 4}
    assert list(a) != list(b)  # the raw dicts really are in another order
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash({**a, "cell": 5})
    assert config_hash({"x": [1, 2]}) != config_hash({"x": [2, 1]})  # list order counts


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("masks.nope=1", "unknown config field 'masks.nope'"),
        ("masks.dilation=abc", "config field 'masks.dilation'"),
        ("masking.ratio=1.5", "config field 'masking.ratio'"),
        ("novalue", "is not of the form key=value"),
    ],
)
def test_bad_overrides_are_one_line_errors(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config("cpu_demo", [override])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_named_config_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="cpu_demo"):
        load_config("no_such_config")


def test_unknown_dataset_name() -> None:
    with pytest.raises(ConfigError, match="unknown dataset"):
        PipelineConfig().dataset("nope")


def test_relative_paths_resolve_against_the_working_folder(tmp_path) -> None:
    cfg = load_config("cpu_demo", ["store.root=s3://bucket/prefix"]).with_absolute_paths(tmp_path)
    assert cfg.store.root == "s3://bucket/prefix"
    assert cfg.datasets[0].root == str(tmp_path / "runs/demo/data/synthetic")


def test_override_into_default_list_without_a_config_file() -> None:
    cfg = load_config(None, ["datasets.0.root=/data/x"])
    assert cfg.datasets[0].root == "/data/x"
    assert cfg.datasets[0].name == "synthetic"


def test_runtime_fields_are_marked_on_the_models_and_left_out_of_output_hashes() -> None:
    from signmae_core.config import (
        DatasetConfig,
        DecodeConfig,
        EvalConfig,
        ExtractConfig,
        IngestConfig,
        MasksConfig,
        ProbeConfig,
        SynthConfig,
        TrainConfig,
    )

    expected = {
        DatasetConfig: {"root", "synth"},
        IngestConfig: {"max_in_flight"},
        DecodeConfig: {"max_in_flight", "timeout_s"},
        ExtractConfig: {"num_workers", "num_cpus_per_worker", "clip_timeout_s", "clips_per_part"},
        MasksConfig: {"version"},
        SynthConfig: {"workers"},
        TrainConfig: {
            "device", "num_workers", "cpus_per_worker", "loader_threads", "log_every",
            "checkpoint_every", "keep_checkpoints", "recon_every", "recon_samples", "resume",
            "compile",
        },
        EvalConfig: {"device", "loader_threads"},
        ProbeConfig: {"batch_size", "device", "loader_threads"},
    }
    for section, names in expected.items():
        assert set(section.runtime_fields()) == names, section.__name__
        dumped = section().output_dump()
        # DatasetConfig.classes, SynthConfig.unlabeled, TrainConfig.clips_per_class and
        # head_only_steps join the hash once set, so older configs keep their versions
        unset = {DatasetConfig: {"classes"}, SynthConfig: {"unlabeled"},
                 TrainConfig: {"clips_per_class", "head_only_steps"}}.get(section, set())
        assert set(dumped) == set(section.model_fields) - names - unset, section.__name__
    assert DatasetConfig(classes=5).output_dump()["classes"] == 5
    assert TrainConfig(head_only_steps=5).output_dump()["head_only_steps"] == 5
    decode = DecodeConfig()
    assert decode.model_copy(update={"timeout_s": 1.0}).output_hash() == decode.output_hash()
    assert decode.model_copy(update={"size": 64}).output_hash() != decode.output_hash()


def test_a_section_given_in_part_keeps_the_pipelines_defaults_for_it(tmp_path) -> None:
    path = tmp_path / "part.yaml"
    path.write_text("finetune:\n  epochs: 3\n  lr: 1.0e-3\n", encoding="utf-8")
    cfg = load_config(str(path))
    assert cfg.finetune.epochs == 3 and cfg.finetune.lr == 1.0e-3  # what the file says
    # what it does not say: finetuning's own defaults, not a bare TrainConfig's
    assert cfg.finetune.layer_decay == 0.75 and cfg.finetune.label_smoothing == 0.1
    assert cfg.finetune == load_config(None, ["finetune.epochs=3", "finetune.lr=1.0e-3"]).finetune
