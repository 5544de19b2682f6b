"""Time one pretraining step of our masked video autoencoder against `transformers`' VideoMAE.

A step is forward + backward + AdamW step, on random uint8 clips with a random mask at `--ratio`
(the same masks for every implementation), in one run so the ratio is fair. Implementations:

  reference      transformers VideoMAEForPreTraining, same widths/geometry, SDPA attention,
                 normalized float input (its format), torch AdamW (default: foreach on CUDA)
  ours           signmae_core.models MAE, eager, uint8 input, fused AdamW on CUDA
  modifiers of ours, joined with "-" (e.g. "ours-compiled-cudnn"):
    compiled     torch.compile (`--compile-mode`, default mode)
    cudagraphs   torch.compile mode "reduce-overhead" (CUDA graphs)
    cudnn, flash, efficient   only this SDPA backend (torch.nn.attention.sdpa_kernel)

Each runs in its own subprocess (isolated peak memory, fails softly, `--case-timeout`,
`--budget`), or with `--interleave` all in one process, one step of each in turn, so that every
implementation sees the same load on a busy shared CPU. Step time is the median step. FLOPs
are counted with `torch.utils.flop_counter.FlopCounterMode` on one eager forward + backward of
each model (a check: it does not see SDPA on CPU); MFU uses the analytic FLOPs of our step (the
work the step needs: encoder on visible tokens, decoder on all, head on masked; backward twice
the forward) for every row, against `--peak-tflops` (785 bf16 on an H100, as measured for the
reference figure). Needs only torch, timm and transformers, not the pipeline's config stack.

    python bench/bench_pretrain_step.py --variant tiny --frames 16 --size 112 --batch 4 \
        --steps 10 --warmup 2 --dtype fp32 --device cpu --interleave
    bash bench/gpu_check.sh   # the H100 configuration, about 6 minutes
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

IMPLS = ("reference", "ours")
MODIFIERS = ("compiled", "cudagraphs", "cudnn", "flash", "efficient")
H100_BF16_PEAK_TFLOPS = 785.0
NUM_MASKS = 4  # masks cycled through the steps


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="tiny", help="tiny, small, base or large")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--patch", type=int, default=16)
    parser.add_argument("--tubelet", type=int, default=2)
    parser.add_argument("--ratio", type=float, default=0.9, help="masking ratio")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps (compile included)")
    parser.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--compile", action="store_true", help="also run ours-compiled")
    parser.add_argument("--compile-mode", default=None, help="torch.compile mode of ours-compiled")
    parser.add_argument(
        "--impls", default=None, help="comma list: reference, ours, ours-<modifier>[-<modifier>]"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--input",
        choices=("uint8", "float"),
        default="uint8",
        help="our model's input: uint8 clips or float clips in [0, 1]",
    )
    parser.add_argument("--lr", type=float, default=1.5e-4)
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help=f"MFU peak (default {H100_BF16_PEAK_TFLOPS:g} on CUDA, none on CPU)",
    )
    parser.add_argument(
        "--interleave",
        action="store_true",
        help="run all implementations in one process, one step of each in turn "
        "(fair on a busy shared CPU; no per-implementation peak memory)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds over all implementations in turn; the fastest round counts",
    )
    parser.add_argument("--case-timeout", type=float, default=600, help="seconds per case")
    parser.add_argument("--budget", type=float, default=None, help="seconds for all cases")
    parser.add_argument(
        "--no-parity",
        action="store_true",
        help="skip the loss check of ours vs the reference with converted weights",
    )
    parser.add_argument("--json", default=None, help="write all results to this JSON file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run-one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.impls:
        args.impl_list = [name.strip() for name in args.impls.split(",") if name.strip()]
    else:
        args.impl_list = ["reference", "ours"] + (["ours-compiled"] if args.compile else [])
    for name in args.impl_list:
        try:
            impl_parts(name)
        except ValueError as exc:
            parser.error(str(exc))
    return args


def impl_parts(name: str) -> tuple[str, set[str]]:
    """`"ours-compiled-cudnn"` -> `("ours", {"compiled", "cudnn"})`; checks the names."""
    base, *mods = name.split("-")
    if base not in IMPLS or (base == "reference" and mods) or set(mods) - set(MODIFIERS):
        raise ValueError(
            f"unknown implementation {name!r}: reference, or ours with modifiers from "
            f"{', '.join(MODIFIERS)} joined by '-'"
        )
    if {"compiled", "cudagraphs"} <= set(mods):
        raise ValueError(f"{name!r}: compiled and cudagraphs exclude each other")
    backends = set(mods) & {"cudnn", "flash", "efficient"}
    if len(backends) > 1:
        raise ValueError(f"{name!r}: pick one attention backend")
    return base, set(mods)


# ----------------------------------------------------------------------------------------------
# One case, in a child process


def _spec(args: argparse.Namespace) -> Any:
    from signmae_core.models import ModelSpec

    return ModelSpec(
        variant=args.variant,
        num_frames=args.frames,
        img_size=args.size,
        patch_size=args.patch,
        tubelet_size=args.tubelet,
        norm_pix_loss=True,
    )


def _random_masks(batch: int, num_tokens: int, num_masked: int, device: Any) -> list[Any]:
    """`NUM_MASKS` random masks `(B, N)` bool with exactly `num_masked` True per row."""
    import torch

    masks = []
    for _ in range(NUM_MASKS):
        order = torch.rand(batch, num_tokens, device=device).argsort(dim=1)
        mask = torch.zeros(batch, num_tokens, dtype=torch.bool, device=device)
        masks.append(mask.scatter_(1, order[:, :num_masked], True))
    return masks


def _normalized_frames(clips: Any, spec: Any) -> Any:
    """uint8 `(B, 3, T, H, W)` -> the reference's input: normalized float `(B, T, 3, H, W)`."""
    import torch

    mean = torch.tensor(spec.mean, device=clips.device)[None, :, None, None, None]
    std = torch.tensor(spec.std, device=clips.device)[None, :, None, None, None]
    return ((clips.float() / 255.0 - mean) / std).permute(0, 2, 1, 3, 4).contiguous()


def _build_reference(spec: Any, device: Any) -> Any:
    from transformers import VideoMAEConfig, VideoMAEForPreTraining

    from signmae_core.models import get_variant, videomae_config_kwargs

    config = VideoMAEConfig(**videomae_config_kwargs(spec, get_variant(spec.variant)))
    try:
        model = VideoMAEForPreTraining._from_config(config, attn_implementation="sdpa")
    except (TypeError, ValueError, ImportError):
        model = VideoMAEForPreTraining(config)
    return model.float().to(device).train()


def _count_flops(step_fn: Any, model: Any) -> float | None:
    """FLOPs of one forward + backward (FlopCounterMode); None if counting fails."""
    try:
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            step_fn(0).backward()
        model.zero_grad(set_to_none=True)
        return float(counter.get_total_flops())
    except Exception as exc:  # noqa: BLE001 - the benchmark goes on without a count
        print(f"flop counting failed: {exc!r}", file=sys.stderr)
        model.zero_grad(set_to_none=True)
        return None


def _parity(reference: Any, data: BenchData) -> dict[str, float]:
    """Loss of the reference and of ours with the reference's weights converted, same batch."""
    import torch

    from signmae_core.models import create_pretrain_model, load_videomae_pretrained

    spec = data.spec
    ours = create_pretrain_model(spec).to(data.device).train()
    load_videomae_pretrained(ours, reference.state_dict(), spec.num_frames, spec.img_size)
    sub = slice(0, min(4, data.clips.shape[0]))
    clips, mask = data.clips[sub], data.masks[0][sub]
    with torch.no_grad(), data.autocast():
        ref_loss = float(reference(_normalized_frames(clips, spec), bool_masked_pos=mask).loss)
        our_loss = float(ours(clips, mask)["loss"])
    return {"reference_loss": ref_loss, "ours_loss": our_loss, "abs_diff": abs(ref_loss - our_loss)}


def _sdpa_context(mods: set[str]) -> Any:
    """A factory of the context that restricts SDPA to the backend named in `mods`, if any."""
    names = {
        "cudnn": "CUDNN_ATTENTION",
        "flash": "FLASH_ATTENTION",
        "efficient": "EFFICIENT_ATTENTION",
    }
    chosen = [names[m] for m in mods if m in names]
    if not chosen:
        return contextlib.nullcontext
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = getattr(SDPBackend, chosen[0])
    return lambda: sdpa_kernel([backend])


def _timed_steps(
    train_step: Callable[[int], Any], first: int, steps: int, device: Any
) -> tuple[list[float], Any]:
    """Run `steps` steps; (seconds of each step, last loss).

    On CUDA the steps are delimited by CUDA events (no host sync between steps); on CPU by the
    wall clock.
    """
    import torch

    loss = None
    if device.type == "cuda":
        events = [torch.cuda.Event(enable_timing=True) for _ in range(steps + 1)]
        events[0].record()
        for i in range(steps):
            loss = train_step(first + i)
            events[i + 1].record()
        torch.cuda.synchronize(device)
        return [events[i].elapsed_time(events[i + 1]) / 1000 for i in range(steps)], loss
    times = []
    for i in range(steps):
        began = time.perf_counter()
        loss = train_step(first + i)
        times.append(time.perf_counter() - began)
    return times, loss


@dataclass
class BenchData:
    """What every implementation shares: device, settings, clips and masks."""

    device: Any
    spec: Any
    clips: Any  # (B, 3, T, H, W) uint8 on the device
    masks: list[Any]  # NUM_MASKS x (B, N) bool
    num_masked: int
    bf16: bool

    def autocast(self) -> Any:
        import torch

        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)


@dataclass
class Case:
    """One implementation ready to run: its train step and its result so far."""

    result: dict[str, Any]
    train_step: Callable[[int], Any]
    model: Any


def make_data(args: argparse.Namespace) -> BenchData:
    import torch

    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    torch.manual_seed(args.seed)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    spec = _spec(args)
    num_masked = int(args.ratio * spec.num_tokens)
    clips = torch.randint(
        0, 256, (args.batch, 3, args.frames, args.size, args.size), dtype=torch.uint8, device=device
    )
    masks = _random_masks(args.batch, spec.num_tokens, num_masked, device)
    return BenchData(device, spec, clips, masks, num_masked, args.dtype == "bf16")


def prepare_case(args: argparse.Namespace, impl: str, data: BenchData) -> Case:
    """Build one implementation and its optimizer; count its FLOPs (one eager fwd + bwd)."""
    import timm
    import torch

    from signmae_core.models import create_pretrain_model

    cuda = data.device.type == "cuda"
    masks, num_masked, autocast = data.masks, data.num_masked, data.autocast
    result: dict[str, Any] = {
        "impl": impl,
        "device": str(data.device),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "num_tokens": data.spec.num_tokens,
        "num_masked": num_masked,
    }
    if cuda:
        result["device_name"] = torch.cuda.get_device_name(data.device)
    base, mods = impl_parts(impl)
    if base == "reference":
        import transformers

        model = _build_reference(data.spec, data.device)
        result["transformers"] = transformers.__version__
        result["attention"] = getattr(model.config, "_attn_implementation", None)
        frames = _normalized_frames(data.clips, data.spec)
        optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)

        def eager_loss(i: int) -> Any:
            return model(frames, bool_masked_pos=masks[i % NUM_MASKS]).loss

        loss_of = eager_loss
        attention = contextlib.nullcontext
    else:
        model = create_pretrain_model(data.spec).to(data.device).train()
        inputs = data.clips if args.input == "uint8" else data.clips.float().div_(255.0)
        optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, fused=True if cuda else None)

        def eager_loss(i: int) -> Any:
            return model(inputs, masks[i % NUM_MASKS], num_masked=num_masked)["loss"]

        forward = model
        if "compiled" in mods:
            forward = torch.compile(model, mode=args.compile_mode)
            result["compile_mode"] = args.compile_mode or "default"
        elif "cudagraphs" in mods:
            forward = torch.compile(model, mode="reduce-overhead")
            result["compile_mode"] = "reduce-overhead"
        attention = _sdpa_context(mods)
        result["attention"] = next(iter(mods & {"cudnn", "flash", "efficient"}), "sdpa-default")

        def loss_of(i: int) -> Any:
            return forward(inputs, masks[i % NUM_MASKS], num_masked=num_masked)["loss"]

    result["params_m"] = sum(p.numel() for p in model.parameters()) / 1e6

    def counted(i: int) -> Any:
        with autocast():
            return eager_loss(i)

    result["flops_per_step"] = _count_flops(counted, model)

    def train_step(i: int) -> Any:
        with autocast(), attention():
            loss = loss_of(i)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    return Case(result, train_step, model)


def _warm_up(case: Case, args: argparse.Namespace, data: BenchData) -> None:
    import torch

    start = time.perf_counter()
    for i in range(args.warmup):
        case.train_step(i)
    if data.device.type == "cuda":
        torch.cuda.synchronize(data.device)
    case.result["warmup_s"] = time.perf_counter() - start


def _finish(
    case: Case, args: argparse.Namespace, data: BenchData, times: list[float], loss: Any
) -> None:
    """Step statistics, memory and (for the reference) the parity check into `case.result`."""
    import statistics

    result = case.result
    result["step_s"] = statistics.median(times)
    result["mean_step_s"] = sum(times) / len(times)
    result["clips_per_s"] = args.batch / result["step_s"]
    result["final_loss"] = float(loss) if loss is not None else None
    if data.device.type != "cuda":
        result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if result["impl"] == "reference" and not args.no_parity:
        try:
            result["parity"] = _parity(case.model, data)
        except Exception as exc:  # noqa: BLE001 - a failed check is reported, not fatal
            result["parity"] = {"error": repr(exc)}


def run_case(args: argparse.Namespace, impl: str) -> dict[str, Any]:
    """Build one implementation, warm it up, time `args.steps` steps; a JSON-ready result."""
    import torch

    data = make_data(args)
    case = prepare_case(args, impl, data)
    _warm_up(case, args, data)
    cuda = data.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(data.device)
    times, loss = _timed_steps(case.train_step, args.warmup, args.steps, data.device)
    if cuda:
        case.result["peak_mem_gib"] = torch.cuda.max_memory_allocated(data.device) / 2**30
    _finish(case, args, data, times, loss)
    return case.result


def run_interleaved(args: argparse.Namespace) -> list[dict[str, Any]]:
    """All implementations in this process, one step of each in turn (for noisy shared CPUs).

    Every implementation sees the same machine load; peak memory is not separable here.
    """
    data = make_data(args)
    cases = [prepare_case(args, impl, data) for impl in args.impl_list]
    for case in cases:
        _warm_up(case, args, data)
    times: list[list[float]] = [[] for _ in cases]
    losses: list[Any] = [None for _ in cases]
    for i in range(args.steps):
        for index, case in enumerate(cases):
            step_times, losses[index] = _timed_steps(
                case.train_step, args.warmup + i, 1, data.device
            )
            times[index] += step_times
    for index, case in enumerate(cases):
        _finish(case, args, data, times[index], losses[index])
        case.result.pop("peak_rss_mib", None)
    return [case.result for case in cases]


# ----------------------------------------------------------------------------------------------
# The parent: run each case in a subprocess, print a table


def analytic_flops_per_clip(args: argparse.Namespace) -> float:
    """Training FLOPs of one clip of our model: 3 x forward, 2 FLOPs per multiply-add.

    Encoder on the visible tokens, decoder on all tokens, pixel head on the masked tokens.
    """
    from signmae_core.models import get_variant

    spec = _spec(args)
    var = get_variant(args.variant)
    n = spec.num_tokens
    n_masked = int(args.ratio * n)
    n_vis = n - n_masked
    d, dd, r = var.embed_dim, var.decoder_dim, var.mlp_ratio
    macs = n_vis * spec.patch_dim * d
    macs += var.depth * (n_vis * (4 + 2 * r) * d * d + 2 * n_vis * n_vis * d)
    macs += n_vis * d * dd
    macs += var.decoder_depth * (n * (4 + 2 * r) * dd * dd + 2 * n * n * dd)
    macs += n_masked * dd * spec.patch_dim
    return 3 * 2 * macs


def _child_command(impl: str) -> list[str]:
    argv = [a for a in sys.argv[1:]]
    return [sys.executable, str(Path(__file__).resolve()), *argv, "--run-one", impl]


def run_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Each implementation in a subprocess, `--repeat` rounds in turn; the fastest round kept."""
    start = time.perf_counter()
    rounds = [_run_round(args, start) for _ in range(args.repeat)]
    best = []
    for index in range(len(args.impl_list)):
        tries = [r[index] for r in rounds]
        good = [t for t in tries if "error" not in t]
        if not good:
            best.append(tries[0])
            continue
        chosen = dict(max(good, key=lambda t: t["clips_per_s"]))
        chosen["rounds_clips_per_s"] = [round(t["clips_per_s"], 3) for t in good]
        best.append(chosen)
    return best


def _run_round(args: argparse.Namespace, start: float) -> list[dict[str, Any]]:
    """One subprocess per implementation; `start` is when the whole benchmark began."""
    results = []
    for impl in args.impl_list:
        timeout = args.case_timeout
        if args.budget is not None:
            left = args.budget - (time.perf_counter() - start)
            if left < 30:
                results.append({"impl": impl, "error": "skipped: time budget spent"})
                print(f"[{impl}] skipped (time budget spent)", flush=True)
                continue
            timeout = min(timeout, left)
        print(f"[{impl}] running (timeout {timeout:.0f} s) ...", flush=True)
        began = time.perf_counter()
        try:
            proc = subprocess.run(
                _child_command(impl),
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=REPO_ROOT,
            )
        except subprocess.TimeoutExpired:
            results.append({"impl": impl, "error": f"timed out after {timeout:.0f} s"})
            print(f"[{impl}] timed out", flush=True)
            continue
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
            results.append({"impl": impl, "error": f"exit {proc.returncode}: {tail[-2000:]}"})
            print(f"[{impl}] failed (exit {proc.returncode}):\n{tail}", flush=True)
            continue
        result = json.loads(lines[-1][len("RESULT ") :])
        result["wall_s"] = time.perf_counter() - began
        results.append(result)
        print(f"[{impl}] done in {result['wall_s']:.0f} s", flush=True)
    return results


def summarize(args: argparse.Namespace, results: list[dict[str, Any]]) -> dict[str, Any]:
    """Add MFU and speed-up over the reference to each result; the table's numbers."""
    device_is_cuda = args.device.startswith("cuda") or any(
        str(r.get("device", "")).startswith("cuda") for r in results
    )
    peak = args.peak_tflops or (H100_BF16_PEAK_TFLOPS if device_is_cuda else None)
    model_flops_per_clip = analytic_flops_per_clip(args)
    reference = next((r for r in results if r["impl"] == "reference" and "error" not in r), None)
    for r in results:
        if "error" in r:
            continue
        if r.get("flops_per_step"):
            r["counted_gflop_per_clip"] = r["flops_per_step"] / args.batch / 1e9
        r["model_gflop_per_clip"] = model_flops_per_clip / 1e9
        if peak:
            r["mfu"] = r["clips_per_s"] * model_flops_per_clip / (peak * 1e12)
        if reference:
            r["speedup_vs_reference"] = r["clips_per_s"] / reference["clips_per_s"]
            if "peak_mem_gib" in r and "peak_mem_gib" in reference:
                r["memory_vs_reference"] = r["peak_mem_gib"] / reference["peak_mem_gib"]
    config = {k: v for k, v in vars(args).items() if k not in ("run_one", "impl_list", "json")}
    return {
        "config": config,
        "impls": args.impl_list,
        "peak_tflops": peak,
        "flops_method": "analytic model FLOPs of our step (2 per multiply-add, backward = 2x "
        "forward) for every row; GFLOP/clip column: FlopCounterMode on one eager fwd+bwd of that "
        "row's model (it does not see SDPA on CPU)",
        "analytic_gflop_per_clip": model_flops_per_clip / 1e9,
        "results": results,
    }


def print_table(summary: dict[str, Any]) -> None:
    cfg = summary["config"]
    print(
        f"\nvariant={cfg['variant']} frames={cfg['frames']} size={cfg['size']} "
        f"patch={cfg['patch']} tubelet={cfg['tubelet']} ratio={cfg['ratio']} "
        f"batch={cfg['batch']} dtype={cfg['dtype']} steps={cfg['steps']} warmup={cfg['warmup']}"
    )
    first = next((r for r in summary["results"] if "error" not in r), {})
    print(
        f"device: {first.get('device_name', first.get('device', '?'))}  torch "
        f"{first.get('torch', '?')}  MFU peak: {summary['peak_tflops']} TFLOP/s"
    )
    print("clips/s = batch / median step time (forward + backward + optimizer step)")
    print(
        f"MFU FLOPs: {summary['analytic_gflop_per_clip']:.1f} GFLOP/clip, {summary['flops_method']}"
    )
    header = (
        f"{'impl':<20}{'clips/s':>10}{'step ms':>10}{'peak mem':>12}{'MFU':>8}"
        f"{'vs ref':>8}{'GFLOP/clip':>12}{'warmup s':>10}{'loss':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in summary["results"]:
        if "error" in r:
            print(f"{r['impl']:<20}  ERROR: {r['error'].splitlines()[-1][:120]}")
            continue
        if "peak_mem_gib" in r:
            mem = f"{r['peak_mem_gib']:.2f} GiB"
        elif "peak_rss_mib" in r:
            mem = f"{r['peak_rss_mib']:.0f} MiB*"
        else:
            mem = "-"
        mfu = f"{100 * r['mfu']:.1f}%" if "mfu" in r else "-"
        ratio = f"{r['speedup_vs_reference']:.2f}x" if "speedup_vs_reference" in r else "-"
        gflop = f"{r['counted_gflop_per_clip']:.1f}" if "counted_gflop_per_clip" in r else "-"
        print(
            f"{r['impl']:<20}{r['clips_per_s']:>10.1f}{1000 * r['step_s']:>10.1f}{mem:>12}"
            f"{mfu:>8}{ratio:>8}{gflop:>12}{r['warmup_s']:>10.1f}{r['final_loss']:>9.4f}"
        )
    if any("peak_rss_mib" in r for r in summary["results"]):
        print("* CPU: peak resident memory of the whole benchmark process")
    for r in summary["results"]:
        if len(r.get("rounds_clips_per_s", [])) > 1:
            print(f"{r['impl']}: clips/s per round {r['rounds_clips_per_s']} (fastest shown)")
    for r in summary["results"]:
        if "parity" in r:
            print(f"parity (reference weights converted into ours, same batch): {r['parity']}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.run_one:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        print("RESULT " + json.dumps(run_case(args, args.run_one)), flush=True)
        return 0
    results = run_interleaved(args) if args.interleave else run_all(args)
    summary = summarize(args, results)
    print_table(summary)
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary, indent=2), encoding="utf-8")
        print(f"wrote {path}")
    return 0 if all("error" not in r for r in summary["results"]) else 1


if __name__ == "__main__":
    sys.exit(main())
