"""Configuration of the priors (autoregressive and masked share one), and their named size presets."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

from tessera.core.config import JSONConfig

PRIOR_KINDS = ("autoregressive", "masked")
MLP_ACTIVATIONS = ("gelu", "gelu_tanh")  # exact GELU; its tanh approximation (GPT-2; ~4x slower on CPU)


@dataclass
class PriorConfig(JSONConfig):
    kind: str = "autoregressive"  # "autoregressive" | "masked"
    codebook_size: int = 512
    grid_size: int = 8  # the code grid is grid_size x grid_size
    context_dim: int = 256  # width of the text encoder's hidden states
    context_length: int = 32  # max text tokens (the learned null context has this length)
    hidden_size: int = 256
    num_layers: int = 6
    num_heads: int = 8
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    caption_dropout: float = 0.1  # per-sample probability, in training, of using the null context instead
    label_smoothing: float = 0.1  # masked prior
    # The presets use exact GELU; "gelu_tanh" is the default only so that configs saved before this field
    # existed load unchanged (the two differ by at most 5e-4 per activation).
    mlp_activation: str = "gelu_tanh"
    # ``VQGAN.codes_sha256()`` of the VQ-GAN whose codes the prior was trained on; None in folders saved before
    # it was recorded. A pipeline refuses another VQ-GAN (``allow_vqgan_mismatch`` overrides).
    vqgan_sha256: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in PRIOR_KINDS:
            raise ValueError(f"unknown prior kind {self.kind!r}; choose one of {PRIOR_KINDS}")
        if self.mlp_activation not in MLP_ACTIVATIONS:
            raise ValueError(f"unknown mlp_activation {self.mlp_activation!r}; choose one of {MLP_ACTIVATIONS}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if not 0.0 <= self.caption_dropout < 1.0:
            raise ValueError(f"caption_dropout must lie in [0, 1), got {self.caption_dropout}")
        for name in ("codebook_size", "grid_size", "context_dim", "context_length", "num_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    @property
    def num_codes(self) -> int:
        """Codes per image: ``grid_size ** 2``."""
        return self.grid_size * self.grid_size

    def replace(self, **changes) -> PriorConfig:
        return dataclasses.replace(copy.deepcopy(self), **changes)


GUIDANCE_SCHEDULES = ("constant", "linear", "cosine")


def uses_guidance(guidance_scale: float) -> bool:
    """Whether sampling at ``guidance_scale`` runs classifier-free guidance (a second, unconditional half of the
    batch): every scale but 1. The one place this is decided (pipelines, priors and samplers ask here)."""
    return guidance_scale != 1.0


@dataclass
class SamplingConfig(JSONConfig):
    """Sampling settings, one typed object from the command line (or ``pipe(...)``, or ``pipeline.json``'s
    defaults, or a training run's validation) to the sampler: ``pipelines.call_checks`` checks a call's settings
    over the defaults once, and ``sample_kwargs`` hands them to ``prior.sample``."""

    guidance_scale: float = 2.0  # classifier-free guidance scale (1: no guidance)
    temperature: float = 1.0  # 0: greedy
    top_k: int | None = None  # None or 0: off
    top_p: float | None = None  # None or 1: off
    num_steps: int = 8  # masked prior only: parallel decoding steps
    # how the guidance scale moves through decoding: "constant", or "linear" / "cosine" from 1 up to guidance_scale
    guidance_schedule: str = "constant"
    # masked prior only: the Gumbel noise on which codes are revealed first (annealed to 0; 0: by confidence alone)
    choice_temperature: float = 4.5

    @property
    def guided(self) -> bool:
        return uses_guidance(self.guidance_scale)

    def sample_kwargs(self, prior_kind: str) -> dict:
        """Keyword arguments of ``prior.sample`` for a prior of ``prior_kind`` (``num_steps`` and
        ``choice_temperature`` are the masked prior's only)."""
        options = {"guidance_scale": self.guidance_scale, "guidance_schedule": self.guidance_schedule,
                   "temperature": self.temperature, "top_k": self.top_k, "top_p": self.top_p}
        if prior_kind == "masked":
            options.update(num_steps=self.num_steps, choice_temperature=self.choice_temperature)
        return options



PRIOR_PRESETS: dict[str, PriorConfig] = {
    # Unit tests: a 4x4 grid over 16 codes, a few thousand parameters.
    "tiny": PriorConfig(
        codebook_size=16, grid_size=4, context_dim=8, context_length=6, hidden_size=16, num_layers=2,
        num_heads=2, mlp_ratio=2.0, mlp_activation="gelu",
    ),
    # CPU default for 32x32 shapes (8x8 codes, codebook 512), 2.0M parameters. Measured on 2 cores: a training
    # step (forward + backward + AdamW) at batch 64 with 24 context tokens takes ~0.42 s for either kind, so
    # ~3500 steps fit in 25 min (hidden 256 x 4 layers: ~0.64 s; hidden 256 x 6 layers: ~0.95 s).
    "cpu-small": PriorConfig(
        codebook_size=512, grid_size=8, context_dim=256, context_length=32, hidden_size=192, num_layers=4,
        num_heads=6, mlp_ratio=4.0, mlp_activation="gelu",
    ),
    # GPU: LlamaGen-B-like width on 16x16 grids.
    "base": PriorConfig(
        codebook_size=16384, grid_size=16, context_dim=768, context_length=77, hidden_size=768, num_layers=12,
        num_heads=12, mlp_ratio=4.0, dropout=0.1, mlp_activation="gelu",
    ),
}


def prior_preset(name: str, **overrides) -> PriorConfig:
    """A copy of ``PRIOR_PRESETS[name]`` with ``overrides`` applied (e.g. ``kind="masked"``)."""
    if name not in PRIOR_PRESETS:
        raise ValueError(f"unknown prior preset {name!r}; choose one of {sorted(PRIOR_PRESETS)}")
    return PRIOR_PRESETS[name].replace(**overrides)
