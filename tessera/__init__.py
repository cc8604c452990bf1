"""Tessera: a VQ-GAN image tokenizer, text-conditioned priors over its code grids, and the pipelines on them.

The public names load on first use, so ``import tessera`` (and the ``tessera`` command's start) stays fast:

    from tessera import TextToImagePipeline
    pipe = TextToImagePipeline.from_pretrained("tessera-shapes")   # a shipped pipeline, or any saved folder

The installed package maps the repository's folders: ``tessera.tokenizer`` (``tokenizer/``, the VQ-GAN),
``tessera.prior`` (``prior/``), ``tessera.captioner`` (``captioner/``), ``tessera.pipelines`` (``pipelines/``),
``tessera.models`` (``models/``, the shipped pipelines) and ``tessera.core`` (this folder's ``core/``, the
bottom layer). ARCHITECTURE.md has the layers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tessera.core.version import tessera_version

# public name -> the module that defines it
_PUBLIC = {
    "TextToImagePipeline": "tessera.pipelines.text_to_image",
    "TextToImageOutput": "tessera.pipelines.text_to_image",
    "ImageToTextPipeline": "tessera.pipelines.image_to_text",
    "InpaintPipeline": "tessera.pipelines.editing",
    "ImageToImagePipeline": "tessera.pipelines.editing",
    "VQGAN": "tessera.tokenizer.model",
    "VQGANConfig": "tessera.tokenizer.config",
    "load_prior": "tessera.prior.kinds",
    "Captioner": "tessera.captioner.model",
    "shipped_pipeline": "tessera.models",
}
__all__ = [
    "VQGAN", "Captioner", "ImageToImagePipeline", "ImageToTextPipeline", "InpaintPipeline", "TextToImageOutput",
    "TextToImagePipeline", "VQGANConfig", "__version__", "load_prior", "shipped_pipeline",
]
__version__ = tessera_version()

if TYPE_CHECKING:
    from tessera.captioner.model import Captioner
    from tessera.models import shipped_pipeline
    from tessera.pipelines.editing import ImageToImagePipeline, InpaintPipeline
    from tessera.pipelines.image_to_text import ImageToTextPipeline
    from tessera.pipelines.text_to_image import TextToImageOutput, TextToImagePipeline
    from tessera.prior.kinds import load_prior
    from tessera.tokenizer.config import VQGANConfig
    from tessera.tokenizer.model import VQGAN


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'tessera' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
