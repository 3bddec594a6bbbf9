"""Training and embedding throughput on one device: the fast path against a plain eager baseline.

    python benchmarks/gpu_step.py --device cuda                  # ben14k, batch 512, bf16, embed batch 1024
    python benchmarks/gpu_step.py --device cpu --preset tiny --batch 8 --steps 2 --embed-batch 8   # code path

The training step is train_accelerate.py's, built here from the model API and the pieces of crjepa.train
(the loop's `train_step` needs a whole run): native-size images -> preprocess_batch on the device for both sensors ->
masks from masks.draw_masks (keyed by sample id) -> model({sensor: pixels}, sigreg_step, masks, check_finite=False)
under autocast -> backward -> clip_grad_norm_(1.0) -> AdamW -> zero_grad.
Baseline: the same model and step with every fast option off (pack_sensors=False, no compile, foreach AdamW).
Fast: pack_sensors=True, compile.compile_for_training (the `training.compile` of train_accelerate.py: blocks =
regional compile of stems and blocks, the default on CUDA; model = the whole forward too) and optim.make_optimizer
(fused AdamW on CUDA), the functions train_accelerate.py calls.
FLOPs are counted with torch.utils.flop_counter.FlopCounterMode on one eager step (the packed and plain paths
count the same, tests/test_model_fast_path.py); MFU = counted FLOP/s / peak, the peak being --peak-tflops or, by
default, a measured large bf16 matmul on the same card. Both paths run in one process on one card, so every
figure has its ratio. --profile FILE adds torch.profiler tables of the fast path and its device time split by
kernel kind (matmul, attention, fused, optimizer, other) against wall time. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import resource
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from crjepa.train.compile import compile_for_training
from crjepa.train.config import COMPILE_MODES
from crjepa.train.masks import draw_masks
from crjepa.train.optim import make_optimizer, param_groups
from modeling_crjepa import CRJepaConfig, CRJepaForPreTraining, preprocess_batch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}
SDPA_BACKENDS = {
    "default": None,
    "flash": SDPBackend.FLASH_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "math": SDPBackend.MATH,
}


# ---------------------------------------------------------------------------------------------- helpers
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[int], Any], device: torch.device, warmup: int, steps: int) -> float:
    """Seconds per call of fn(i), after `warmup` untimed calls (compilation, allocator warm-up)."""
    for i in range(warmup):
        fn(i)
    synchronize(device)
    start = time.perf_counter()
    for i in range(warmup, warmup + steps):
        fn(i)
    synchronize(device)
    return (time.perf_counter() - start) / steps


def peak_memory_gb(device: torch.device) -> float:
    """CUDA: max allocated since the last reset; CPU: the process's max RSS (includes the runtime)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def reset_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def matmul_tflops(device: torch.device, dtype: torch.dtype | None) -> float:
    """Achievable dense matmul TFLOP/s of this device: the MFU denominator when --peak-tflops is not given."""
    n = 8192 if device.type == "cuda" else 512
    x = torch.randn(n, n, device=device, dtype=dtype or torch.float32)
    seconds = timed(lambda i: x @ x, device, warmup=3, steps=20 if device.type == "cuda" else 5)
    return 2 * n**3 / seconds / 1e12


def native_batch(config: CRJepaConfig, batch: int, size: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Random images at native size as the loader delivers them (SAR in dB, optical reflectance-like)."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    images = {}
    for sensor, channels in config.sensors.items():
        x = torch.randn(batch, channels, size, size, generator=gen)
        mean = torch.tensor(config.band_mean[sensor]).view(1, -1, 1, 1)
        std = torch.tensor(config.band_std[sensor]).view(1, -1, 1, 1)
        images[sensor] = (mean + std * x).to(device)
    return images


# ---------------------------------------------------------------------------------------------- the step
def optimizer_for(model: CRJepaForPreTraining, fast: bool, device: torch.device) -> torch.optim.Optimizer:
    """The fast path's AdamW is training's (fused on CUDA); the baseline's the plain foreach one. Both: the
    paper's weight decay 0.04 on weight matrices only."""
    if fast:
        return make_optimizer(model, 1e-4, 0.04, (0.9, 0.999), device)
    return torch.optim.AdamW(param_groups(model, 0.04), lr=1e-4, betas=(0.9, 0.999))


def forward_backward(
    model: CRJepaForPreTraining, images: dict[str, torch.Tensor], step: int, amp: torch.dtype | None
) -> torch.Tensor:
    """Preprocess on the device, draw the step's masks, compute the objective and back-propagate."""
    config = model.config
    pixels = {s: preprocess_batch(images[s], s, config, check_finite=False) for s in config.sensor_names}
    first = pixels[config.sensor_names[0]]
    ids = [f"pair-{step}-{i}" for i in range(first.shape[0])]  # the loader's sample ids key the masks
    masks = draw_masks(config, ids, step, seed=0, device=first.device)
    with torch.autocast(first.device.type, dtype=amp or torch.float32, enabled=amp is not None):
        out = model(pixels, sigreg_step=step, masks=masks, check_finite=False)
    out.loss.backward()
    return out.loss.detach()


def train_step(
    model: CRJepaForPreTraining,
    optimizer: torch.optim.Optimizer,
    images: dict[str, torch.Tensor],
    step: int,
    amp: torch.dtype | None,
    max_grad_norm: float = 1.0,
) -> torch.Tensor:
    """One optimiser step, with no host synchronisation (the loss stays on the device)."""
    loss = forward_backward(model, images, step, amp)
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of fn's operators; attention through the math kernels, which every device's counter knows (the
    counter has no formula for the CPU's fused attention kernel)."""
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def host_syncs(fn: Callable[[], Any], device: torch.device) -> int | None:
    """Synchronising CUDA calls made by fn (torch.cuda sync debug mode); None off CUDA."""
    if device.type != "cuda":
        return None
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn()
            synchronize(device)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


KERNEL_KINDS = (
    ("attention", ("flash", "fmha", "attention", "sdpa")),
    ("matmul", ("gemm", "nvjet", "xmma", "cutlass", "cublas", "wgmma", "aten::mm", "aten::addmm", "aten::bmm")),
    ("fused (triton)", ("triton",)),
    ("optimizer", ("adam", "multi_tensor", "foreach")),
    ("elementwise/other", ("",)),
)
"""Kernel (CUDA) or operator (CPU) names -> kind, first match wins (attention before matmul: some attention
kernels are CUTLASS)."""


def profile_steps(fn: Callable[[int], Any], device: torch.device, steps: int, path: str, title: str) -> dict[str, Any]:
    """torch.profiler over `steps` calls of fn(i): the top operators/kernels table written to `path`, and the
    device time split by kernel kind (matmul, attention, fused, optimizer, other) against the wall time, so a
    run tells where the step's time goes (device busy vs idle: launch- or host-bound)."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    fn(0)
    synchronize(device)
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        for i in range(steps):
            fn(i)
        synchronize(device)
        wall = time.perf_counter() - start
    events = prof.key_averages()

    def self_time(evt) -> float:  # microseconds, device time on CUDA, CPU time otherwise
        if cuda:
            return float(getattr(evt, "self_device_time_total", 0) or getattr(evt, "self_cuda_time_total", 0))
        return float(evt.self_cpu_time_total)

    split: dict[str, float] = {kind: 0.0 for kind, _ in KERNEL_KINDS}
    for evt in events:
        if cuda and str(getattr(evt, "device_type", "")).endswith("CPU"):
            continue
        name = evt.key.lower()
        kind = next(k for k, needles in KERNEL_KINDS if any(n in name for n in needles))
        split[kind] += self_time(evt)
    busy = sum(split.values()) / 1e6
    summary = {
        "title": title,
        "steps": steps,
        "wall_s_per_step": wall / steps,
        "device_busy_s_per_step": busy / steps if cuda else None,
        "split_s_per_step": {k: round(v / 1e6 / steps, 5) for k, v in split.items()},
    }
    sort_by = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    with open(path, "a") as f:
        f.write(f"## {title}\n{json.dumps(summary)}\n")
        f.write(events.table(sort_by=sort_by, row_limit=45, max_name_column_width=90))
        f.write("\n\n")
    return summary


# ---------------------------------------------------------------------------------------------- runs
def measure(
    model: CRJepaForPreTraining,
    args: argparse.Namespace,
    device: torch.device,
    fast: bool,
    images: dict[str, torch.Tensor],
    embed_pixels: torch.Tensor,
    amp: torch.dtype | None,
) -> dict[str, Any]:
    """Training pairs/s, peak memory and embedding images/s of one configuration of the model."""
    model.config.pack_sensors = fast
    compiled = "none"
    if fast:  # train_accelerate.py's training.compile (an explicit torch.compile mode passed on)
        compiled = compile_for_training(
            model, args.compile, device, **({"mode": args.compile_mode} if args.compile_mode else {})
        )
    model.train()
    optimizer = optimizer_for(model, fast, device)
    reset_memory(device)
    step_s = timed(lambda i: train_step(model, optimizer, images, i, amp), device, args.warmup, args.steps)
    result = {
        "compile": compiled,
        "step_s": step_s,
        "train_pairs_per_s": args.batch / step_s,
        "peak_memory_gb": peak_memory_gb(device),
        "host_syncs_in_step": host_syncs(lambda: train_step(model, optimizer, images, 0, amp), device),
    }
    if fast and args.profile:
        result["profile_train"] = profile_steps(
            lambda i: train_step(model, optimizer, images, i, amp),
            device,
            args.profile_steps,
            args.profile,
            "fast path: training step",
        )
    optimizer = None  # its state freed before the embedding is timed
    model.zero_grad(set_to_none=True)
    model.eval()
    sensor = model.sensor_names[1]

    def embed(i: int) -> torch.Tensor:
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            return model.crjepa.get_embeddings(embed_pixels, sensor=sensor, space="unified", check_finite=not fast)

    embed_s = timed(embed, device, args.warmup, args.embed_steps)
    result["embed_images_per_s"] = embed_pixels.shape[0] / embed_s
    if fast and args.profile:
        result["profile_embed"] = profile_steps(
            embed, device, args.profile_steps, args.profile, "fast path: embedding batch"
        )
    reset_memory(device)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--preset", default="ben14k")
    parser.add_argument("--batch", type=int, default=512, help="training pairs per step")
    parser.add_argument("--embed-batch", type=int, default=1024)
    parser.add_argument("--native-size", type=int, default=120, help="native image side (BigEarthNet: 120)")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per path")
    parser.add_argument("--embed-steps", type=int, default=None, help="timed embedding batches (default: --steps)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls first (default 5 on CUDA, 1 on CPU)")
    parser.add_argument(
        "--dtype", choices=sorted(DTYPES), default=None, help="autocast dtype (default bf16 on CUDA, fp32 on CPU)"
    )
    parser.add_argument(
        "--compile",
        choices=list(COMPILE_MODES),
        default="auto",
        help="fast path: training.compile (auto = blocks on CUDA, none elsewhere; blocks = regional "
        "torch.compile of stems and blocks; model = the whole training forward on top of that)",
    )
    parser.add_argument("--compile-mode", default=None, help="torch.compile mode, e.g. max-autotune-no-cudagraphs")
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="MFU denominator (default: a measured large matmul in the autocast dtype)",
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the plain eager baseline")
    parser.add_argument(
        "--sdpa",
        choices=sorted(SDPA_BACKENDS),
        default="default",
        help="attention kernel for both paths (default: PyTorch's choice)",
    )
    parser.add_argument(
        "--profile",
        default=None,
        metavar="FILE",
        help="also profile the fast path (training steps, embedding batches): tables to FILE",
    )
    parser.add_argument("--profile-steps", type=int, default=3)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    args.dtype = args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    args.warmup = args.warmup if args.warmup is not None else (5 if device.type == "cuda" else 1)
    args.embed_steps = args.embed_steps or args.steps
    amp = DTYPES[args.dtype]
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    torch.manual_seed(0)
    config = CRJepaConfig.from_preset(args.preset)
    model = CRJepaForPreTraining(config).to(device)
    images = native_batch(config, args.batch, args.native_size, device)
    embed_native = native_batch(config, args.embed_batch, args.native_size, device)[config.sensor_names[1]]
    embed_pixels = preprocess_batch(embed_native, config.sensor_names[1], config)
    del embed_native

    # FLOPs of one eager training step (forward + backward) and of one embedding, from the operators run
    model.config.pack_sensors = False
    step_flops = count_flops(lambda: forward_backward(model, images, 0, amp))
    model.zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
        embed_flops = count_flops(lambda: model.crjepa.get_embeddings(embed_pixels, config.sensor_names[1]))
    peak = args.peak_tflops or matmul_tflops(device, amp)

    print(json.dumps({"gflop_per_pair": step_flops / args.batch / 1e9, "peak_tflops": peak}), flush=True)
    backend = SDPA_BACKENDS[args.sdpa]
    with sdpa_kernel(backend) if backend is not None else contextlib.nullcontext():
        baseline = None if args.no_baseline else measure(model, args, device, False, images, embed_pixels, amp)
        if baseline is not None:  # partial results first: a run cut short still reports the baseline
            print(json.dumps({"baseline": baseline}), flush=True)
        fast = measure(model, args, device, True, images, embed_pixels, amp)

    def tflops(pairs_per_s: float) -> float:
        return step_flops / args.batch * pairs_per_s / 1e12

    result = {
        "device": device_name(device),
        "torch": torch.__version__,
        "preset": args.preset,
        "batch": args.batch,
        "embed_batch": args.embed_batch,
        "dtype": args.dtype,
        "sdpa": args.sdpa,
        "compile": fast["compile"],
        "compile_mode": args.compile_mode,
        "train_pairs_per_s": fast["train_pairs_per_s"],
        "step_s": fast["step_s"],
        "train_tflops": tflops(fast["train_pairs_per_s"]),
        "mfu": tflops(fast["train_pairs_per_s"]) / peak,
        "peak_memory_gb": fast["peak_memory_gb"],
        "host_syncs_in_step": fast["host_syncs_in_step"],
        "embed_images_per_s": fast["embed_images_per_s"],
        "embed_tflops": embed_flops / args.embed_batch * fast["embed_images_per_s"] / 1e12,
        "gflop_per_pair": step_flops / args.batch / 1e9,
        "embed_gflop_per_image": embed_flops / args.embed_batch / 1e9,
        "peak_tflops": peak,
        "peak_tflops_source": "given" if args.peak_tflops else "measured matmul",
        "peak_memory_kind": "cuda max_memory_allocated" if device.type == "cuda" else "process max RSS",
    }
    for key in ("profile_train", "profile_embed"):
        if key in fast:
            result[key] = fast[key]
    if baseline is not None:
        result.update(
            {
                "baseline_train_pairs_per_s": baseline["train_pairs_per_s"],
                "baseline_step_s": baseline["step_s"],
                "baseline_mfu": tflops(baseline["train_pairs_per_s"]) / peak,
                "baseline_peak_memory_gb": baseline["peak_memory_gb"],
                "baseline_host_syncs_in_step": baseline["host_syncs_in_step"],
                "baseline_embed_images_per_s": baseline["embed_images_per_s"],
                "train_speedup": fast["train_pairs_per_s"] / baseline["train_pairs_per_s"],
                "embed_speedup": fast["embed_images_per_s"] / baseline["embed_images_per_s"],
            }
        )
    result = {k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
