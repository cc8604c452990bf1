"""Bring your own VQ tokenizer: foreign VQ-GAN checkpoints -> Tessera VQ-GAN folders, and back out to diffusers.

- ``files``: reading ``.safetensors`` and checkpoint pickles (``torch.load(weights_only=True)`` only, with a short
  list of harmless bookkeeping globals declared; anything else is refused).
- ``keys``: strict mapping (every source key used or dropped for a reason, every Tessera weight filled).
- ``layout``: the ``VQGANConfig`` that taming-layout weights describe.
- ``taming``: taming-transformers and LlamaGen key rules, and the variants refused.
- ``diffusers``: diffusers ``VQModel`` configs and names, both directions; the export's weights.
- ``convert``: ``convert_checkpoint`` and ``export_to_diffusers`` (the ``tessera convert`` / ``tessera export``
  commands).
"""

from tessera.tokenizer.convert.convert import (
           SOURCES,
           ConversionReport,
           convert_checkpoint,
           export_to_diffusers,
)
from tessera.tokenizer.convert.files import UnsupportedCheckpointError
from tessera.tokenizer.convert.keys import ConversionError

__all__ = ["SOURCES", "ConversionError", "ConversionReport", "UnsupportedCheckpointError", "convert_checkpoint",
           "export_to_diffusers"]
