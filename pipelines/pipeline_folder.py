"""The on-disk format of a saved text-to-image pipeline: ``pipeline.json`` and one folder per component.

``PipelineConfig`` reads and writes ``pipeline.json`` strictly; ``load_components`` loads the VQ-GAN, the text
side and the prior from a folder; ``check_components`` refuses components that do not fit together. The
pipeline itself (``pipelines.text_to_image``) builds on these.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tessera.captioner.model import Captioner
from tessera.core.config import CheckpointMismatchError, JSONConfig
from tessera.core.folders import folder_kind, refuse_to_overwrite, replace_entries
from tessera.core.version import tessera_version
from tessera.prior.config import PRIOR_KINDS, SamplingConfig
from tessera.prior.kinds import load_prior
from tessera.prior.text import ENCODER_FOLDER, TEXT_CONFIG_NAME, TOKENIZER_FOLDER, TextConditioner
from tessera.prior.transformer import GridPrior
from tessera.tokenizer.model import VQGAN

PIPELINE_CONFIG_NAME = "pipeline.json"
FORMAT_VERSION = 1
COMPONENTS = {"vqgan": "vqgan", "prior": "prior", "text_encoder": ENCODER_FOLDER, "text_tokenizer": TOKENIZER_FOLDER}
CAPTIONER_FOLDER = "captioner"
# An optional component: the image-to-text captioner (``captioner.model``), used for captioning and reranking.
OPTIONAL_COMPONENTS = {"captioner": CAPTIONER_FOLDER}


@dataclass
class PipelineConfig(JSONConfig):
    """``pipeline.json``: what the folder holds and the sampling defaults of a call."""

    prior_kind: str
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    components: dict[str, str] = field(default_factory=lambda: dict(COMPONENTS))
    format_version: int = FORMAT_VERSION
    tessera_version: str = "unknown"
    # The image-caption source the prior was trained on (a data-layer source string, e.g.
    # "shapes:num_samples=50000"), when known: ``train.py finetune`` replays it by default.
    training_data: str | None = None

    @classmethod
    def read(cls, directory: Path) -> PipelineConfig:
        """Strict: another format version, unknown or missing keys, or other component folders are errors."""
        path = directory / PIPELINE_CONFIG_NAME
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise CheckpointMismatchError(f"{path} is not valid JSON: {error}") from error
        version = data.get("format_version") if isinstance(data, dict) else None
        if version != FORMAT_VERSION:
            raise CheckpointMismatchError(f"{path} has format_version {version!r}; this version of Tessera "
                                          f"({tessera_version()}) reads format_version {FORMAT_VERSION}.")
        try:
            config = cls.from_dict(data)
        except TypeError as error:  # a required key is missing
            raise CheckpointMismatchError(f"{path}: {error}") from error
        required = {key: value for key, value in config.components.items() if key not in OPTIONAL_COMPONENTS}
        optional = {key: value for key, value in config.components.items() if key in OPTIONAL_COMPONENTS}
        if required != COMPONENTS or any(OPTIONAL_COMPONENTS[key] != value for key, value in optional.items()):
            raise CheckpointMismatchError(f"{path} names components {config.components}; expected {COMPONENTS} "
                                          f"and optionally {OPTIONAL_COMPONENTS}.")
        if config.prior_kind not in PRIOR_KINDS:
            raise CheckpointMismatchError(f"{path}: unknown prior_kind {config.prior_kind!r}; one of {PRIOR_KINDS}")
        return config


def check_components(vqgan: VQGAN, text: TextConditioner, prior: GridPrior, *, prior_kind: str | None = None,
                     source: str = "", allow_vqgan_mismatch: bool = False) -> None:
    """``CheckpointMismatchError`` unless the prior fits the VQ-GAN's codes and the text encoder's width, and
    (unless ``allow_vqgan_mismatch``) the VQ-GAN is the one the prior was trained with, when it recorded it."""
    problems = []
    recorded = prior.config.vqgan_sha256
    if recorded is not None and not allow_vqgan_mismatch and recorded != vqgan.codes_sha256():
        problems.append(f"the prior was trained on the codes of another VQ-GAN (prior/config.json vqgan_sha256 "
                        f"{recorded[:12]}..., this VQ-GAN's {vqgan.codes_sha256()[:12]}...): its codes mean other "
                        "things to it. Use the VQ-GAN saved with the prior, or pass allow_vqgan_mismatch=True "
                        "(--allow_vqgan_mismatch) if you know they are compatible")
    if prior.config.codebook_size != vqgan.codebook_size:
        problems.append(f"prior codebook_size {prior.config.codebook_size} vs VQ-GAN codebook size "
                        f"{vqgan.codebook_size}")
    if prior.config.grid_size != vqgan.config.latent_size:
        problems.append(f"prior grid_size {prior.config.grid_size} vs VQ-GAN latent_size {vqgan.config.latent_size}")
    if prior.config.context_dim != text.hidden_size:
        problems.append(f"prior context_dim {prior.config.context_dim} vs text encoder hidden_size {text.hidden_size}")
    if prior_kind is not None and prior_kind != prior.config.kind:
        problems.append(f"{PIPELINE_CONFIG_NAME} prior_kind {prior_kind!r} vs prior kind {prior.config.kind!r}")
    if problems:
        where = f"{source}: " if source else ""
        raise CheckpointMismatchError(f"{where}the pipeline components do not fit together: " + "; ".join(problems))


def check_captioner(vqgan: VQGAN, captioner: Captioner, source: str = "") -> None:
    """``CheckpointMismatchError`` unless the captioner reads the VQ-GAN's code grids."""
    problems = []
    if captioner.config.codebook_size != vqgan.codebook_size:
        problems.append(f"captioner codebook_size {captioner.config.codebook_size} vs VQ-GAN codebook size "
                        f"{vqgan.codebook_size}")
    if captioner.config.grid_size != vqgan.config.latent_size:
        problems.append(f"captioner grid_size {captioner.config.grid_size} vs VQ-GAN latent_size "
                        f"{vqgan.config.latent_size}")
    if captioner.config.code_dim != vqgan.config.z_channels:
        problems.append(f"captioner code_dim {captioner.config.code_dim} vs VQ-GAN z_channels "
                        f"{vqgan.config.z_channels}")
    if problems:
        where = f"{source}: " if source else ""
        raise CheckpointMismatchError(f"{where}the captioner does not fit the VQ-GAN: " + "; ".join(problems))


def load_captioner(directory: Path) -> Captioner | None:
    """The folder's captioner, or None when it has none."""
    folder = directory / CAPTIONER_FOLDER
    return Captioner.from_pretrained(folder) if folder.is_dir() else None


def load_components(directory: Path) -> tuple[VQGAN, TextConditioner, GridPrior]:
    """VQ-GAN, text conditioner and prior from a pipeline-shaped folder, each loaded strictly, on the CPU."""
    if not directory.is_dir():
        raise FileNotFoundError(f"no pipeline folder at {directory}")
    # text_encoder/ is checked by TextConditioner: a frozen encoder may come from an installed package instead
    required = [COMPONENTS["vqgan"], COMPONENTS["prior"], COMPONENTS["text_tokenizer"], TEXT_CONFIG_NAME]
    missing = [name for name in required if not (directory / name).exists()]
    if missing:
        raise FileNotFoundError(f"{directory} is not a complete pipeline folder: it has no {', '.join(missing)} "
                                f"(a pipeline folder holds {', '.join(required)} and {PIPELINE_CONFIG_NAME}).")
    vqgan = VQGAN.from_pretrained(directory / COMPONENTS["vqgan"])
    text = TextConditioner.from_pretrained(directory)
    prior = load_prior(directory / COMPONENTS["prior"])
    return vqgan, text, prior


def check_save_target(directory: Path, *, has_captioner: bool, remove_missing_components: bool = False,
                      overwrite: bool = False) -> None:
    """Refuse a save that would lose something: into a file; over a folder that holds something other than a
    pipeline (an imagefolder, a dataset: ``FolderInUseError``) unless ``overwrite``; over a folder holding a
    captioner the pipeline lacks (``FileExistsError``) unless ``remove_missing_components``."""
    if directory.exists() and not directory.is_dir():
        raise FileExistsError(f"{directory} is a file, not a folder: a pipeline is saved as a folder")
    kind = folder_kind(directory) if directory.is_dir() else None
    if kind is not None and not (directory / PIPELINE_CONFIG_NAME).is_file() and not overwrite:
        refuse_to_overwrite(directory, kind, what="a pipeline", override="overwrite=True (--overwrite)")
    if not has_captioner and (directory / CAPTIONER_FOLDER).exists() and not remove_missing_components:
        raise FileExistsError(f"{directory} holds {CAPTIONER_FOLDER}/ and this pipeline has no such component: "
                              "saving would delete it. Keep it by loading the pipeline with it (from_pretrained, "
                              "from_pipe), save to another folder, or pass remove_missing_components=True to "
                              "remove it.")


def write_pipeline_folder(directory: Path, write: Callable[[Path], None]) -> Path:
    """``write(staging)`` writes a whole pipeline folder beside ``directory``; it then replaces the folder's
    pipeline entries as a whole (``tessera.core.folders.replace_entries``, ``pipeline.json`` last)."""
    entries = [*COMPONENTS.values(), TEXT_CONFIG_NAME, *OPTIONAL_COMPONENTS.values(), PIPELINE_CONFIG_NAME]
    return replace_entries(directory, entries, write, marker=PIPELINE_CONFIG_NAME)
