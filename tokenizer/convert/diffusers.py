"""diffusers' ``VQModel`` (aMUSEd's VQ, the LDM VQ-f4/f8 autoencoders) <-> Tessera's VQ-GAN: configs and names.

One name table serves both directions: ``diffusers_name`` gives the diffusers key of each Tessera key. The network
is the same; diffusers stores the decoder levels coarsest first (``up_blocks.0``; Tessera's ``up.0`` is the
finest), names attention ``group_norm``/``to_q``/``to_k``/``to_v``/``to_out.0`` with ``Linear`` weights (1x1
convolutions here), and older files say ``query``/``key``/``value``/``proj_attn``. Config fields:
``block_out_channels`` -> ``ch`` * ``ch_mult`` (so ``ch_mult[0]`` is 1), ``layers_per_block`` ->
``num_res_blocks`` (the decoder has one more, in both), ``latent_channels`` -> ``z_channels``, ``vq_embed_dim``
-> ``code_dim``, ``mid_block_add_attention`` -> ``mid_attention``, ``Attn*Block2D`` block types ->
``attn_resolutions``. ``quant_conv``/``post_quant_conv`` always exist, so imports keep the projections on.
"""

from __future__ import annotations

import re
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tessera.tokenizer.config import QuantizerConfig, VQGANConfig
from tessera.tokenizer.convert.files import UnsupportedCheckpointError
from tessera.tokenizer.model import VQGAN, AttnBlock, ResnetBlock

ENCODER_BLOCKS = {"DownEncoderBlock2D": False, "AttnDownEncoderBlock2D": True}  # type -> has attention
DECODER_BLOCKS = {"UpDecoderBlock2D": False, "AttnUpDecoderBlock2D": True}
ATTENTION_LEAVES = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
OLD_ATTENTION_LEAVES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
RESNET_LEAVES = {"nin_shortcut": "conv_shortcut"}
FIXED_NAMES = {"quantizer.codebook": "quantize.embedding.weight",
               **{f"{side}.norm_out.{leaf}": f"{side}.conv_norm_out.{leaf}"
                  for side in ("encoder", "decoder") for leaf in ("weight", "bias")}}
# Tessera entries with no diffusers counterpart: training bookkeeping of the quantizer.
BOOKKEEPING = ("quantizer.initialized", "quantizer.usage_ema", "quantizer.steps", "quantizer.ema_cluster_size",
               "quantizer.ema_embed_sum")


def _leaf(rest: str, table: dict[str, str]) -> str:
    head, _, tail = rest.partition(".")
    return f"{table.get(head, head)}.{tail}"


def _stack(kind: str, index: int, rest: str) -> str:
    """``block.j.x`` / ``attn.j.x`` / ``downsample.x`` / ``upsample.x`` inside a level -> diffusers names."""
    part, _, tail = rest.partition(".")
    if part == "block":
        number, _, leaf = tail.partition(".")
        return f"{kind}.{index}.resnets.{number}.{_leaf(leaf, RESNET_LEAVES)}"
    if part == "attn":
        number, _, leaf = tail.partition(".")
        return f"{kind}.{index}.attentions.{number}.{_leaf(leaf, ATTENTION_LEAVES)}"
    return f"{kind}.{index}.{part}rs.0.{tail}"  # downsample.conv -> downsamplers.0.conv, upsample likewise


def diffusers_name(key: str, num_levels: int) -> str:
    """The diffusers ``VQModel`` key of a Tessera VQ-GAN key."""
    if key in FIXED_NAMES:
        return FIXED_NAMES[key]
    if match := re.fullmatch(r"quantizer\.(in|out)_proj\.(weight|bias)", key):
        return f"{'quant_conv' if match.group(1) == 'in' else 'post_quant_conv'}.{match.group(2)}"
    if match := re.fullmatch(r"encoder\.down\.(\d+)\.(.+)", key):
        return "encoder." + _stack("down_blocks", int(match.group(1)), match.group(2))
    if match := re.fullmatch(r"decoder\.up\.(\d+)\.(.+)", key):
        return "decoder." + _stack("up_blocks", num_levels - 1 - int(match.group(1)), match.group(2))
    if match := re.fullmatch(r"(encoder|decoder)\.mid\.(block_1|block_2|attn_1)\.(.+)", key):
        side, part, leaf = match.groups()
        if part == "attn_1":
            return f"{side}.mid_block.attentions.0.{_leaf(leaf, ATTENTION_LEAVES)}"
        return f"{side}.mid_block.resnets.{int(part[-1]) - 1}.{_leaf(leaf, RESNET_LEAVES)}"
    return key  # conv_in, conv_out


def is_attention_weight(key: str) -> bool:
    """A Tessera 1x1-conv attention weight that diffusers stores as a ``Linear`` weight."""
    return re.search(r"\.(attn\.\d+|attn_1)\.(q|k|v|proj_out)\.weight$", key) is not None


def modernise_name(key: str) -> str:
    """Older diffusers attention names (``query``/``key``/``value``/``proj_attn``) -> today's."""
    match = re.fullmatch(r"(.+\.attentions\.\d+)\.(query|key|value|proj_attn)\.(weight|bias)", key)
    return f"{match.group(1)}.{OLD_ATTENTION_LEAVES[match.group(2)]}.{match.group(3)}" if match else key


def linear_to_conv(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.reshape(*tensor.shape, 1, 1) if tensor.ndim == 2 else tensor  # (C, C) -> (C, C, 1, 1)


def conv_to_linear(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.reshape(tensor.shape[0], tensor.shape[1])  # (C, C, 1, 1) -> (C, C)


# --------------------------------------------------------------------------- configs


def vqgan_config_from_diffusers(config: dict[str, Any], *, resolution: int | None = None,
                                pixel_range: tuple[int, int] = (-1, 1)) -> VQGANConfig:
    """The Tessera config of a diffusers ``VQModel`` ``config.json``; refuses what Tessera cannot build."""
    if config.get("_class_name", "VQModel") != "VQModel":
        raise UnsupportedCheckpointError(f"the folder holds a diffusers {config['_class_name']}, not a VQModel")
    if config.get("norm_type", "group") != "group":
        raise UnsupportedCheckpointError(
            f"norm_type={config['norm_type']!r}: MoVQ's spatial normalisation conditions the decoder's norms on the "
            "codes; Tessera's decoder has plain group norms, so this model is not converted")
    if config.get("act_fn", "silu") != "silu":
        raise UnsupportedCheckpointError(f"act_fn={config['act_fn']!r}; Tessera's VQ-GAN uses silu")
    if config.get("in_channels", 3) != config.get("out_channels", 3):
        raise UnsupportedCheckpointError("in_channels and out_channels differ; Tessera's VQ-GAN has one in_channels")
    down, up = list(config.get("down_block_types", ())), list(config.get("up_block_types", ()))
    widths = list(config.get("block_out_channels", (64,)))
    unknown = sorted({kind for kind in down if kind not in ENCODER_BLOCKS} | {kind for kind in up
                                                                              if kind not in DECODER_BLOCKS})
    if unknown or len(down) != len(widths) or len(up) != len(widths):
        raise UnsupportedCheckpointError(
            f"block types {down} / {up} for {len(widths)} levels: Tessera converts one of {sorted(ENCODER_BLOCKS)} and "
            f"one of {sorted(DECODER_BLOCKS)} per level" + (f" (not {unknown})" if unknown else ""))
    encoder_attention = [ENCODER_BLOCKS[kind] for kind in down]
    decoder_attention = [DECODER_BLOCKS[kind] for kind in reversed(up)]  # up_blocks run coarsest first
    if encoder_attention != decoder_attention:
        raise UnsupportedCheckpointError(f"attention levels differ between {down} and {up}")
    ch = widths[0]
    if any(width % ch for width in widths):
        raise UnsupportedCheckpointError(f"block_out_channels {widths} are not multiples of the first")
    resolution = int(resolution or config.get("sample_size", 32))
    latent = config.get("latent_channels", 3)
    return VQGANConfig(
        resolution=resolution, in_channels=config.get("in_channels", 3), ch=ch,
        ch_mult=tuple(width // ch for width in widths), num_res_blocks=config.get("layers_per_block", 1),
        attn_resolutions=tuple(resolution // 2**level for level, has in enumerate(encoder_attention) if has),
        z_channels=latent, norm_groups=config.get("norm_num_groups", 32),
        mid_attention=bool(config.get("mid_block_add_attention", True)), pixel_range=pixel_range,
        quantizer=QuantizerConfig(codebook_size=config.get("num_vq_embeddings", 256),
                                  code_dim=config.get("vq_embed_dim") or latent, l2_normalize=False,
                                  always_project=True),
    )


def diffusers_config(config: VQGANConfig) -> dict[str, Any]:
    """The diffusers ``VQModel`` config of a Tessera VQ-GAN (see ``export``: blocks per level are padded)."""
    if config.quantizer.kind != "vq":
        raise UnsupportedCheckpointError(f"a {config.quantizer.kind} quantizer has no diffusers VQModel equivalent")
    if config.ch_mult[0] != 1:
        raise UnsupportedCheckpointError(
            f"ch_mult {config.ch_mult} starts with {config.ch_mult[0]}: diffusers' encoder gives its first level "
            "the width of conv_in, so only models with ch_mult[0] == 1 export")
    levels = range(len(config.ch_mult))
    if min(config.res_blocks_at(level) for level in levels) < 1:
        raise UnsupportedCheckpointError("a level without residual blocks has no diffusers equivalent")
    attention = [config.resolution // 2**level in config.attn_resolutions for level in levels]
    return {
        "_class_name": "VQModel",
        "in_channels": config.in_channels, "out_channels": config.in_channels,
        "down_block_types": ["AttnDownEncoderBlock2D" if has else "DownEncoderBlock2D" for has in attention],
        "up_block_types": ["AttnUpDecoderBlock2D" if has else "UpDecoderBlock2D" for has in reversed(attention)],
        "block_out_channels": [config.ch * mult for mult in config.ch_mult],
        "layers_per_block": max(config.res_blocks_at(level) for level in levels),
        "act_fn": "silu", "latent_channels": config.z_channels, "sample_size": config.resolution,
        "num_vq_embeddings": config.quantizer.codebook_size, "norm_num_groups": config.norm_groups,
        "vq_embed_dim": config.quantizer.code_dim, "norm_type": "group",
        "mid_block_add_attention": config.mid_attention,
    }


# --------------------------------------------------------------------------- export


def _identity_block_state(prefix: str, width: int, groups: int, attention: bool) -> dict[str, torch.Tensor]:
    """A residual block (and attention block) whose residual branches output exact zeros: identity maps that
    pad a level to diffusers' one ``layers_per_block``. ``prefix`` is the Tessera ``...block.j`` name."""
    modules: dict[str, nn.Module] = {prefix: ResnetBlock(width, width, groups)}
    if attention:
        modules[prefix.replace(".block.", ".attn.")] = AttnBlock(width, groups)
    state = {}
    for name, module in modules.items():
        for key, tensor in module.state_dict().items():
            is_norm = ".norm" in f".{key}" and key.endswith("weight")
            state[f"{name}.{key}"] = torch.ones_like(tensor) if is_norm else torch.zeros_like(tensor)
    return state


def _padding(config: VQGANConfig, layers_per_block: int) -> dict[str, torch.Tensor]:
    """Identity blocks for the levels with fewer residual blocks than ``layers_per_block`` (decoder: + 1)."""
    state = {}
    for level, mult in enumerate(config.ch_mult):
        attention = config.resolution // 2**level in config.attn_resolutions
        have = config.res_blocks_at(level)
        for side, stack, extra in (("encoder", "down", 0), ("decoder", "up", 1)):
            for index in range(have + extra, layers_per_block + extra):
                state |= _identity_block_state(f"{side}.{stack}.{level}.block.{index}", config.ch * mult,
                                               config.norm_groups, attention)
    return state


def diffusers_state(model: VQGAN) -> dict[str, torch.Tensor]:
    """The weights of ``model`` as a diffusers ``VQModel`` of ``diffusers_config(model.config)``: names mapped,
    attention weights as ``Linear``, an l2 codebook stored normalised (diffusers looks up raw rows; the
    nearest unit row to a vector is the nearest to its normalised self), identity projections as 1x1 identity
    convolutions, levels padded with identity blocks."""
    config = model.config
    layers = diffusers_config(config)["layers_per_block"]
    state = {key: tensor.detach().float() for key, tensor in model.state_dict().items() if key not in BOOKKEEPING}
    if config.quantizer.l2_normalize:
        state["quantizer.codebook"] = F.normalize(state["quantizer.codebook"], dim=1)
    for side in ("in", "out"):
        if f"quantizer.{side}_proj.weight" not in state:  # Identity: code_dim == z_channels
            state[f"quantizer.{side}_proj.weight"] = torch.eye(config.z_channels)[:, :, None, None]
            state[f"quantizer.{side}_proj.bias"] = torch.zeros(config.z_channels)
    state |= _padding(config, layers)
    levels = len(config.ch_mult)
    return {diffusers_name(key, levels): conv_to_linear(tensor) if is_attention_weight(key) else tensor
            for key, tensor in state.items()}
