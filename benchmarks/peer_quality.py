"""Our masked prior against diffusers' aMUSEd transformer: same codes, same captions, same CPU time.

Both models start from scratch on one tokenized dataset (``train.py tokenize`` / the quickstart's ``tokens/``)
and are conditioned by the same frozen text encoder, that of a trained pipeline (whose VQ-GAN and prior sizes
are used as well). Each is trained by its own loss (ours: label-smoothed cross-entropy on the masked positions
with its learned null context for caption dropout; aMUSEd: cross-entropy on the masked positions, the empty
prompt's encoding for caption dropout, its pooled-text and micro-conditioning inputs), with the same cosine-
schedule masking, caption variation, batches, AdamW settings, warm-up-cosine schedule and EMA (the prior
stage's defaults), for the same **wall time**: a few timed steps of each fix its step count for the budget,
and its schedule runs over those steps. The two run one after the other; the time each actually took is
reported beside its steps. diffusers' ``UVit2DModel`` is built at our width, depth and heads as
``benchmarks/peer_speed.py`` builds it (MLP sized to equal weights, no ConvNeXt blocks).

Judged on held-out emoji (``python -m benchmarks.emoji build``'s ``test`` split, encoded with the pipeline's
VQ-GAN) and with ``benchmarks/emoji_quality.py``'s measures:

- **held-out NLL per code** (nats, no label smoothing): cross-entropy of the true codes at masked positions,
  given each row's caption, on the same fixed masks for both (``--nll_masks`` cosine-schedule masks per image,
  seeded); a masked model's stand-in for likelihood (it averages over masking ratios as training does);
- **recognisability** top-1 / top-5 and **FD / KID** of samples against the real test images, both sampled
  through ``TextToImagePipeline.generate`` with the pipeline's sampling settings (the peer through
  ``AmusedScheduler`` and the sampling loop of ``AmusedPipeline``, at the same steps and guidance).

    python -m benchmarks.peer_quality models/tessera-emoji --vqgan runs/emoji/vqgan --tokens runs/emoji/tokens \\
        --data data/emoji-32 --minutes 15 --output_dir runs/peer-quality

Needs diffusers (``pip install -e ".[bench]"``).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.emoji_quality import FAMILIES, EmojiJudge, Sampler
from benchmarks.peer_speed import amused_sample, amused_transformer
from tessera.core.io import atomic_write_text
from tessera.pipelines.text_to_image import TextToImagePipeline
from tessera.pipelines.tokens import ExportConfig, export_tokenized_dataset, load_tokenized_dataset
from tessera.pipelines.tokens.dataset import ALTERNATIVES_COLUMN
from tessera.pipelines.training.batches import StepBatchSampler
from tessera.pipelines.training.captions import CaptionBank, ContextCache, merged_alternatives
from tessera.pipelines.training.ema import EMA
from tessera.pipelines.training.loop import learning_rate_lambda, make_optimizer
from tessera.pipelines.training.prior import PRIOR_TRAINING_DEFAULTS
from tessera.prior.context import TextContext
from tessera.prior.kinds import build_prior
from tessera.prior.masked import MaskedPrior
from tessera.tokenizer.model import VQGAN

NULL_CAPTION = ""  # the peer's unconditional prompt, as aMUSEd uses the empty prompt's encoding


@dataclass
class Contender:
    """One side: its model, its training loss and its logits, both given the masked positions."""

    name: str
    model: nn.Module
    # (model, codes (B, h, w), context, drop (B,), masked (B, h, w)) -> the training loss
    loss: Callable[[nn.Module, torch.Tensor, TextContext, torch.Tensor, torch.Tensor], torch.Tensor]
    # (model, inputs (B, h, w) with the mask id at masked positions, context) -> logits (B, N, V)
    logits: Callable[[nn.Module, torch.Tensor, TextContext], torch.Tensor]


class PeerConditioning:
    """A text context as UVit2D takes it: states padded (zeros) or cut to ``length``, and their mean over the
    real tokens as the pooled embedding; ``null`` is the empty prompt's."""

    def __init__(self, null: TextContext, length: int):
        self.length = length
        self.null_states, self.null_pooled = self(null)

    def __call__(self, context: TextContext) -> tuple[torch.Tensor, torch.Tensor]:
        states = context.hidden_states * context.mask[..., None]  # (B, L, D), padding zeroed
        weights = context.mask.float()[..., None]  # (B, L, 1)
        pooled = (states * weights).sum(1) / weights.sum(1).clamp(min=1)  # (B, D)
        states = F.pad(states, (0, 0, 0, max(0, self.length - states.shape[1])))[:, :self.length]  # (B, Lp, D)
        return states, pooled

    def with_dropped(self, context: TextContext, drop: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        states, pooled = self(context)
        drop = drop.to(states.device)
        states = torch.where(drop[:, None, None], self.null_states.to(states.device).expand_as(states), states)
        pooled = torch.where(drop[:, None], self.null_pooled.to(pooled.device).expand_as(pooled), pooled)
        return states, pooled


def micro_conditions(batch: int, grid_size: int, device: torch.device) -> torch.Tensor:
    """aMUSEd's micro-conditioning (original size, crop, aesthetic score 6), constant here as in its sampler."""
    side = grid_size * 16
    return torch.tensor([side, side, 0, 0, 6], dtype=torch.float32, device=device)[None].expand(batch, -1)


def build_contenders(prior_config, conditioning: PeerConditioning) -> tuple[list[Contender], MaskedPrior]:
    """Ours and the peer, fresh; also ours, whose ``random_mask`` (the cosine schedule) masks for both."""
    ours = build_prior(prior_config.replace(kind="masked"))
    peer = amused_transformer(prior_config)
    mask_id = prior_config.codebook_size

    def ours_logits(model, inputs, context, drop=None):
        return model(inputs.flatten(1), model.condition(context, drop))  # (B, N, V)

    def peer_logits(model, inputs, context, drop=None):
        drop = torch.zeros(inputs.shape[0], dtype=torch.bool) if drop is None else drop
        states, pooled = conditioning.with_dropped(context, drop)
        logits = model(inputs, micro_conds=micro_conditions(inputs.shape[0], prior_config.grid_size, inputs.device),
                       pooled_text_emb=pooled, encoder_hidden_states=states)  # (B, V, h, w)
        return logits.flatten(2).transpose(1, 2)  # (B, N, V)

    def ours_loss(model, codes, context, drop, masked):
        return model.loss(codes, context, drop_context=drop, masked_positions=masked).loss

    def peer_loss(model, codes, context, drop, masked):
        logits = peer_logits(model, torch.where(masked, mask_id, codes), context, drop)  # (B, N, V)
        where = masked.flatten(1)  # (B, N)
        return F.cross_entropy(logits[where].float(), codes.flatten(1)[where])

    return [Contender("tessera masked prior", ours, ours_loss, ours_logits),
            Contender("diffusers aMUSEd UVit2D", peer, peer_loss, peer_logits)], ours


def training_captions(tokens, variation: str, variants: int, seed: int) -> tuple[CaptionBank, list[str]]:
    """The rows' captions and the bank the prior stage would draw from (``--caption_variation``)."""
    captions = list(tokens["caption"])
    alternatives = {}
    if ALTERNATIVES_COLUMN in tokens.column_names:
        alternatives = merged_alternatives(captions, tokens[ALTERNATIVES_COLUMN])
    return CaptionBank(captions, variation, variants, seed, alternatives=alternatives), captions


@dataclass
class TrainingData:
    codes: torch.Tensor  # (R, h, w)
    captions: list[str]
    bank: CaptionBank
    cache: ContextCache
    mask: Callable[[int], torch.Tensor]  # batch size -> (B, h, w) bool, the cosine-schedule masking
    caption_dropout: float
    seed: int


def run_steps(contender: Contender, model: nn.Module, data: TrainingData, steps: int, ema: EMA | None) -> float:
    """``steps`` optimizer steps of ``model`` (the prior stage's AdamW, warm-up-cosine schedule over ``steps``,
    clipping); returns the seconds they took."""
    training = PRIOR_TRAINING_DEFAULTS
    torch.manual_seed(data.seed)
    optimizer = make_optimizer(model.parameters(), training)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, learning_rate_lambda(min(training.lr_warmup_steps, max(1, steps // 10)), steps))
    sampler = StepBatchSampler(len(data.codes), training.train_batch_size, seed=data.seed, start_step=0,
                               end_step=steps)
    model.train()
    start = time.perf_counter()
    for virtual_rows in sampler:
        rows = [row % len(data.codes) for row in virtual_rows]
        captions = [data.bank.pick(data.captions[row], random.Random(f"{data.seed}:{virtual // len(data.codes)}:{row}"))
                    for virtual, row in zip(virtual_rows, rows)]
        context = data.cache.context(captions, "cpu")
        drop = torch.rand(len(rows)) < data.caption_dropout
        loss = contender.loss(model, data.codes[rows], context, drop, data.mask(len(rows)))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), training.max_grad_norm)
        optimizer.step()
        schedule.step()
        if ema is not None:
            ema.update(model)
    return time.perf_counter() - start


def train_for(contender: Contender, data: TrainingData, *, budget_s: float, probe_steps: int) -> dict:
    """Time ``probe_steps`` steps on a throw-away copy, then train the step count that fits ``budget_s``."""
    probe_s = run_steps(contender, copy.deepcopy(contender.model), data, probe_steps, None)
    steps = max(1, math.floor(budget_s * probe_steps / probe_s))
    ema = EMA(contender.model, PRIOR_TRAINING_DEFAULTS.ema_decay)
    seconds = run_steps(contender, contender.model, data, steps, ema)
    return {"model": ema.model.eval(), "steps": steps, "train_seconds": round(seconds, 1),
            "probe_seconds_per_step": round(probe_s / probe_steps, 3)}


@torch.inference_mode()
def held_out_nll(contender: Contender, model: nn.Module, codes: torch.Tensor, contexts: TextContext,
                 masks: torch.Tensor, mask_id: int, batch_size: int = 128) -> float:
    """Mean cross-entropy (nats) of the true codes at the masked positions; ``masks`` (K, R, h, w)."""
    total, count = 0.0, 0
    for mask in masks:
        for start in range(0, len(codes), batch_size):
            rows = slice(start, start + batch_size)
            inputs = torch.where(mask[rows], mask_id, codes[rows])  # (B, h, w)
            context = TextContext(contexts.hidden_states[rows], contexts.mask[rows])
            logits = contender.logits(model, inputs, context)  # (B, N, V)
            where = mask[rows].flatten(1)
            total += F.cross_entropy(logits[where].float(), codes[rows].flatten(1)[where], reduction="sum").item()
            count += int(where.sum())
    return total / count


def peer_sampler(peer: nn.Module, conditioning: PeerConditioning, grid_size: int, mask_id: int) -> Sampler:
    """A request -> codes drawn by the peer with ``AmusedScheduler`` (the request's steps, guidance, generator;
    no negative prompt: the empty prompt's encoding, as aMUSEd)."""
    from diffusers import AmusedScheduler

    def for_request(request):
        scheduler = AmusedScheduler(mask_token_id=mask_id)

        def sample_chunk(context: TextContext, negative: TextContext | None, rows: torch.Tensor) -> torch.Tensor:
            states, pooled = conditioning(context)
            if negative is None:
                negative_states = conditioning.null_states.expand_as(states)
                negative_pooled = conditioning.null_pooled.expand_as(pooled)
            else:
                negative_states, negative_pooled = conditioning(negative)
            return amused_sample(peer, scheduler, states, pooled, negative_states, negative_pooled,
                                 grid_size=grid_size, num_steps=request.sampling.num_steps,
                                 guidance_scale=request.sampling.guidance_scale, generator=request.generator)

        return sample_chunk

    return for_request


def held_out_tokens(vqgan: Path, data: Path, output_dir: Path):
    """The test split encoded by the training tokens' VQ-GAN (``train.py tokenize``'s export; resumable)."""
    export_tokenized_dataset(ExportConfig(vqgan=str(vqgan), data=str(data / "test"),
                                          output_dir=str(output_dir / "heldout-tokens")))
    return load_tokenized_dataset(output_dir / "heldout-tokens")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pipeline", type=Path, help="a trained pipeline folder: its VQ-GAN, text encoder, sizes")
    parser.add_argument("--tokens", type=Path, required=True, help="the tokenized training set (its VQ-GAN's)")
    parser.add_argument("--data", type=Path, required=True, help="python -m benchmarks.emoji build's folder")
    parser.add_argument("--vqgan", type=Path, default=None,
                        help="the VQ-GAN the tokens were made with, when it is not the pipeline's (e.g. the float32 "
                             "training run's vqgan/ beside a float16 shipped pipeline; default: PIPELINE/vqgan)")
    parser.add_argument("--minutes", type=float, default=15.0, help="training wall time of each side")
    parser.add_argument("--probe_steps", type=int, default=10, help="timed steps that fix each side's step count")
    parser.add_argument("--caption_variation", default="prompts")
    parser.add_argument("--caption_variants", type=int, default=16)
    parser.add_argument("--nll_masks", type=int, default=4, help="fixed masks per held-out image")
    parser.add_argument("--num_prompts", type=int, default=200, help="names per recognisability family")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_dir", type=Path, default=Path("runs/peer-quality"))
    parser.add_argument("--cache_dir", type=Path, default=None, help="emoji_quality's gallery cache")
    args = parser.parse_args(argv)
    try:
        import diffusers  # noqa: F401
    except ImportError:
        parser.error('diffusers is not installed: pip install -e ".[bench]"')
    args.output_dir.mkdir(parents=True, exist_ok=True)
    pipe = TextToImagePipeline.from_pretrained(args.pipeline)
    prior_config = pipe.prior.config
    vqgan = args.vqgan or args.pipeline / "vqgan"
    tokens = load_tokenized_dataset(args.tokens, vqgan=pipe.vqgan if args.vqgan is None else VQGAN.from_pretrained(vqgan))
    bank, captions = training_captions(tokens, args.caption_variation, args.caption_variants, args.seed)
    held_out = held_out_tokens(vqgan, args.data, args.output_dir)
    held_out_captions = list(held_out["caption"])
    cache = ContextCache(pipe.text, list(dict.fromkeys([*bank.captions(), *held_out_captions, NULL_CAPTION])))
    conditioning = PeerConditioning(cache.context([NULL_CAPTION], "cpu"), prior_config.context_length)
    torch.manual_seed(args.seed)  # the initial weights of both
    sides, ours = build_contenders(prior_config, conditioning)
    data = TrainingData(torch.stack(list(tokens["codes"])).long(), captions, bank, cache, ours.random_mask,
                        prior_config.caption_dropout, args.seed)
    held_out_codes = torch.stack(list(held_out["codes"])).long()  # (R, h, w)
    masks = torch.stack([ours.random_mask(len(held_out_codes)) for _ in range(args.nll_masks)])  # (K, R, h, w)
    held_out_contexts = cache.context(held_out_captions, "cpu")
    judge = EmojiJudge(args.data, seed=args.seed, cache_dir=args.cache_dir)

    rows = []
    for side in sides:
        trained = train_for(side, data, budget_s=60 * args.minutes, probe_steps=args.probe_steps)
        model = trained.pop("model")
        nll = held_out_nll(side, model, held_out_codes, held_out_contexts, masks, prior_config.codebook_size)
        if side.model is ours:
            judged = judge.judge(TextToImagePipeline.from_pipe(pipe, prior=model), num_prompts=args.num_prompts)
        else:
            judged = judge.judge(pipe, num_prompts=args.num_prompts, sampler=peer_sampler(
                model, conditioning, prior_config.grid_size, prior_config.codebook_size))
        rows.append({"side": side.name, "parameters": sum(p.numel() for p in model.parameters()), **trained,
                     "held_out_nll_per_code": round(nll, 4), **judged})
        print(json.dumps({key: value for key, value in rows[-1].items() if key != "families"}), flush=True)
    ours_row, peer_row = rows
    report = {"settings": {**{key: str(value) for key, value in vars(args).items()},
                           "threads": torch.get_num_threads(), "prior": prior_config.to_dict()},
              "results": rows,
              "nll_ratio_ours_over_peer": round(ours_row["held_out_nll_per_code"] / peer_row["held_out_nll_per_code"], 3),
              "fd_ratio_ours_over_peer": round(ours_row["fd_samples_vs_test"]["fid"]
                                               / peer_row["fd_samples_vs_test"]["fid"], 3)}
    atomic_write_text(args.output_dir / "peer_quality.json", json.dumps(report, indent=2) + "\n")
    print("\n| side | steps in the budget | held-out NLL / code | FD vs test | KID | "
          + " | ".join(f"{family} top-1 / top-5" for family in FAMILIES) + " |")
    print("|---" * (5 + len(FAMILIES)) + "|")
    for row in rows:
        fd = row["fd_samples_vs_test"]
        print(f"| {row['side']} | {row['steps']} ({row['train_seconds']:.0f} s) | {row['held_out_nll_per_code']:.3f} | "
              f"{fd['fid']:.1f} | {fd['kid_mean']:.4f} | "
              + " | ".join(f"{row['families'][f]['top1']:.1%} / {row['families'][f]['top5']:.1%}" for f in FAMILIES)
              + " |")
    print(f"floor (real train vs test): FD {ours_row['fd_train_vs_test']['fid']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
