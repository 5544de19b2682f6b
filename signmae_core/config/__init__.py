"""One typed configuration for the whole pipeline, shared by the CLI and the Prefect flows.

`load_config("cpu_demo", ["masks.dilation=2"])` reads `configs/cpu_demo.yaml` (or a path), applies
dotted overrides and validates everything; errors are `ConfigError` with a one-line message.
"""

from __future__ import annotations

import reprlib
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError

from .base import Section, canonical_json, config_hash, output_value, runtime_field
from .data import DataConfig
from .decode import DecodeConfig
from .extract import ExtractConfig
from .ingest import DatasetConfig, IngestConfig
from .masks import MaskingConfig, MasksConfig
from .model import ModelConfig
from .runtime import RayConfig, StoreConfig
from .shard import ShardConfig
from .synth import SynthConfig
from .train import EvalConfig, ProbeConfig, TrainConfig

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
    "ProbeConfig",
    "RayConfig",
    "Section",
    "ShardConfig",
    "StoreConfig",
    "SynthConfig",
    "TrainConfig",
    "canonical_json",
    "config_hash",
    "output_value",
    "runtime_field",
    "load_config",
    "safe_load",
    "short_repr",
    "CONFIG_DIR",
]

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"

MAX_YAML_ALIASES = 100  # alias uses (`*name`) in one config file or override value
MAX_YAML_VALUES = 100_000  # values (scalars, lists, mappings) a document expands to
MAX_ECHO_CHARS = 200  # characters of a bad value quoted back in an error


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
    shard: ShardConfig = Field(default_factory=ShardConfig)
    masking: MaskingConfig = Field(default_factory=MaskingConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    pretrain: TrainConfig = Field(default_factory=TrainConfig)
    finetune: TrainConfig = Field(
        default_factory=lambda: TrainConfig(lr=5e-4, layer_decay=0.75, label_smoothing=0.1)
    )
    evaluate: EvalConfig = Field(default_factory=EvalConfig)
    probe: ProbeConfig = Field(default_factory=ProbeConfig)

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
        """A copy whose local paths (store root, dataset roots, encoder files) are absolute.

        Relative paths in a config mean "relative to where the command runs"; Ray workers run
        elsewhere, so stages resolve them once, on the driver, before anything is sent out.
        """
        base = (base or Path.cwd()).resolve()

        def absolute(path: str) -> str:
            return path if "://" in path else str((base / path).resolve())

        def encoder(train: TrainConfig) -> TrainConfig:
            path = train.init_encoder
            if path in (None, "scratch"):
                return train
            return train.model_copy(update={"init_encoder": absolute(path)})

        return self.model_copy(
            update={
                "store": self.store.model_copy(update={"root": absolute(self.store.root)}),
                "datasets": [
                    d.model_copy(update={"root": absolute(d.root)}) for d in self.datasets
                ],
                "pretrain": encoder(self.pretrain),
                "finetune": encoder(self.finetune),
            }
        )

    def section_hash(self, *sections: str) -> str:
        """Canonical hash of the output fields of the named top-level sections, e.g.
        `section_hash("decode")` (runtime fields left out, as in stage versions)."""
        return config_hash(*(output_value(getattr(self, s)) for s in sections))


_ECHO = reprlib.Repr()  # keyword arguments only from Python 3.12
_ECHO.maxlevel = 4
_ECHO.maxtuple = _ECHO.maxlist = _ECHO.maxarray = _ECHO.maxdict = 10
_ECHO.maxset = _ECHO.maxfrozenset = _ECHO.maxdeque = 10
_ECHO.maxstring = _ECHO.maxlong = _ECHO.maxother = MAX_ECHO_CHARS


def short_repr(value: Any, limit: int = MAX_ECHO_CHARS) -> str:
    """`repr(value)` cut to about `limit` characters (`...` marks the cut), built without ever
    making the full repr of a huge value."""
    text = _ECHO.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _format_validation_error(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "<root>"
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    if first["type"] == "extra_forbidden":
        return f"unknown config field '{where}'{more}"
    message = first["msg"].removeprefix("Value error, ")
    return f"config field '{where}': {message} (got {short_repr(first.get('input'))}){more}"


class YamlTooLarge(ValueError):
    """A YAML document whose aliases would expand it past the bounds above."""


class _BoundedLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses alias bombs ("billion laughs") while composing.

    An alias reuses a node, so a few hundred bytes can describe billions of values that every
    consumer (validation, error messages, dumps) would expand. Each composed node's expanded
    size is counted once; a document with more than `MAX_YAML_ALIASES` alias uses, more than
    `MAX_YAML_VALUES` values when expanded, or an alias inside its own anchor is refused.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._aliases = 0
        self._sizes: dict[int, int] = {}  # id(node) -> values it expands to

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_YAML_ALIASES:
                raise YamlTooLarge(f"more than {MAX_YAML_ALIASES} YAML aliases (*name)")
            node = super().compose_node(parent, index)
            self._size(node)  # an anchored node is sized when it is finished
            return node
        node = super().compose_node(parent, index)
        size = self._sizes[id(node)] = 1 + sum(self._size(child) for child in _children(node))
        if size > MAX_YAML_VALUES:
            raise YamlTooLarge(f"more than {MAX_YAML_VALUES} values, counting those YAML "
                               "aliases repeat")
        return node

    def _size(self, node: Any) -> int:
        size = self._sizes.get(id(node))
        if size is None:  # composed but not finished: an alias inside its own anchor
            raise YamlTooLarge("a YAML alias refers to the anchor it is inside (a cycle)")
        return size


def _children(node: Any) -> list[Any]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def safe_load(text: str) -> Any:
    """`yaml.safe_load` that raises `YamlTooLarge` for alias bombs (see `_BoundedLoader`)."""
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _one_line(exc: yaml.YAMLError) -> str:
    """A YAML error's problem and where it is, in one line."""
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if problem is None:
        return short_repr(" ".join(str(exc).split()))
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}"


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


def _merged(default: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """`given` over `default`, mapping by mapping: a section given in part keeps the defaults
    the pipeline gives it (e.g. finetuning's layer decay and label smoothing, which differ from
    a bare TrainConfig's), not the section class's."""
    merged = dict(default)
    for key, value in given.items():
        if isinstance(value, dict) and isinstance(default.get(key), dict):
            merged[key] = _merged(default[key], value)
        else:
            merged[key] = value
    return merged


def parse_override(text: str) -> tuple[str, Any]:
    """`"masks.dilation=2"` -> `("masks.dilation", 2)`; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    key, raw = text.split("=", 1)
    try:
        value = safe_load(raw) if raw.strip() else ""
    except YamlTooLarge as exc:
        raise ConfigError(f"override {short_repr(text)}: refused, {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {short_repr(text)}: value is not valid YAML "
                          f"({getattr(exc, 'problem', exc)})") from None
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
            loaded = safe_load(path.read_text(encoding="utf-8"))
        except YamlTooLarge as exc:
            raise ConfigError(f"{path}: refused, {exc}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({_one_line(exc)})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        data = loaded or {}
    for key, value in sections.items():
        data[key] = value
    defaults = PipelineConfig().model_dump(mode="json")
    for key, value in data.items():  # a section given in part keeps the pipeline's defaults
        if isinstance(value, dict) and isinstance(defaults.get(key), dict):
            data[key] = _merged(defaults[key], value)
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
