"""Training throughput of a prior preset and its model-FLOPs utilisation (MFU).

One training step is forward + backward + AdamW of ``prior.loss`` on random codes and a random text context
(speed does not depend on the weights). Model FLOPs per step are counted analytically from the architecture
(matmuls of the transformer on every context and grid token, the context projection, the head on the grid
slots, and attention scores and mixing over the whole sequence), times 3 for forward + backward; torch's
``FlopCounterMode`` count of one step is printed beside it as a check (it does not see CPU attention kernels).

MFU = achieved model FLOP/s / the GPU's dense peak at ``--dtype`` (bf16: H100 SXM and H200 989 TFLOP/s, H100
PCIe 756, A100 312), looked up from the device name; ``--peak_tflops`` overrides it. On a CPU, or a GPU not in
the table, only FLOP/s are printed.

    python -m benchmarks.prior_train_mfu --preset tiny --steps 3                      # CPU: checks it runs
    python -m benchmarks.prior_train_mfu --preset base --device cuda --dtype bfloat16 --batch_size 64
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from tessera.prior.config import PRIOR_KINDS, PRIOR_PRESETS, PriorConfig, prior_preset
from tessera.prior.context import TextContext
from tessera.prior.kinds import build_prior

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Dense (no sparsity) tensor-core peaks in TFLOP/s from the vendors' data sheets; first match in the name wins.
BF16_PEAK_TFLOPS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("A100", 312.0))


def model_flops_per_step(config: PriorConfig, batch_size: int, context_tokens: int) -> int:
    """Analytic FLOPs of one training step (forward + backward = 3 x forward) of a prior of ``config``."""
    width, inner = config.hidden_size, int(config.hidden_size * config.mlp_ratio)
    sequence = context_tokens + config.num_codes
    layer_weights = width * 3 * width + width * width + 2 * width * inner  # qkv, proj, fc1, fc2
    matmuls = 2 * config.num_layers * layer_weights * sequence  # every token through every layer
    matmuls += 2 * config.context_dim * width * context_tokens  # context projection
    matmuls += 2 * width * config.codebook_size * config.num_codes  # head on the grid slots
    attention = config.num_layers * 2 * 2 * sequence * sequence * width  # q k^T and attn v, the whole square
    return 3 * batch_size * (matmuls + attention)


def peak_flops(device: torch.device, dtype: torch.dtype, override_tflops: float | None) -> float | None:
    """The device's dense peak FLOP/s at ``dtype``, or None when unknown (CPU, fp32, a GPU not in the table)."""
    if override_tflops is not None:
        return override_tflops * 1e12
    if device.type != "cuda" or dtype not in (torch.bfloat16, torch.float16):
        return None
    name = torch.cuda.get_device_name(device)
    return next((tflops * 1e12 for key, tflops in BF16_PEAK_TFLOPS if key in name), None)


def make_step(prior, batch_size: int, context_tokens: int, device: torch.device, dtype: torch.dtype):
    config = prior.config
    states = torch.randn(batch_size, context_tokens, config.context_dim, device=device)
    context = TextContext(states, torch.ones(batch_size, context_tokens, dtype=torch.bool, device=device))
    codes = torch.randint(0, config.codebook_size, (batch_size, config.grid_size, config.grid_size), device=device)
    optimizer = torch.optim.AdamW(prior.parameters(), lr=1e-4, fused=device.type == "cuda")
    autocast = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()

    def step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = prior.loss(codes, context).loss
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def measure(kind: str, args, device: torch.device, dtype: torch.dtype) -> dict:
    config = prior_preset(args.preset, kind=kind)
    context_tokens = args.context_tokens or config.context_length
    prior = build_prior(config).to(device).train()
    step = make_step(prior, args.batch_size, context_tokens, device, dtype)
    with FlopCounterMode(display=False) as counter:
        step()
    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    float(loss)  # waits for the last step
    seconds = (time.perf_counter() - start) / args.steps
    flops = model_flops_per_step(config, args.batch_size, context_tokens)
    peak = peak_flops(device, dtype, args.peak_tflops)
    row = {"kind": kind, "parameters": sum(p.numel() for p in prior.parameters()),
           "seconds_per_step": round(seconds, 4), "images_per_s": round(args.batch_size / seconds, 1),
           "model_flops_per_step": flops, "flop_counter_per_step": counter.get_total_flops(),
           "achieved_tflops": round(flops / seconds / 1e12, 3)}
    if peak is not None:
        row["peak_tflops"] = peak / 1e12
        row["mfu"] = round(flops / seconds / peak, 4)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="base", choices=sorted(PRIOR_PRESETS))
    parser.add_argument("--kind", default="both", choices=[*PRIOR_KINDS, "both"])
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--context_tokens", type=int, default=None, help="default: the preset's context_length")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps after the counted one")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES),
                        help="autocast dtype of the forward (float32 master weights)")
    parser.add_argument("--peak_tflops", type=float, default=None, help="the device's peak, if not in the table")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (1: steady on a shared machine; 0: torch's default)")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1:
        parser.error("--steps and --batch_size must be positive")
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    kinds = PRIOR_KINDS if args.kind == "both" else (args.kind,)
    rows = [measure(kind, args, device, dtype) for kind in kinds]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(json.dumps({"device": name, "dtype": args.dtype, "preset": args.preset, "batch_size": args.batch_size,
                      "threads": torch.get_num_threads(), "results": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
