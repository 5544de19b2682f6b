"""Shared pieces of the typed configuration: a strict base model, runtime marks, hashing.

A field either shapes a stage's output or only how the work is carried out (workers, CPUs,
timeouts, devices, where files live). The second kind is declared with `runtime_field(...)`;
`Section.output_dump()` leaves those out, so `output_hash()` changes exactly when an output would.
No other list of field names decides a version.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import to_jsonable_python

RUNTIME_MARK = "runtime"


def runtime_field(default: Any = ..., **kwargs: Any) -> Any:
    """A `pydantic.Field` that changes how a stage runs, never what it writes (out of hashes)."""
    extra = dict(kwargs.pop("json_schema_extra", None) or {})
    extra[RUNTIME_MARK] = True
    return Field(default, json_schema_extra=extra, **kwargs)


def is_runtime(model: type[BaseModel], name: str) -> bool:
    """True when field `name` of `model` is marked with `runtime_field`."""
    extra = model.model_fields[name].json_schema_extra
    return isinstance(extra, dict) and bool(extra.get(RUNTIME_MARK))


def output_value(value: Any) -> Any:
    """A config value as plain JSON without runtime fields (sections, lists and dicts of them)."""
    if isinstance(value, Section):
        return value.output_dump()
    if isinstance(value, (list, tuple)):
        return [output_value(v) for v in value]
    if isinstance(value, dict):
        return {k: output_value(v) for k, v in value.items()}
    return to_jsonable_python(value)


class Section(BaseModel):
    """Base of every config section: unknown fields, NaN and infinities are errors, and
    assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    def output_dump(self) -> dict[str, Any]:
        """The fields that shape outputs, as plain JSON values (runtime fields left out)."""
        return {
            name: output_value(getattr(self, name))
            for name in type(self).model_fields
            if not is_runtime(type(self), name)
        }

    def output_hash(self) -> str:
        """Canonical hash of `output_dump()`: the part of a stage's version this section gives."""
        return config_hash(self.output_dump())

    @classmethod
    def runtime_fields(cls) -> list[str]:
        """Names of this section's runtime fields (for docs and `signmae config`)."""
        return [name for name in cls.model_fields if is_runtime(cls, name)]


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: the same value gives the same text everywhere."""
    plain = to_jsonable_python(value)
    return json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def config_hash(*parts: Any, length: int = 12) -> str:
    """Stable short hash of one or more config sections (or plain JSON values).

    Stable across runs and machines: it hashes the canonical JSON, never Python object ids.
    """
    digest = hashlib.sha256()
    for part in parts:
        digest.update(canonical_json(part).encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()[:length]
