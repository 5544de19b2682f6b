"""The data stages' outputs on `ci_tiny` stay what they were: content checksums held in a file.

Refactoring the stage machinery must not change a single stored byte that carries meaning. The
checksums in `golden/ci_tiny_outputs.json` were recorded before the DAG plan moved the stages
onto one envelope; regenerate them only when an output is meant to change, and say why in the
commit: `SIGNMAE_REGENERATE_GOLDEN=1 pytest tests/test_golden_outputs.py`.

Files are keyed by `<stage>/<path in the version folder>` (versions are names, not content).
Clip files and JSON are hashed as raw bytes. Parquet tables are hashed by content: the columns
that record where and how fast the run happened (`uri`, timings) and the writer's `version` key
in the schema metadata are left out; everything else, values and metadata, counts.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.cli import main

GOLDEN = Path(__file__).parent / "golden" / "ci_tiny_outputs.json"
VOLATILE_COLUMNS = {"uri", "decode_s", "decode_cpu_s", "seconds", "cpu_seconds"}
FIXED_MTIME = 1767225600  # 2026-01-01T00:00:00Z: the manifest records file mtimes
DATA_STAGES = ("ingest", "decode", "extract", "masks")


def _strip_version(metadata: dict[bytes, bytes] | None) -> dict[str, object]:
    plain: dict[str, object] = {}
    for key, value in (metadata or {}).items():
        text = value.decode("utf-8")
        try:
            parsed = json.loads(text)
        except ValueError:
            plain[key.decode()] = text
            continue
        if isinstance(parsed, dict):
            parsed.pop("version", None)
        plain[key.decode()] = parsed
    return plain


def parquet_digest(path: Path) -> str:
    """sha256 of a table's meaningful content: stable columns, values, field and table metadata."""
    table = pq.read_table(path)
    keep = [name for name in table.column_names if name not in VOLATILE_COLUMNS]
    table = table.select(keep)
    schema_meta = _strip_version(table.schema.metadata)
    fields = [pa.field(f.name, f.type, f.nullable, f.metadata) for f in table.schema]
    table = pa.Table.from_arrays(table.columns, schema=pa.schema(fields))
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    digest = hashlib.sha256(sink.getvalue())
    digest.update(json.dumps(schema_meta, sort_keys=True).encode())
    return digest.hexdigest()


def output_digests(artifacts: Path, dataset: str = "synthetic") -> dict[str, str]:
    """`<stage>/<rel>` -> digest for every output file of the data stages (records left out)."""
    digests = {}
    for stage in DATA_STAGES:
        for version_dir in sorted(p for p in (artifacts / dataset / stage).iterdir() if p.is_dir()):
            if not (version_dir / "_stage.json").is_file():
                continue
            for path in sorted(p for p in version_dir.rglob("*") if p.is_file()):
                rel = path.relative_to(version_dir).as_posix()
                if rel == "_stage.json":
                    continue
                if path.suffix == ".parquet":
                    digests[f"{stage}/{rel}"] = parquet_digest(path)
                else:
                    digests[f"{stage}/{rel}"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def make_outputs(workdir: Path) -> Path:
    """Synthesize ci_tiny's dataset with fixed mtimes and run the data stages on it."""
    data = workdir / "data" / "synthetic"
    assert main(["synth", "--out", str(data), "-c", "ci_tiny"]) == 0
    for path in [data, *data.rglob("*")]:
        os.utime(path, (FIXED_MTIME, FIXED_MTIME), follow_symlinks=False)
    overrides = ["--set", "store.root=artifacts", "--set", "datasets.0.root=data/synthetic"]
    assert main(["run", *DATA_STAGES, "-c", "ci_tiny", *overrides]) == 0
    return workdir / "artifacts"


@pytest.mark.slow
def test_data_stage_outputs_match_the_recorded_checksums(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ray_local: None
) -> None:
    monkeypatch.chdir(tmp_path)
    digests = output_digests(make_outputs(tmp_path))
    if os.environ.get("SIGNMAE_REGENERATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(digests, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    expected = json.loads(GOLDEN.read_text(encoding="utf-8"))
    assert sorted(digests) == sorted(expected)
    changed = [name for name in expected if digests[name] != expected[name]]
    assert not changed, f"outputs changed: {changed}"
