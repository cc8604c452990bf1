"""``convert_checkpoint``: a taming-transformers, LlamaGen or diffusers VQ checkpoint -> a Tessera VQ-GAN folder;
``export_to_diffusers``: a Tessera VQ-GAN folder -> a diffusers ``VQModel`` folder. Both return a report of
what they did (parameters, codebook, code grid, dropped keys)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tessera.core.io import atomic_save_safetensors, atomic_write_text
from tessera.core.pretrained import list_head, load_state_dict_strict
from tessera.tokenizer.config import VQGANConfig
from tessera.tokenizer.convert.diffusers import (
    diffusers_config,
    diffusers_name,
    diffusers_state,
    is_attention_weight,
    linear_to_conv,
    modernise_name,
    vqgan_config_from_diffusers,
)
from tessera.tokenizer.convert.files import read_weights
from tessera.tokenizer.convert.keys import (
    DEFAULTED,
    ConversionError,
    KeyPlan,
    assemble,
    plan_from_names,
    plan_with_rules,
)
from tessera.tokenizer.convert.layout import infer_vqgan_config
from tessera.tokenizer.convert.taming import TAMING_RULES, llamagen_levels, llamagen_rules, refuse_unsupported
from tessera.tokenizer.model import VQGAN

SOURCES = ("taming", "llamagen", "diffusers")
DEFAULT_RESOLUTION = 256  # taming's and LlamaGen's released tokenizers
DIFFUSERS_CONFIG = "config.json"
DIFFUSERS_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


@dataclass
class ConversionReport:
    action: str  # e.g. "converted the taming checkpoint last.ckpt"
    output: Path
    config: VQGANConfig
    num_parameters: int
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> number of source keys
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        config, quantizer = self.config, self.config.quantizer
        low, high = config.pixel_range
        lines = [
            f"{self.action} -> {self.output}",
            f"  {self.num_parameters:,} parameters; codebook of {quantizer.codebook_size} codes x {quantizer.code_dim} "
            f"dims{' (l2-normalised lookup)' if quantizer.l2_normalize else ''}",
            f"  {config.resolution}x{config.resolution} images -> {config.latent_size}x{config.latent_size} codes "
            f"(downsampling x{config.downsample_factor}); the network works in [{low}, {high}] pixels",
        ]
        lines += [f"  dropped {count} source keys: {reason}" for reason, count in self.dropped.items()]
        return lines + [f"  note: {note}" for note in self.notes]


# --------------------------------------------------------------------------- reading the sources


@dataclass
class DiffusersModel:
    config: dict
    weights: Path
    pipeline_class: str | None  # the pipeline folder's model_index.json class, when given a pipeline


def find_diffusers_model(path: Path) -> DiffusersModel:
    """A diffusers ``VQModel``: its folder, a pipeline folder with a ``vqvae/`` one, or a weights file with
    ``config.json`` beside it."""
    pipeline_class = None
    if path.is_dir() and (path / "vqvae" / DIFFUSERS_CONFIG).is_file():
        index = path / "model_index.json"
        pipeline_class = json.loads(index.read_text())["_class_name"] if index.is_file() else None
        path = path / "vqvae"
    folder = path if path.is_dir() else path.parent
    if not (folder / DIFFUSERS_CONFIG).is_file():
        raise FileNotFoundError(f"{folder} has no {DIFFUSERS_CONFIG}: pass a diffusers VQModel folder (or a pipeline "
                                "folder with vqvae/)")
    weights = [path] if path.is_file() else [folder / name for name in DIFFUSERS_WEIGHTS if (folder / name).is_file()]
    if not weights:
        raise FileNotFoundError(f"{folder} has none of {', '.join(DIFFUSERS_WEIGHTS)}")
    config = json.loads((folder / DIFFUSERS_CONFIG).read_text(encoding="utf-8"))
    return DiffusersModel(config=config, weights=weights[0], pipeline_class=pipeline_class)


@dataclass
class SourcePlan:
    """What a source's reader found: the config to build, the (renamed-to-be) weights and how to rename them."""

    config: VQGANConfig
    state: dict[str, torch.Tensor]
    plan: KeyPlan
    origin: Path  # the weights file
    notes: list[str] = field(default_factory=list)


def _diffusers_plan(path: Path, resolution: int | None, pixel_range: tuple[int, int] | None) -> SourcePlan:
    found = find_diffusers_model(path)
    notes = []
    if pixel_range is None:
        amused = (found.pipeline_class or "").startswith("Amused")
        pixel_range = (0, 1) if amused else (-1, 1)
        if amused:
            notes.append("an aMUSEd pipeline: its VQ works in [0, 1] pixels (pass --pixel_range to override)")
    config = vqgan_config_from_diffusers(found.config, resolution=resolution, pixel_range=pixel_range)
    raw = read_weights(found.weights)
    state = {modernise_name(key): tensor for key, tensor in raw.items()}
    if len(state) != len(raw):
        raise ConversionError(f"{found.weights} holds attention weights under both old and new diffusers names")
    levels = len(config.ch_mult)
    names = {diffusers_name(key, levels): key for key in VQGAN(config).state_dict() if key not in DEFAULTED}
    plan = plan_from_names(state, names)
    for source, target in plan.targets.items():
        if is_attention_weight(target):
            state[source] = linear_to_conv(state[source])  # Linear (C, C) -> 1x1 conv (C, C, 1, 1)
    return SourcePlan(config, state, plan, found.weights, notes)


def _taming_plan(source: str, path: Path, resolution: int | None,
                 pixel_range: tuple[int, int] | None) -> SourcePlan:
    state = read_weights(path)
    refuse_unsupported(state, source)
    rules = TAMING_RULES if source == "taming" else llamagen_rules(llamagen_levels(state))
    plan = plan_with_rules(state, rules)
    if plan.unmapped:
        raise ConversionError(f"{path} is not a {source} VQ-GAN checkpoint as Tessera knows it: no rule covers "
                              f"{list_head(sorted(plan.unmapped))}")
    shapes = {target: tuple(state[key].shape) for key, target in plan.targets.items()}
    config = infer_vqgan_config(shapes, resolution=resolution or DEFAULT_RESOLUTION, norm_groups=32,
                                l2_normalize=source == "llamagen", pixel_range=pixel_range or (-1, 1))
    return SourcePlan(config, state, plan, path)


def convert_checkpoint(source: str, path: str | os.PathLike, output: str | os.PathLike, *,
                       resolution: int | None = None, pixel_range: tuple[int, int] | None = None) -> ConversionReport:
    """Convert a ``source`` ("taming", "llamagen", "diffusers") checkpoint at ``path`` into a Tessera VQ-GAN folder
    at ``output``, strictly (see ``keys.assemble``). ``resolution``: the image side the folder's config records
    (default: the diffusers config's ``sample_size``, else 256); ``pixel_range``: what the network works in
    (default: [0, 1] for an aMUSEd pipeline, else [-1, 1])."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; choose one of {SOURCES}")
    path, output = Path(path), Path(output)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if source == "diffusers":
        found = _diffusers_plan(path, resolution, pixel_range)
    else:
        found = _taming_plan(source, path, resolution, pixel_range)
    model = VQGAN(found.config)
    weights = assemble(found.state, found.plan, model, origin=str(found.origin))
    load_state_dict_strict(model, weights, source=found.origin)
    model.save_pretrained(output)
    return ConversionReport(action=f"converted the {source} checkpoint {found.origin}", output=output,
                            config=found.config, num_parameters=sum(p.numel() for p in model.parameters()),
                            dropped=found.plan.dropped_summary(), notes=found.notes)


def export_to_diffusers(vqgan_dir: str | os.PathLike, output: str | os.PathLike) -> ConversionReport:
    """Write the Tessera VQ-GAN folder ``vqgan_dir`` as a diffusers ``VQModel`` folder at ``output``
    (``config.json`` + ``diffusion_pytorch_model.safetensors``), which ``diffusers.VQModel.from_pretrained``
    loads and which gives the same codes and pixels."""
    model = VQGAN.from_pretrained(vqgan_dir)
    config = model.config
    exported = diffusers_config(config)
    state = diffusers_state(model)
    output = Path(output)
    atomic_write_text(output / DIFFUSERS_CONFIG, json.dumps(exported, indent=2) + "\n")
    atomic_save_safetensors(state, output / DIFFUSERS_WEIGHTS[0])
    notes = []
    padded = [level for level in range(len(config.ch_mult))
              if config.res_blocks_at(level) < exported["layers_per_block"]]
    if padded:
        notes.append(f"levels {padded} padded to {exported['layers_per_block']} residual blocks with identity "
                     "blocks (zero residual branches)")
    if not config.quantizer.always_project and config.quantizer.code_dim == config.z_channels:
        notes.append("quant_conv / post_quant_conv written as 1x1 identity convolutions")
    if config.quantizer.l2_normalize:
        notes.append("the l2-normalised codebook is stored normalised")
    if config.pixel_range != (-1, 1):
        notes.append(f"the model works in {list(config.pixel_range)} pixels; feed the diffusers model that range")
    return ConversionReport(action=f"exported {vqgan_dir} as a diffusers VQModel", output=output, config=config,
                            num_parameters=sum(tensor.numel() for tensor in state.values()), notes=notes)
