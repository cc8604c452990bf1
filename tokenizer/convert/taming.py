"""Key rules for taming-transformers' ``VQModel`` and LlamaGen's ``VQModel`` (``tokenizer/tokenizer_image``).

taming's encoder and decoder names are Tessera's; only the quantizer differs (``quantize.embedding.weight``,
``quant_conv``, ``post_quant_conv``), and its Lightning checkpoints carry the training loss (``loss.*``:
discriminator and LPIPS), which is dropped. LlamaGen renames the same network: ``conv_blocks.i.res.j`` for
``down.i.block.j``, ``mid.0/1/2`` for ``mid.block_1/attn_1/block_2``, and its decoder's ``conv_blocks`` run from
the coarsest level (Tessera's ``up.0`` is the finest); its lookup is l2-normalised and it keeps a usage buffer.

Variants a rename cannot make exact are refused by ``refuse_unsupported``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from tessera.tokenizer.convert.files import UnsupportedCheckpointError
from tessera.tokenizer.convert.keys import Rule

QUANTIZER_RULES = [
    Rule(r"quantize\.embedding\.weight", "quantizer.codebook"),
    Rule(r"quant_conv\.(weight|bias)", r"quantizer.in_proj.\1"),
    Rule(r"post_quant_conv\.(weight|bias)", r"quantizer.out_proj.\1"),
]
NETWORK_RULE = Rule(r"((?:encoder|decoder)\..+)", r"\1")

TAMING_RULES = [
    *QUANTIZER_RULES,
    NETWORK_RULE,
    Rule(r"loss\..+", None, "training loss (discriminator, LPIPS)"),
    Rule(r"quantize\.embedding\.(cluster_size|embed_avg)", None, "EMA codebook statistics (training only)"),
]

# (pattern searched in each key, what it is, why Tessera cannot be exact)
UNSUPPORTED: list[tuple[str, str]] = [
    (r"^quantize\.(embed\.weight|proj\.)", "taming's GumbelQuantize (a learned soft assignment, not "
                                           "nearest-neighbour lookup)"),
    (r"^quantize\.used$", "remapped code indices (taming's VectorQuantizer2 with remap=...)"),
    (r"(conv_y|conv_b|norm_layer)\.", "MoVQ's spatial normalisation (decoder norms conditioned on the codes)"),
    (r"\.running_(mean|var)$", "batch normalisation (LlamaGen norm_type='batch')"),
    (r"^(encoder|decoder)\..*conv_shortcut\.", "3x3 convolutional shortcuts (conv_shortcut=True)"),
]


def refuse_unsupported(keys: Iterable[str], source: str) -> None:
    """``UnsupportedCheckpointError`` naming the first unsupported feature the keys show, with examples."""
    keys = list(keys)
    for pattern, what in UNSUPPORTED:
        found = [key for key in keys if re.search(pattern, key)]
        if found:
            raise UnsupportedCheckpointError(
                f"this {source} checkpoint uses {what}, which Tessera's VQ-GAN cannot reproduce exactly "
                f"(keys such as {', '.join(found[:3])}); it is not converted")


def llamagen_rules(num_levels: int) -> list[Rule]:
    """LlamaGen names -> Tessera names; ``num_levels`` reverses the decoder's level order."""
    def decoder_level(match: re.Match) -> str:
        return f"decoder.up.{num_levels - 1 - int(match.group(1))}.{_stack_part(match.group(2))}"

    return [
        *QUANTIZER_RULES,
        Rule(r"encoder\.conv_blocks\.(\d+)\.(.+)", lambda m: f"encoder.down.{m.group(1)}.{_stack_part(m.group(2))}"),
        Rule(r"decoder\.conv_blocks\.(\d+)\.(.+)", decoder_level),
        Rule(r"(encoder|decoder)\.mid\.([012])\.(.+)",
             lambda m: f"{m.group(1)}.mid.{('block_1', 'attn_1', 'block_2')[int(m.group(2))]}.{m.group(3)}"),
        Rule(r"(encoder|decoder)\.(conv_in|norm_out|conv_out)\.(weight|bias)", r"\1.\2.\3"),
        Rule(r"quantize\.codebook_used", None, "codebook usage history (training only)"),
    ]


def _stack_part(rest: str) -> str:
    """``res.j.x`` -> ``block.j.x``; ``attn.j.x``, ``downsample.x``, ``upsample.x`` unchanged."""
    return re.sub(r"^res\.", "block.", rest)


def llamagen_levels(keys: Iterable[str]) -> int:
    return len({int(match.group(1)) for key in keys if (match := re.match(r"decoder\.conv_blocks\.(\d+)\.", key))})
