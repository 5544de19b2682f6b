"""Class groups: sets of classes a dataset declares as alike (minimal pairs, confusable signs).

A dataset may put `class_groups.json` at its root (see docs/INGEST.md)::

    {"groups": [{"kind": "handshape", "classes": ["five_tap_chin", "flat_tap_chin"]},
                {"kind": "movement", "classes": ["five_tap_chin", "five_circle_chin"]}]}

`kind` names what the classes of a group differ in (any short name); `classes` are labels as
written in the label file, at least two, no repeats. The ingest stage reads the file (its path
resolved inside the dataset root), checks every label against the class map and writes it into
its output beside the manifest; evaluation reports, per kind, the accuracy of choosing among
the classes of the true class's group (`signmae_core.eval.metrics.group_accuracy`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from signmae_core.errors import InputError

from .adapters import resolve_inside

CLASS_GROUPS_NAME = "class_groups.json"
_KIND = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def parse_class_groups(text: str, source: str = CLASS_GROUPS_NAME) -> list[dict[str, Any]]:
    """The groups of a class groups file's text: `[{"kind": str, "classes": [str, ...]}]`.

    Raises ValueError (naming `source`) for anything that is not the documented format; keys
    other than `kind` and `classes` in a group are dropped.
    """
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{source} is not JSON ({exc})") from None
    groups = data.get("groups") if isinstance(data, dict) else None
    if not isinstance(groups, list):
        raise ValueError(f'{source} must be {{"groups": [{{"kind": ..., "classes": [...]}}]}}')
    parsed = []
    for i, group in enumerate(groups):
        kind = group.get("kind") if isinstance(group, dict) else None
        classes = group.get("classes") if isinstance(group, dict) else None
        if not isinstance(kind, str) or not _KIND.match(kind):
            raise ValueError(f"{source}: group {i} needs a kind (letters, digits, _ . -)")
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise ValueError(f"{source}: group {i} needs classes, a list of labels")
        if len(classes) < 2 or len(set(classes)) != len(classes):
            raise ValueError(f"{source}: group {i} needs at least two distinct classes")
        parsed.append({"kind": kind, "classes": list(classes)})
    return parsed


def class_groups_json(groups: list[dict[str, Any]]) -> str:
    """The file's text for `groups` (UTF-8, labels as written)."""
    return json.dumps({"groups": groups}, ensure_ascii=False, indent=1) + "\n"


def class_groups_path(root: str | Path) -> Path | None:
    """The dataset's class groups file, resolved inside `root` as label files are (lexically;
    a symbolic link placed inside the root is trusted); None when it has none."""
    path, _, error = resolve_inside(Path(root), CLASS_GROUPS_NAME)
    if error or path is None or not path.is_file():
        return None
    return path


def read_class_groups(root: str | Path) -> list[dict[str, Any]] | None:
    """The groups of the dataset at `root` (None when it has no class groups file)."""
    path = class_groups_path(root)
    if path is None:
        return None
    try:
        return parse_class_groups(path.read_text(encoding="utf-8"), str(path))
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise InputError(f"bad class groups file: {exc}") from None


def check_class_groups(groups: list[dict[str, Any]], classes: list[str]) -> None:
    """InputError naming the labels of `groups` that are not in the class map `classes`."""
    known = set(classes)
    unknown = sorted({c for g in groups for c in g["classes"] if c not in known})
    if unknown:
        shown = ", ".join(repr(c) for c in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise InputError(
            f"{CLASS_GROUPS_NAME} names classes that no labelled video has: {shown}{more}"
        )
