"""Sampling speed of the priors, measured in one run: autoregressive with vs without the KV cache, and
masked decoding at 4, 8 and 12 steps (images/s and code tokens/s at one batch size, best of N repeats).

Runs on a trained prior folder (``train.py prior`` output) or, without one, on randomly initialised priors of
a preset (speed depends on the architecture, not on the weights).

    python -m benchmarks.prior_sampling_speed --batch_size 64
    python -m benchmarks.prior_sampling_speed --ar runs/ar --masked runs/masked --device cuda --batch_size 512
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from tessera.prior.config import prior_preset
from tessera.prior.context import TextContext
from tessera.prior.kinds import build_prior, load_prior


def timed(fn, repeats: int, device: torch.device) -> float:
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def load(path: str | None, kind: str, preset: str, device: torch.device):
    prior = load_prior(path + "/prior") if path else build_prior(prior_preset(preset, kind=kind))
    return prior.to(device).eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ar", default=None, help="trained autoregressive run folder")
    parser.add_argument("--masked", default=None, help="trained masked run folder")
    parser.add_argument("--preset", default="cpu-small")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--context_tokens", type=int, default=16)
    parser.add_argument("--guidance_scale", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.set_grad_enabled(False)
    autoregressive = load(args.ar, "autoregressive", args.preset, device)
    masked = load(args.masked, "masked", args.preset, device)
    generator = torch.Generator(device=device)

    def context_for(prior) -> TextContext:
        states = torch.randn(args.batch_size, args.context_tokens, prior.config.context_dim, device=device)
        return TextContext(states, torch.ones(args.batch_size, args.context_tokens, dtype=torch.bool, device=device))

    cases = {"autoregressive, KV cache": lambda: autoregressive.sample(
                 context, guidance_scale=args.guidance_scale, generator=generator.manual_seed(0), use_cache=True),
             "autoregressive, no cache": lambda: autoregressive.sample(
                 context, guidance_scale=args.guidance_scale, generator=generator.manual_seed(0), use_cache=False)}
    for steps in (4, 8, 12):
        cases[f"masked, {steps} steps"] = (lambda steps=steps: masked.sample(
            masked_context, guidance_scale=args.guidance_scale, num_steps=steps, generator=generator.manual_seed(0)))
    context, masked_context = context_for(autoregressive), context_for(masked)
    num_codes = autoregressive.config.num_codes
    rows = []
    for name, fn in cases.items():
        fn()  # warm-up
        seconds = timed(fn, args.repeats, device)
        rows.append({"sampler": name, "seconds": round(seconds, 3), "images_per_s": round(args.batch_size / seconds, 1),
                     "tokens_per_s": round(args.batch_size * num_codes / seconds, 1)})
    baseline = rows[1]["images_per_s"]
    for row in rows:
        row["speedup_vs_uncached_ar"] = round(row["images_per_s"] / baseline, 2)
    print(json.dumps({"device": str(device), "batch_size": args.batch_size, "guidance_scale": args.guidance_scale,
                      "threads": torch.get_num_threads(), "results": rows}, indent=2))
    print(f"| sampler (batch {args.batch_size}, CFG {args.guidance_scale:g}, {device}) | s | images/s | "
          "tokens/s | × uncached AR |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['sampler']} | {row['seconds']} | {row['images_per_s']} | {row['tokens_per_s']} | "
              f"{row['speedup_vs_uncached_ar']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
