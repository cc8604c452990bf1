"""The prior kinds by name: build a fresh prior from a config, or load a saved one as the class its config names."""

from __future__ import annotations

import os

from tessera.core.pretrained import CONFIG_NAME, resolve_folder
from tessera.prior.autoregressive import AutoregressivePrior
from tessera.prior.config import PriorConfig
from tessera.prior.masked import MaskedPrior

PRIOR_CLASSES: dict[str, type[AutoregressivePrior] | type[MaskedPrior]] = {
    "autoregressive": AutoregressivePrior, "masked": MaskedPrior,
}


def build_prior(config: PriorConfig) -> AutoregressivePrior | MaskedPrior:
    """A freshly initialised prior of ``config.kind``."""
    return PRIOR_CLASSES[config.kind](config)


def load_prior(name_or_path: str | os.PathLike, **kwargs) -> AutoregressivePrior | MaskedPrior:
    """``from_pretrained`` of the class that the saved ``config.json``'s ``kind`` names; ``kwargs`` go to
    ``from_pretrained`` (``map_location``, ``local_files_only``)."""
    folder = resolve_folder(name_or_path, local_files_only=kwargs.get("local_files_only", False))
    if not (folder / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"{folder} has no {CONFIG_NAME}; it is not a saved prior.")
    config = PriorConfig.load(folder / CONFIG_NAME)
    return PRIOR_CLASSES[config.kind].from_pretrained(folder, **kwargs)
