"""Shared pieces of the typed configuration: a strict base model and canonical hashing."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic_core import to_jsonable_python


class Section(BaseModel):
    """Base of every config section: unknown fields are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


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
