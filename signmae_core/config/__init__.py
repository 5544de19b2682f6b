"""One typed configuration for the whole pipeline, shared by the CLI and the Prefect flows.

`load_config("cpu_demo", ["masks.dilation=2"])` reads `configs/cpu_demo.yaml` (or a path), applies
dotted overrides and validates everything; errors are `ConfigError` with a one-line message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError

from .base import Section, canonical_json, config_hash
from .data import DataConfig
from .decode import DecodeConfig
from .extract import ExtractConfig
from .ingest import DatasetConfig, IngestConfig
from .masks import MaskingConfig, MasksConfig
from .model import ModelConfig
from .runtime import RayConfig, StoreConfig
from .synth import SynthConfig
from .train import EvalConfig, TrainConfig

__all__ = [
    "ConfigError",
    "DataConfig",
    "DatasetConfig",
    "DecodeConfig",
    "EvalConfig",
    "ExtractConfig",
    "IngestConfig",
    "MaskingConfig",
    "MasksConfig",
    "ModelConfig",
    "PipelineConfig",
    "RayConfig",
    "Section",
    "StoreConfig",
    "SynthConfig",
    "TrainConfig",
    "canonical_json",
    "config_hash",
    "load_config",
    "CONFIG_DIR",
]

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


class ConfigError(ValueError):
    """A config that cannot be used; the message is one line meant for people."""


class PipelineConfig(Section):
    """Everything a pipeline run needs; each stage reads its own section(s)."""

    name: str = Field("default", description="Name of this configuration.")
    store: StoreConfig = Field(default_factory=StoreConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    datasets: list[DatasetConfig] = Field(
        default_factory=lambda: [DatasetConfig()],
        description="Datasets the run works on; later stages may combine several.",
    )
    synth: SynthConfig = Field(default_factory=SynthConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    decode: DecodeConfig = Field(default_factory=DecodeConfig)
    extract: ExtractConfig = Field(default_factory=ExtractConfig)
    masks: MasksConfig = Field(default_factory=MasksConfig)
    masking: MaskingConfig = Field(default_factory=MaskingConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    pretrain: TrainConfig = Field(default_factory=TrainConfig)
    finetune: TrainConfig = Field(
        default_factory=lambda: TrainConfig(lr=5e-4, layer_decay=0.75, label_smoothing=0.1)
    )
    evaluate: EvalConfig = Field(default_factory=EvalConfig)

    def dataset(self, name: str | None = None) -> DatasetConfig:
        """The dataset called `name` (the first one when None)."""
        if name is None:
            return self.datasets[0]
        for dataset in self.datasets:
            if dataset.name == name:
                return dataset
        known = ", ".join(d.name for d in self.datasets)
        raise ConfigError(f"unknown dataset {name!r} (configured: {known})")

    def with_absolute_paths(self, base: Path | None = None) -> PipelineConfig:
        """A copy whose local paths (store root, dataset roots) are absolute.

        Relative paths in a config mean "relative to where the command runs"; Ray workers run
        elsewhere, so stages resolve them once, on the driver, before anything is sent out.
        """
        base = (base or Path.cwd()).resolve()

        def absolute(path: str) -> str:
            return path if "://" in path else str((base / path).resolve())

        return self.model_copy(
            update={
                "store": self.store.model_copy(update={"root": absolute(self.store.root)}),
                "datasets": [
                    d.model_copy(update={"root": absolute(d.root)}) for d in self.datasets
                ],
            }
        )

    def section_hash(self, *sections: str) -> str:
        """Canonical hash of the named top-level sections, e.g. `section_hash("decode")`."""
        return config_hash(*(getattr(self, s) for s in sections))


def _format_validation_error(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "<root>"
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    if first["type"] == "extra_forbidden":
        return f"unknown config field '{where}'{more}"
    message = first["msg"].removeprefix("Value error, ")
    return f"config field '{where}': {message} (got {first.get('input')!r}){more}"


def _resolve_config_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml"} or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        return path
    candidate = CONFIG_DIR / f"{name_or_path}.yaml"
    if not candidate.is_file():
        names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise ConfigError(f"unknown config {name_or_path!r} (named configs: {', '.join(names)})")
    return candidate


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node: Any = data
    for i, key in enumerate(keys[:-1]):
        if isinstance(node, list):
            node = node[int(key)]
            continue
        node = node.setdefault(key, {})
        if not isinstance(node, (dict, list)):
            parent = ".".join(keys[: i + 1])
            raise ConfigError(f"cannot set '{dotted}': '{parent}' is not a section")
    last = keys[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`"masks.dilation=2"` -> `("masks.dilation", 2)`; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc.problem})") from None
    return key.strip(), value


def load_config(
    name_or_path: str | None = None, overrides: list[str] | None = None, **sections: Any
) -> PipelineConfig:
    """Read a named config (or a YAML path, or defaults when None), apply overrides, validate.

    `sections` are keyword values merged over the file before the dotted overrides, the way
    Prefect flow parameters arrive.
    """
    data: dict[str, Any] = {}
    if name_or_path:
        path = _resolve_config_path(name_or_path)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        data = loaded or {}
    for key, value in sections.items():
        data[key] = value
    defaults = PipelineConfig().model_dump(mode="json")
    for text in overrides or []:
        key, value = parse_override(text)
        top = key.split(".", 1)[0]
        if top in defaults and top not in data:  # so "datasets.0.root=..." has a list to index
            data[top] = defaults[top]
        try:
            _set_dotted(data, key, value)
        except (IndexError, ValueError) as exc:
            raise ConfigError(f"cannot set '{key}': {exc}") from None
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc)) from None
