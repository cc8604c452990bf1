"""Speed of Tessera's priors against the tools a user would pick instead, side by side in one run.

Random weights, equal width, depth, heads, grid, codebook, steps, guidance and batch; each side runs its own
code:

- **masked sampling**: ``MaskedPrior.sample`` (the call ``TextToImagePipeline`` makes) against diffusers'
  aMUSEd sampler: a ``UVit2DModel`` and an ``AmusedScheduler`` driven by the loop of ``AmusedPipeline.__call__``
  (text encoder left out: the text context is given directly as encoder hidden states of the same shape).
  Both use classifier-free guidance as one doubled batch, the same number of steps and multinomial sampling.
- **autoregressive sampling**: ``AutoregressivePrior.sample`` (KV cache) against ``transformers``'
  ``LlamaForCausalLM.generate()`` (its KV cache), fed the text context and a start token as ``inputs_embeds``,
  ``max_new_tokens`` = grid cells. transformers' own guidance (``guidance_scale``) runs the unconditional pass
  unbatched and needs ``input_ids``, so guidance is given to both sides the same way: a doubled batch
  ``[text ; null text]`` whose halves a logits processor combines, with **greedy** decoding so that both halves
  pick the same token (ours: ``temperature=0``). Guidance 1 turns it off on both sides.
- **training step** (forward + backward + AdamW) of each prior against the same peer model: the masked prior
  against UVit2D with a cosine-schedule mask and cross-entropy on the masked positions, the autoregressive
  prior against Llama with next-code cross-entropy over the grid (``logits_to_keep`` = grid cells).

How sizes are matched (the architectures differ): hidden size, layers and heads are equal. The MLP inner
size of the peers' gated MLPs (GEGLU in UVit2D, SwiGLU in Llama) is ``2/3 * mlp_ratio * hidden``, so that their
three matrices hold as many weights, and cost as many FLOPs per token, as our two (GELU, ``mlp_ratio``).
UVit2D is built with no ConvNeXt res-blocks (``num_res_blocks=0``: all its depth is in the transformer layers)
and ``in_channels = block_out_channels = hidden``; it keeps its cross-attention and its adaptive norms, whose
modulation weights act on one pooled vector per image, so it has more parameters than ours at nearly the
same FLOPs per grid token. Both parameter counts are printed, and the FLOPs per image of each side as torch's
``FlopCounterMode`` counts one call (matmuls and convolutions; on CPU it does not see the attention kernels).

Timing: the A and B runs of each case are interleaved (A B A B ...), after one warm-up each, and the best of
``--repeats`` is reported (the machine may be shared). Figures are images/s and the ratio ours / peer.

    python -m benchmarks.peer_speed                      # cpu-small preset, 8x8 grid, codebook 512
    python -m benchmarks.peer_speed --device cuda --dtype bfloat16 --batch_size 256 --train_batch_size 256

Needs diffusers (``pip install -e ".[bench]"``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from tessera.prior.config import PRIOR_PRESETS, PriorConfig, prior_preset
from tessera.prior.context import TextContext
from tessera.prior.kinds import build_prior

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Case:
    name: str
    ours: Callable[[], object]
    peer: Callable[[], object]
    images: int  # images per call (samples, or training examples)
    ours_parameters: int
    peer_parameters: int
    peer_name: str


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def gated_inner_size(config: PriorConfig) -> int:
    """The inner size of a gated MLP (three matrices) with as many weights as our two-matrix MLP."""
    return int(round(2 * config.mlp_ratio * config.hidden_size / 3))


# ---- peers ---------------------------------------------------------------------------------------------------

def amused_transformer(config: PriorConfig):
    """diffusers' UVit2DModel at our width, depth and heads (see the module docstring)."""
    from diffusers import UVit2DModel

    micro_cond_encode_dim = 64
    return UVit2DModel(
        hidden_size=config.hidden_size, cond_embed_dim=config.context_dim,
        micro_cond_encode_dim=micro_cond_encode_dim, micro_cond_embed_dim=5 * micro_cond_encode_dim,
        encoder_hidden_size=config.context_dim, vocab_size=config.codebook_size + 1,
        codebook_size=config.codebook_size, in_channels=config.hidden_size, block_out_channels=config.hidden_size,
        num_res_blocks=0, block_num_heads=config.num_heads, num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads, intermediate_size=gated_inner_size(config),
        sample_size=config.grid_size,
    )


def amused_sample(transformer, scheduler, states: torch.Tensor, pooled: torch.Tensor,
                  negative_states: torch.Tensor, negative_pooled: torch.Tensor, *, grid_size: int,
                  num_steps: int, guidance_scale: float, generator: torch.Generator) -> torch.Tensor:
    """The sampling loop of diffusers' ``AmusedPipeline.__call__`` after its text encoder (same order of
    operations: negative half first, micro-conditioning, scheduler steps); returns codes (B, h, w)."""
    batch, device = states.shape[0], states.device
    if guidance_scale > 1.0:
        pooled = torch.cat([negative_pooled, pooled])
        states = torch.cat([negative_states, states])
    side = grid_size * 16  # pixels at the VQ model's scale factor; only enters the micro-conditioning
    micro_conds = torch.tensor([side, side, 0, 0, 6], device=device, dtype=states.dtype)[None]
    micro_conds = micro_conds.expand(2 * batch if guidance_scale > 1.0 else batch, -1)
    latents = torch.full((batch, grid_size, grid_size), scheduler.config.mask_token_id, dtype=torch.long,
                         device=device)
    scheduler.set_timesteps(num_steps, (2, 0), device)
    for timestep in scheduler.timesteps:
        model_input = torch.cat([latents] * 2) if guidance_scale > 1.0 else latents
        logits = transformer(model_input, micro_conds=micro_conds, pooled_text_emb=pooled,
                             encoder_hidden_states=states)
        if guidance_scale > 1.0:
            uncond_logits, cond_logits = logits.chunk(2)
            logits = uncond_logits + guidance_scale * (cond_logits - uncond_logits)
        latents = scheduler.step(model_output=logits, timestep=timestep, sample=latents,
                                 generator=generator).prev_sample
    return latents


def llama_model(config: PriorConfig):
    """transformers' LlamaForCausalLM at our width, depth and heads; vocabulary = codebook + a start token."""
    from transformers import LlamaConfig, LlamaForCausalLM

    llama_config = LlamaConfig(
        vocab_size=config.codebook_size + 1, hidden_size=config.hidden_size,
        intermediate_size=gated_inner_size(config), num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads, max_position_embeddings=config.context_length + config.num_codes + 1,
        bos_token_id=None, eos_token_id=None, pad_token_id=None,
    )
    return LlamaForCausalLM(llama_config)


def batched_guidance_processor(scale: float):
    """A transformers logits processor for a doubled batch ``[cond ; uncond]``: both halves get the guided
    logits ``uncond + scale * (cond - uncond)`` (with greedy decoding both then pick the same token)."""
    from transformers import LogitsProcessor

    class BatchedGuidance(LogitsProcessor):
        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
            cond, uncond = scores.chunk(2)
            guided = uncond + scale * (cond - uncond)
            return torch.cat([guided, guided])

    return BatchedGuidance()


def llama_generate(model, prefix: torch.Tensor, *, num_codes: int, guidance_scale: float) -> torch.Tensor:
    """``generate()`` from ``prefix`` embeddings (B', L + 1, D) = text context + start token; codes (B, N)."""
    from transformers import LogitsProcessorList

    guided = guidance_scale != 1.0
    processors = LogitsProcessorList([batched_guidance_processor(guidance_scale)] if guided else [])
    mask = torch.ones(prefix.shape[:2], dtype=torch.long, device=prefix.device)
    codes = model.generate(inputs_embeds=prefix, attention_mask=mask, max_new_tokens=num_codes,
                           min_new_tokens=num_codes, do_sample=False, use_cache=True, logits_processor=processors)
    return codes[: prefix.shape[0] // 2] if guided else codes  # (B, N): the halves are equal


# ---- timing ---------------------------------------------------------------------------------------------------

def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def counted_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call as torch's ``FlopCounterMode`` counts them (matmuls and convolutions; the attention
    kernels only where it knows them, e.g. not on CPU): how much arithmetic each side asks for."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def interleaved_best(first: Callable[[], object], second: Callable[[], object], repeats: int,
                     device: torch.device) -> tuple[float, float]:
    """Best wall-clock seconds of each, run A B A B ... after one warm-up each."""
    best = [math.inf, math.inf]
    for fn in (first, second):
        fn()
    for _ in range(repeats):
        for index, fn in enumerate((first, second)):
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            best[index] = min(best[index], time.perf_counter() - start)
    return best[0], best[1]


# ---- cases ----------------------------------------------------------------------------------------------------

def random_context(config: PriorConfig, batch: int, device: torch.device, dtype: torch.dtype) -> TextContext:
    states = torch.randn(batch, config.context_length, config.context_dim, device=device, dtype=dtype)
    return TextContext(states, torch.ones(batch, config.context_length, dtype=torch.bool, device=device))


def sampling_cases(config: PriorConfig, args, device: torch.device, dtype: torch.dtype) -> list[Case]:
    from diffusers import AmusedScheduler

    batch, generator = args.batch_size, torch.Generator(device=device)
    masked = build_prior(config.replace(kind="masked")).to(device, dtype).eval()
    uvit = amused_transformer(config).to(device, dtype).eval()
    scheduler = AmusedScheduler(mask_token_id=config.codebook_size)
    context = random_context(config, batch, device, dtype)
    negative_states = torch.randn_like(context.hidden_states)
    pooled, negative_pooled = (torch.randn(batch, config.context_dim, device=device, dtype=dtype) for _ in "ab")

    autoregressive = build_prior(config.replace(kind="autoregressive")).to(device, dtype).eval()
    llama = llama_model(config).to(device, dtype).eval()
    rows = 2 * batch if args.guidance_scale != 1.0 else batch
    start = llama.get_input_embeddings()(torch.full((rows, 1), config.codebook_size, device=device))
    prefix = torch.cat([torch.randn(rows, config.context_length, config.hidden_size, device=device, dtype=dtype),
                        start.detach()], dim=1)  # (B', L + 1, D)

    def ours_masked():
        return masked.sample(context, guidance_scale=args.guidance_scale, num_steps=args.num_steps,
                             generator=generator.manual_seed(0))

    @torch.inference_mode()
    def peer_masked():
        return amused_sample(uvit, scheduler, context.hidden_states, pooled, negative_states, negative_pooled,
                             grid_size=config.grid_size, num_steps=args.num_steps,
                             guidance_scale=args.guidance_scale, generator=generator.manual_seed(0))

    def ours_autoregressive():
        return autoregressive.sample(context, guidance_scale=args.guidance_scale, temperature=0.0)

    @torch.inference_mode()
    def peer_autoregressive():
        return llama_generate(llama, prefix, num_codes=config.num_codes, guidance_scale=args.guidance_scale)

    return [
        Case(f"masked sampling, {args.num_steps} steps", ours_masked, peer_masked, batch,
             parameter_count(masked), parameter_count(uvit), "diffusers UVit2D + AmusedScheduler"),
        Case("autoregressive sampling, greedy, KV cache", ours_autoregressive, peer_autoregressive, batch,
             parameter_count(autoregressive), parameter_count(llama), "transformers Llama generate()"),
    ]


def training_cases(config: PriorConfig, args, device: torch.device, dtype: torch.dtype) -> list[Case]:
    batch = args.train_batch_size
    autocast = (torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext())
    context = random_context(config, batch, device, torch.float32)
    codes = torch.randint(0, config.codebook_size, (batch, config.grid_size, config.grid_size), device=device)
    pooled = torch.randn(batch, config.context_dim, device=device)
    side = config.grid_size * 16
    micro_conds = torch.tensor([side, side, 0, 0, 6], device=device, dtype=torch.float32)[None].expand(batch, -1)
    prefix = torch.randn(batch, config.context_length, config.hidden_size, device=device)

    def step_fn(model: torch.nn.Module, loss_fn: Callable[[], torch.Tensor]) -> Callable[[], float]:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step() -> float:
            optimizer.zero_grad(set_to_none=True)
            with autocast:
                loss = loss_fn()
            loss.backward()
            optimizer.step()
            return loss.detach()

        return step

    masked = build_prior(config.replace(kind="masked")).to(device).train()
    uvit = amused_transformer(config).to(device).train()

    def uvit_loss() -> torch.Tensor:
        masked_positions = masked.random_mask(batch, device)  # the same cosine-schedule masking as ours
        inputs = torch.where(masked_positions, config.codebook_size, codes)
        labels = torch.where(masked_positions, codes, -100)
        logits = uvit(inputs, micro_conds=micro_conds, pooled_text_emb=pooled,
                      encoder_hidden_states=context.hidden_states)  # (B, V, h, w)
        return F.cross_entropy(logits.float(), labels, ignore_index=-100)

    autoregressive = build_prior(config.replace(kind="autoregressive")).to(device).train()
    llama = llama_model(config).to(device).train()
    embed = llama.get_input_embeddings()
    start = torch.full((batch, 1), config.codebook_size, device=device)
    targets = codes.flatten(1)  # (B, N)

    def llama_loss() -> torch.Tensor:
        tokens = torch.cat([start, targets[:, :-1]], dim=1)  # (B, N): shifted right by one
        inputs = torch.cat([prefix, embed(tokens)], dim=1)  # (B, L + N, D)
        logits = llama(inputs_embeds=inputs, logits_to_keep=config.num_codes).logits  # (B, N, V)
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())

    return [
        Case("masked training step", step_fn(masked, lambda: masked.loss(codes, context).loss),
             step_fn(uvit, uvit_loss), batch, parameter_count(masked), parameter_count(uvit),
             "diffusers UVit2D"),
        Case("autoregressive training step", step_fn(autoregressive, lambda: autoregressive.loss(codes, context).loss),
             step_fn(llama, llama_loss), batch, parameter_count(autoregressive), parameter_count(llama),
             "transformers Llama"),
    ]


def size_config(args) -> PriorConfig:
    changes = {name: getattr(args, name) for name in ("hidden_size", "num_layers", "num_heads", "grid_size",
                                                      "codebook_size", "context_length")
               if getattr(args, name) is not None}
    return prior_preset(args.preset, dropout=0.0, **changes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu-small", choices=sorted(PRIOR_PRESETS))
    for name in ("hidden_size", "num_layers", "num_heads", "grid_size", "codebook_size", "context_length"):
        parser.add_argument(f"--{name}", type=int, default=None, help="override the preset's value")
    parser.add_argument("--batch_size", type=int, default=32, help="images per sampling call")
    parser.add_argument("--train_batch_size", type=int, default=32)
    parser.add_argument("--num_steps", type=int, default=8, help="masked decoding steps")
    parser.add_argument("--guidance_scale", type=float, default=2.0, help="1 turns guidance off")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each side (best is kept)")
    parser.add_argument("--cases", default="sampling,training", help="comma list: sampling, training")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES),
                        help="sampling: weights cast to it; training: autocast to it (float32 master weights)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (1: steady on a shared machine; 0: torch's default)")
    args = parser.parse_args(argv)
    try:
        import diffusers  # noqa: F401
    except ImportError:
        parser.error('diffusers is not installed: pip install -e ".[bench]"')
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    config = size_config(args)
    wanted = {name.strip() for name in args.cases.split(",")}
    if not wanted <= {"sampling", "training"}:
        parser.error(f"unknown cases {sorted(wanted - {'sampling', 'training'})}")
    cases = []
    if "sampling" in wanted:
        cases += sampling_cases(config, args, device, dtype)
    if "training" in wanted:
        cases += training_cases(config, args, device, dtype)

    rows = []
    for case in cases:
        ours_s, peer_s = interleaved_best(case.ours, case.peer, args.repeats, device)
        ours_flops, peer_flops = (counted_flops(fn) / case.images for fn in (case.ours, case.peer))
        rows.append({"case": case.name, "peer": case.peer_name, "ours_images_per_s": round(case.images / ours_s, 1),
                     "peer_images_per_s": round(case.images / peer_s, 1), "ours_over_peer": round(peer_s / ours_s, 2),
                     "ours_parameters": case.ours_parameters, "peer_parameters": case.peer_parameters,
                     "ours_gflop_per_image": round(ours_flops / 1e9, 3),
                     "peer_gflop_per_image": round(peer_flops / 1e9, 3)})
    settings = {"device": str(device), "dtype": args.dtype, "threads": torch.get_num_threads(),
                "preset": args.preset, "hidden_size": config.hidden_size, "num_layers": config.num_layers,
                "num_heads": config.num_heads, "grid": f"{config.grid_size}x{config.grid_size}",
                "codebook_size": config.codebook_size, "context_length": config.context_length,
                "batch_size": args.batch_size, "train_batch_size": args.train_batch_size,
                "num_steps": args.num_steps, "guidance_scale": args.guidance_scale, "repeats": args.repeats}
    print(json.dumps({"settings": settings, "results": rows}, indent=2))
    print(f"\n| case ({args.device}, {args.dtype}) | peer | ours images/s | peer images/s | ours / peer | "
          "parameters ours / peer | GFLOP per image ours / peer |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['case']} | {row['peer']} | {row['ours_images_per_s']} | {row['peer_images_per_s']} | "
              f"{row['ours_over_peer']}x | {row['ours_parameters']:,} / {row['peer_parameters']:,} | "
              f"{row['ours_gflop_per_image']} / {row['peer_gflop_per_image']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
