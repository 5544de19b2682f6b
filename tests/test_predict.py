"""Inference: `signmae predict` on video files with a model folder, and the encoder export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from video_files import write_video as write_grey_video

from pipelines.cli import main
from signmae_core.config import ModelConfig
from signmae_core.models import create_classifier, create_encoder, create_pretrain_model
from signmae_core.train.checkpoint import load_weights
from signmae_core.train.export import export_encoder, load_model_folder, save_model_folder

MODEL = ModelConfig(variant="tiny", num_frames=4, img_size=32, patch_size=16, tubelet_size=2)
CLASSES = ["hello", "thanks", "yes", "no", "please", "sorry", "مرحبا"]


def model_info(kind: str) -> dict:
    return {
        "kind": kind,
        "model": MODEL.model_dump(mode="json"),
        "num_classes": len(CLASSES),
        "class_names": CLASSES,
        "input": {
            "decode": {"fps": 25.0, "size": 48, "crop": "bbox_or_pad", "max_frames": 64},
            "sampling": {"num_frames": 4, "img_size": 32, "frame_stride": 2},
            "views": 2,
        },
    }


def write_video(path: Path, frames: int = 20, width: int = 64, height: int = 48) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for t in range(frames):
            image = np.zeros((height, width, 3), dtype=np.uint8)
            image[10:30, 2 * t : 2 * t + 16] = (200, 120, 40)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture
def classifier_folder(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = create_classifier(MODEL, len(CLASSES))
    return save_model_folder(tmp_path / "model", model, model_info("classifier"))


def test_predict_prints_top5_and_reports_bad_videos(
    tmp_path: Path, classifier_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    video = tmp_path / "sign.mp4"
    write_video(video)
    broken = tmp_path / "broken.mp4"
    broken.write_text("not a video")

    status = main(["predict", str(video), "--checkpoint", str(classifier_folder), "--json"])
    assert status == 0
    result = json.loads(capsys.readouterr().out)
    (prediction,) = result["predictions"]
    assert prediction["views"] == 2 and prediction["frames"] == 20
    labels = [p["label"] for p in prediction["top"]]
    scores = [p["score"] for p in prediction["top"]]
    assert len(labels) == 5 and set(labels) <= set(CLASSES)
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0001

    # the same scores as running the model on the reader's evaluation views by hand
    model, _ = load_model_folder(classifier_folder)
    from pipelines.predict_cmd import decode_video, view_clips

    jpegs, meta = decode_video(video, model_info("classifier")["input"]["decode"])
    assert meta.num_frames == len(jpegs) == 20 and (meta.height, meta.width) == (48, 48)
    with torch.no_grad():
        probs = model(view_clips(jpegs, meta, {"num_frames": 4, "img_size": 32}, 2)).softmax(-1)
    best = probs.mean(0).topk(5)
    assert labels == [CLASSES[i] for i in best.indices.tolist()]
    np.testing.assert_allclose(scores, best.values.numpy(), atol=1e-5)

    # text output, and a broken video among good ones: reported, the others still predicted
    status = main(["predict", str(video), str(broken), "--checkpoint", str(classifier_folder)])
    out, err = capsys.readouterr()
    assert status == 1
    assert f"{video}  (20 frames, 2 views)" in out and "  1. " in out and "  5. " in out
    assert f"{broken}: error:" in out and "1 of 2 videos failed" in err


def test_predict_refuses_a_missing_checkpoint(tmp_path: Path, capsys) -> None:
    status = main(["predict", "x.mp4", "--checkpoint", str(tmp_path / "nothing")])
    assert status == 2 and "checkpoint not found" in capsys.readouterr().err


def test_encoder_export_loads_into_a_bare_encoder_and_a_classifier(tmp_path: Path) -> None:
    torch.manual_seed(1)
    mae = create_pretrain_model(MODEL)
    folder = save_model_folder(tmp_path / "pretrain", mae, model_info("pretrain"))
    status = main(["export-encoder", "--checkpoint", str(folder), "--out", str(tmp_path / "enc")])
    assert status == 0
    description = json.loads((tmp_path / "enc" / "encoder.json").read_text())
    assert description["kind"] == "encoder" and description["token_grid"] == [2, 2, 2]
    state = load_weights(tmp_path / "enc" / "encoder.safetensors")

    encoder = create_encoder(description["model"], final_norm=description["final_norm"])
    encoder.load_state_dict(state)
    clips = torch.randint(0, 255, (2, 3, 4, 32, 32), dtype=torch.uint8)
    mae.eval()
    with torch.no_grad():
        torch.testing.assert_close(encoder(clips), mae.encoder(clips))

    classifier = create_classifier(description["model"], 3)
    classifier.load_encoder_state_dict(state)
    torch.testing.assert_close(classifier.encoder.patch_embed.proj.weight,
                               mae.encoder.patch_embed.proj.weight)
    # exporting again replaces the folder in one piece
    assert export_encoder(folder, tmp_path / "enc") == tmp_path / "enc"
    assert not list(tmp_path.glob(".tmp-*"))


# ---- predict on a video of a dataset, through the plan -----------------------------------------
def _dataset_config(tmp_path: Path) -> Path:
    """A csv dataset of two whole videos (30 fps, 64x48 and 48x64: resampled to 25 fps and
    padded to a square) and a config whose model matches `MODEL`; returns the config file."""
    root = tmp_path / "data"
    write_grey_video(root / "videos" / "one.mp4", frames=24, width=64, height=48, fps=30)
    write_grey_video(root / "videos" / "two.mp4", frames=18, width=48, height=64, fps=30)
    (root / "labels.csv").write_text("path,label\nvideos/one.mp4,hello\nvideos/two.mp4,thanks\n")
    config = {
        "name": "predict_test",
        "store": {"root": str(tmp_path / "store")},
        "datasets": [{"name": "tiny", "adapter": "csv", "root": str(root)}],
        "decode": {"fps": 25, "size": 48, "jpeg_quality": 60},
        "model": MODEL.model_dump(mode="json"),
        "data": {"frame_stride": 2},
        "finetune": {"init_encoder": "scratch"},
    }
    path = tmp_path / "predict.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def _finish_finetune(cfg, names: list[str]) -> Path:
    """Stand in for `signmae run finetune`: a classifier model folder recorded as this
    config's finetune output (version, config hash and inputs from the plan)."""
    from dataclasses import asdict

    from pipelines.dag import Plan
    from signmae_core.data import Sampling

    plan = Plan.from_config(cfg)
    key = plan.key("finetune")
    spec = plan.stage("finetune")
    torch.manual_seed(0)
    model = create_classifier(MODEL, len(names))
    info = {
        "kind": "classifier", "model": MODEL.model_dump(mode="json"),
        "num_classes": len(names), "class_names": names,
        "input": {"decode": cfg.decode.model_dump(mode="json"),
                  "sampling": asdict(Sampling.from_config(cfg)), "views": 3},
    }
    with plan.store.open_stage(key.dataset, key.stage, plan.version(key),
                               config_hash=plan.config_hash(key),
                               code_version=spec.code_version, inputs=plan.inputs(key)) as writer:
        folder = save_model_folder(Path(writer.dir) / "model", model, info)
        writer.commit()
    return folder


def test_predict_feeds_the_model_the_stored_clips_evaluation_views(
    tmp_path: Path, ray_local: None, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pipelines.dag import Plan
    from pipelines.outputs import clip_rows
    from signmae_core.config import load_config
    from signmae_core.data import ClipDataset, ClipRecord, Sampling
    from signmae_core.train import export

    config = _dataset_config(tmp_path)
    # no finetune output yet: the error names the command that makes it
    assert main(["predict", str(tmp_path / "data/videos/one.mp4"), "-c", str(config)]) == 2
    assert "signmae run finetune" in capsys.readouterr().err
    assert main(["run", "ingest", "decode", "shard", "-c", str(config)]) == 0
    cfg = load_config(str(config))
    model_folder = _finish_finetune(cfg, ["hello", "thanks"])

    fed: list[torch.Tensor] = []
    real_load = export.load_model_folder

    def recording_load(*args, **kwargs):
        model, info = real_load(*args, **kwargs)
        model.register_forward_pre_hook(lambda _module, inputs: fed.append(inputs[0].cpu()))
        return model, info

    monkeypatch.setattr(export, "load_model_folder", recording_load)
    rows = {Path(r["clip_path"]).stem: r for r in clip_rows(Plan.from_config(cfg), "tiny")}
    assert set(rows) == {"videos__one", "videos__two"}
    for name in ("one", "two"):
        video = tmp_path / "data" / "videos" / f"{name}.mp4"
        capsys.readouterr()
        assert main(["predict", str(video), "-c", str(config), "--json"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["model"] == str(model_folder)
        # the stored clip, through the evaluation reader (as the evaluate stage reads it)
        row = rows[f"videos__{name}"]
        reader = ClipDataset([ClipRecord(row["video_id"], row["clip_path"])],
                             Sampling.from_config(cfg), train=False)
        expected = torch.stack([reader.load(0, None, view=v, num_views=3)["clips"]
                                for v in range(3)])
        assert expected.shape == (3, 3, MODEL.num_frames, MODEL.img_size, MODEL.img_size)
        assert torch.equal(fed.pop(), expected)
        assert result["predictions"][0]["frames"] == row["num_frames"]


def test_export_encoder_without_checkpoint_needs_this_configs_finetune(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _dataset_config(tmp_path)
    assert main(["export-encoder", "-c", str(config), "--out", str(tmp_path / "enc")]) == 2
    err = capsys.readouterr().err
    assert "no finetune output" in err and "--checkpoint" in err
