#!/usr/bin/env bash
# GPU check of the shard input path (bench/gpu_shards_check.py): decoded clips/s and training
# views/s at 16x224x224 with the device JPEG decoder (nvjpeg), and the ViT-B pretraining step
# (compiled, bf16, batch 64 views, k = 2) fed by the loader through the engine's device decode
# against the same step fed by random tensors (target >= 0.9x). Needs torch, torchvision, timm.
# The shards are made beforehand on the CPU machine (the whole project, synthetic signer):
#   .venv/bin/python bench/gpu_shards_check.py --make-shards runs/gpu_shards   # ~64 clips
# and travel with the working tree (runs/ is git-ignored: name `runs/gpu_shards` in carry).
# With OUT set, the numbers go to $OUT/gpu_shards.json and the log to $OUT/gpu_shards.log.
# About 3-5 minutes (torch.compile of ViT-B is most of it). Extra arguments go to the script.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$(command -v python3 || command -v python)}
SHARDS=${SHARDS:-runs/gpu_shards}

json_args=()
log=/dev/null
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  json_args=(--json "$OUT/gpu_shards.json")
  log="$OUT/gpu_shards.log"
fi

{
  echo "== environment"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
    || echo "nvidia-smi: not available"
  "$PYTHON" - <<'PY'
import importlib

for name in ("torch", "torchvision", "timm", "numpy", "safetensors", "pydantic", "pyarrow"):
    try:
        print(f"{name} {importlib.import_module(name).__version__}")
    except Exception as exc:  # noqa: BLE001
        print(f"{name}: not importable ({exc!r})")
PY
  echo "== shard input path: device decode and the loader-fed step"
  PYTHONUNBUFFERED=1 "$PYTHON" bench/gpu_shards_check.py --shards "$SHARDS" "${json_args[@]}" "$@"
} 2>&1 | tee "$log"
exit "${PIPESTATUS[0]}"
