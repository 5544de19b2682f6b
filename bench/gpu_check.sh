#!/usr/bin/env bash
# GPU check of the pretraining step at the published configuration: ViT-B, 16x224x224, tubelet 2,
# patch 16, mask ratio 0.9, bf16, batch 64. In one run: transformers' VideoMAEForPreTraining
# (the reference) and ours eager, ours with cuDNN attention, ours compiled (flash and cuDNN).
# Each case runs in its own process and fails on its own; cases that no longer fit the time
# budget (BUDGET seconds, default 330) are skipped, so the whole check takes about 6 minutes.
# Run from anywhere on a GPU machine with torch, timm and transformers; with OUT set, the table's
# numbers go to $OUT/bench_pretrain_step.json and the log to $OUT/gpu_check.log.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$(command -v python3 || command -v python)}
BUDGET=${BUDGET:-330}
IMPLS=${IMPLS:-reference,ours,ours-cudnn,ours-compiled,ours-compiled-cudnn}

json_args=()
log=/dev/null
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  json_args=(--json "$OUT/bench_pretrain_step.json")
  log="$OUT/gpu_check.log"
fi

{
  echo "== environment"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
    || echo "nvidia-smi: not available"
  "$PYTHON" - <<'PY'
import importlib

for name in ("torch", "timm", "transformers", "numpy", "safetensors"):
    try:
        print(f"{name} {importlib.import_module(name).__version__}")
    except Exception as exc:  # noqa: BLE001
        print(f"{name}: not importable ({exc!r})")
import torch

print(f"cuda available: {torch.cuda.is_available()}, CUDA {torch.version.cuda}")
PY
  echo "== pretraining step: reference vs ours"
  "$PYTHON" bench/bench_pretrain_step.py --variant base --frames 16 --size 224 --patch 16 \
    --tubelet 2 --ratio 0.9 --batch 64 --dtype bf16 --device cuda --warmup 5 --steps 15 \
    --impls "$IMPLS" --budget "$BUDGET" --case-timeout 200 "${json_args[@]}"
} 2>&1 | tee "$log"
exit "${PIPESTATUS[0]}"
