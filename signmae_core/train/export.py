"""Finished models on disk: a model folder (weights + JSON description) and encoder exports.

A model folder (what the pretrain and finetune stages publish, see docs/TRAINING.md)::

    model.safetensors   the whole model's state dict (pretraining model or classifier)
    model.json          {"format", "kind": "pretrain" | "classifier", "model": {ModelSpec fields},
                         "num_classes", "class_names", "input": {how clips were cut}, ...}

An encoder export (`export_encoder`) is the encoder alone, for use elsewhere::

    encoder.safetensors the encoder's state dict (keys as in `VideoViTEncoder`)
    encoder.json        {"format", "kind": "encoder", "model": {...}, "token_grid", "embed_dim",
                         "final_norm", "source"}

`create_encoder(json["model"], final_norm=json["final_norm"])` rebuilds the module that loads
it; the classifier's `load_encoder_state_dict` takes it too.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from torch import nn

from signmae_core.errors import InputError

from .checkpoint import load_weights, save_weights, unwrap_model

FORMAT_VERSION = 1
MODEL_WEIGHTS = "model.safetensors"
MODEL_INFO = "model.json"
ENCODER_WEIGHTS = "encoder.safetensors"
ENCODER_INFO = "encoder.json"


def _publish_folder(tmp: Path, final: Path) -> None:
    """Rename a finished temporary folder into place (replacing an older one)."""
    if final.exists():
        old = final.with_name(f".tmp-{uuid.uuid4().hex[:8]}-old-{final.name}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old)
    else:
        os.replace(tmp, final)


def _staging(final: Path) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{final.name}")
    tmp.mkdir()
    return tmp


def save_model_folder(folder: str | Path, model: nn.Module, info: dict[str, Any]) -> Path:
    """Write `model.safetensors` + `model.json` into `folder`, atomically as a whole.

    `info` needs `kind` and `model` (the ModelSpec fields); classifiers add `class_names`.
    """
    final = Path(folder)
    tmp = _staging(final)
    try:
        save_weights(tmp / MODEL_WEIGHTS, unwrap_model(model).state_dict())
        payload = {"format": FORMAT_VERSION, **info}
        (tmp / MODEL_INFO).write_text(json.dumps(payload, indent=2), encoding="utf-8")
        _publish_folder(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def read_model_info(folder: str | Path) -> dict[str, Any]:
    """The model.json of a model folder; a clear `InputError` when it is not one."""
    path = Path(folder)
    if path.is_file() and path.suffix == ".safetensors":
        path = path.parent
    info_path = path / MODEL_INFO
    if not info_path.is_file() or not (path / MODEL_WEIGHTS).is_file():
        raise InputError(f"{folder} is not a model folder ({MODEL_WEIGHTS} + {MODEL_INFO})")
    info = json.loads(info_path.read_text(encoding="utf-8"))
    if info.get("format") != FORMAT_VERSION:
        raise InputError(f"{info_path}: unsupported model format {info.get('format')!r}")
    return info


def load_model_folder(folder: str | Path, device: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model of a model folder and load its weights; returns (model, info)."""
    from signmae_core.models import create_classifier, create_pretrain_model

    info = read_model_info(folder)
    path = Path(folder)
    path = path.parent if path.is_file() else path
    if info["kind"] == "classifier":
        model: nn.Module = create_classifier(info["model"], int(info["num_classes"]))
    elif info["kind"] == "pretrain":
        model = create_pretrain_model(info["model"])
    else:
        raise InputError(f"{path}: unknown model kind {info['kind']!r}")
    model.load_state_dict(load_weights(path / MODEL_WEIGHTS))
    return model.to(device).eval(), info


def export_encoder(model_folder: str | Path, out: str | Path) -> Path:
    """Write the encoder of a model folder as `encoder.safetensors` + `encoder.json` in `out`."""
    model, info = load_model_folder(model_folder)
    encoder = model.encoder
    final = Path(out)
    tmp = _staging(final)
    try:
        save_weights(tmp / ENCODER_WEIGHTS, encoder.state_dict())
        description = {
            "format": FORMAT_VERSION,
            "kind": "encoder",
            "model": info["model"],
            "token_grid": list(encoder.grid),
            "embed_dim": encoder.embed_dim,
            "final_norm": not isinstance(encoder.norm, nn.Identity),
            "source": {"kind": info["kind"], "folder": str(Path(model_folder))},
        }
        (tmp / ENCODER_INFO).write_text(json.dumps(description, indent=2), encoding="utf-8")
        _publish_folder(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
