"""A study: arms that differ from one pipeline config by a few overrides, each over seeds.

`signmae study configs/study_synth.yaml` runs every (arm, seed) as a `signmae-pipeline` flow run
of `config` with the study's `overrides`, then the arm's, then the seed's (`pretrain.seed` and
`finetune.seed`) on top, and tabulates what each arm's evaluation and probe measured. An arm is a
config like any other: a rerun reuses its finished stages. See docs/STUDY.md.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from .base import Section


class StudyArm(Section):
    """One arm: a name and the overrides that make it."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Name in tables and flow runs.")
    overrides: list[str] = Field(
        default_factory=list, description="`key=value` overrides, as `signmae run --set`."
    )
    seeds: list[int] | None = Field(
        None, description="Seeds of this arm (None: the study's `seeds`; ablations often take one)."
    )
    description: str = Field("", description="What the arm changes, for the table.")
    baseline: str | None = Field(
        None, description="Arm this one is compared with (None: the study's `baseline`)."
    )


class StudyConfig(Section):
    """The arms of a study over one pipeline config."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Name of the study.")
    config: str = Field(description="Pipeline config every arm starts from (name or YAML path).")
    overrides: list[str] = Field(
        default_factory=list, description="Overrides applied to every arm, before the arm's own."
    )
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1,
                             description="Seeds of every arm that does not name its own.")
    arms: list[StudyArm] = Field(min_length=1, description="The arms, in table order.")
    baseline: str | None = Field(
        None, description="Arm the others are compared with (None: the first arm)."
    )
    leakage_draws: int = Field(
        5, ge=1, description="Masks drawn per training clip to measure each arm's hand leakage."
    )
    out: str = Field("", description="Folder of the results (empty: runs/study/<name>).")

    @field_validator("arms")
    @classmethod
    def _unique_arms(cls, arms: list[StudyArm]) -> list[StudyArm]:
        names = [arm.name for arm in arms]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"arm names must be unique (repeated: {', '.join(repeated)})")
        return arms

    @model_validator(mode="after")
    def _known_baseline(self) -> StudyConfig:
        names = {a.name for a in self.arms}
        for baseline in [self.baseline, *(a.baseline for a in self.arms)]:
            if baseline is not None and baseline not in names:
                raise ValueError(f"baseline {baseline!r} is not one of the arms")
        return self

    @property
    def baseline_arm(self) -> StudyArm:
        """The arm the others are compared with."""
        name = self.baseline or self.arms[0].name
        return next(arm for arm in self.arms if arm.name == name)

    def baseline_of(self, arm: StudyArm) -> StudyArm:
        """The arm `arm` is compared with: its own `baseline`, else the study's."""
        if arm.baseline is None:
            return self.baseline_arm
        return next(other for other in self.arms if other.name == arm.baseline)

    def runs(self) -> list[tuple[StudyArm, int]]:
        """Every (arm, seed) in table order."""
        return [(arm, seed) for arm in self.arms for seed in (arm.seeds or self.seeds)]

    def run_overrides(self, arm: StudyArm, seed: int) -> list[str]:
        """The overrides of one (arm, seed) over `config`: the study's, the arm's, the seed."""
        return [*self.overrides, *arm.overrides,
                f"pretrain.seed={seed}", f"finetune.seed={seed}"]

    def out_dir(self) -> Path:
        return Path(self.out or f"runs/study/{self.name}")


def load_study(path: str | Path) -> StudyConfig:
    """Read and validate a study file; errors are `ConfigError` with a one-line message."""
    from . import ConfigError, _format_validation_error, safe_load

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"study file not found: {path}")
    try:
        data = safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, ValueError) as exc:
        raise ConfigError(f"{path}: not a valid study file ({exc})") from None
    try:
        return StudyConfig.model_validate(data or {})
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_format_validation_error(exc)}") from None
