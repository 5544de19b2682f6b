#!/usr/bin/env bash
# Device check for the masking samplers: CUDA correctness and the cost of pooling + sampling
# against a ViT-B pretraining step (16x224x224, batch 64, bf16). Needs torch and timm only.
set -u
python - <<'PY'
import torch
from signmae_core.masking import FIELD_NAMES, ScoreWeights, TokenMasker, num_masked
from signmae_core.masking.samplers import RandomSampler, SegmentationSampler, TubeSampler

device = torch.device("cuda")
grid = (8, 14, 14)
n = grid[0] * grid[1] * grid[2]
gen = torch.Generator(device=device).manual_seed(0)
scores = torch.rand(64, n, device=device, generator=gen)
hands = scores > 0.8
for sampler in (TubeSampler(), RandomSampler(), SegmentationSampler(4.0, 0.1)):
    for ratio in (0.5, 0.75, 0.9):
        mask = sampler(scores, grid, ratio, gen, hands=hands)
        assert mask.device.type == "cuda" and (mask.sum(1) == num_masked(grid, ratio)).all()
fields = torch.zeros(64, len(FIELD_NAMES), 16, 28, 28, device=device, dtype=torch.float16)
fields[:, 0, :, 10:14, 4:8] = 1
masker = TokenMasker(SegmentationSampler(30.0), grid, 0.9, ScoreWeights(), 0.05)
draw = masker(fields, generator=gen)
hand = draw.maps.hands.any(1)
assert draw.mask.is_cuda and draw.mask[hand].all(), "hand tokens not all masked"
print("cuda sampler checks: ok on", torch.cuda.get_device_name())
PY
python bench/bench_masks.py --only step --device cuda --variant base --size 224 --frames 16 \
    --batch 64 --repeats 10 --json "$OUT/step_gpu.json"
python bench/bench_masks.py --only step --device cuda --variant tiny --size 112 --frames 16 \
    --batch 64 --repeats 10 --json "$OUT/step_gpu_tiny.json"
# masks drawn on the CPU (as a loader would) against the GPU step
OMP_NUM_THREADS=4 python bench/bench_masks.py --only step --device cuda --mask-device cpu \
    --variant base --size 224 --frames 16 --batch 64 --repeats 10 --json "$OUT/step_gpu_cpu_masks.json"
