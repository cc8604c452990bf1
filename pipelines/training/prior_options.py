"""The prior stage's own options beside the model, text, sampling and training configs of a ``PriorRunConfig``:
what data it reads and how its captions vary (``PriorDataOptions``), and what a fine-tune continues from
(``FinetuneOptions``). One ``train.py prior`` / ``finetune`` flag per field."""

from __future__ import annotations

from dataclasses import dataclass

from tessera.core.config import JSONConfig
from tessera.pipelines.data.worlds import AUTO, check_world_choice
from tessera.pipelines.training.caption_groups import check_group_pattern
from tessera.pipelines.training.captions import check_caption_variation


@dataclass
class PriorDataOptions(JSONConfig):
    tokens: str = ""  # a tokenized dataset folder (train.py tokenize)
    vqgan: str = ""  # the VQ-GAN folder the tokens were made with
    validation_tokens: str | None = None  # default: hold out the last rows of --tokens
    # prompts of the validation sample grids; default: the world's (shapes), else the first distinct captions of
    # the validation rows
    validation_prompts: tuple[str, ...] = ()
    # the benchmark world whose evaluator judges validation samples: "auto" (the world whose captions these are),
    # "none", or a world's name (pipelines.data.worlds)
    world: str = AUTO
    num_evaluation_captions: int = 200  # a world's data only: held-out captions judged by its evaluator
    evaluation_caption_styles: tuple[str, ...] = ("en",)  # a world's data only: the caption styles judged
    # "none" | "noise" (any data) | "prompts" (free text, alternative captions) | a world's name, e.g. "shapes" (its
    # phrasings): see training.captions
    caption_variation: str = "none"
    caption_variants: int = 16  # variants of each distinct caption drawn from in training
    caption_warmup_epochs: int = 0  # epoch e < N varies a share e / N of the rows (training.captions.variation_share)
    caption_omission: float = 0.0  # a world's variation only: share of phrasings that leave one attribute unsaid
    caption_omit: tuple[str, ...] | None = None  # the attributes they may leave unsaid (None: any the world has)
    # a regular expression: rows whose captions match once its matches are removed form one group, drawn as often
    # as one row (variants of one drawing weighted down; training.caption_groups). None: every row alike
    group_pattern: str | None = None
    # the group weights apply from this optimizer step on (0: from the start); before it every row counts alike, so
    # the prior first learns the copies with the rest, then spends its steps on the distinct drawings
    group_from_step: int = 0

    def __post_init__(self) -> None:
        check_world_choice(self.world)
        check_caption_variation(self.caption_variation, self.caption_omission, self.caption_omit)
        check_group_pattern(self.group_pattern)
        if self.group_from_step < 0 or (self.group_from_step and self.group_pattern is None):
            raise ValueError(f"group_from_step must be >= 0 and needs a group_pattern, got {self.group_from_step} "
                             f"with group_pattern {self.group_pattern!r}")
        if self.caption_warmup_epochs < 0:
            raise ValueError(f"caption_warmup_epochs must be >= 0, got {self.caption_warmup_epochs}")


@dataclass
class FinetuneOptions(JSONConfig):
    """``train.py finetune``: continue a saved pipeline's prior and text side on new captions."""

    pipeline: str | None = None  # a saved pipeline folder (None: train from scratch)
    replay_tokens: str | None = None  # the original data, tokenized, mixed into every batch against forgetting
    replay_fraction: float = 0.0  # share of each batch drawn from replay_tokens
    new_text_tokens: int = 0  # grow the scratch text tokenizer by up to this many tokens for the new captions
    normalize_text: bool = True  # a text side saved before normalisation existed gets it (and learns it here)

    def __post_init__(self) -> None:
        if not 0.0 <= self.replay_fraction < 1.0:
            raise ValueError(f"replay_fraction must lie in [0, 1), got {self.replay_fraction}")
        if self.replay_fraction > 0 and not self.replay_tokens:
            raise ValueError("replay_fraction > 0 needs replay_tokens (the original data, tokenized)")
        if self.new_text_tokens < 0:
            raise ValueError(f"new_text_tokens must be >= 0, got {self.new_text_tokens}")
