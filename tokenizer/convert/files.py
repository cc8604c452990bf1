"""Reading foreign checkpoint files without running their code.

``.safetensors`` files hold tensors only. ``.ckpt`` / ``.pt`` / ``.pth`` files are pickles (PyTorch Lightning
checkpoints, LlamaGen's ``torch.save`` dicts) and are read only with ``torch.load(weights_only=True)``: its
unpickler builds tensors, containers and plain values, and nothing else unless a global is declared. Before
loading, ``torch.serialization.get_unsafe_globals_in_checkpoint`` lists the globals the file references beyond
those; each must be one of ``HARMLESS_GLOBALS`` (bookkeeping that sits beside the weights: Lightning's callback
key, an ``argparse.Namespace`` of training flags, numpy scalars), which are declared with a stand-in class that
keeps nothing, so no code of theirs runs. Any other global refuses the file with a message naming it.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import torch

from tessera.core.pretrained import load_safetensors

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
WEIGHT_ENTRIES = ("state_dict", "model", "ema")  # Lightning and taming; LlamaGen ("ema": its EMA copy)

# Globals that checkpoints reference beside their weights, and why each is safe to replace by a stand-in.
HARMLESS_GLOBALS: dict[str, str] = {
    "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint": "Lightning's callback-state key (a class)",
    "lightning.pytorch.callbacks.model_checkpoint.ModelCheckpoint": "Lightning's callback-state key (a class)",
    "argparse.Namespace": "training flags (LlamaGen's 'args')",
    "numpy.core.multiarray.scalar": "a numpy number in training bookkeeping",
    "numpy._core.multiarray.scalar": "a numpy number in training bookkeeping",
    "numpy.dtype": "the type of a numpy number",
    "numpy.dtypes.Float64DType": "the type of a numpy number",
    "numpy.dtypes.Float32DType": "the type of a numpy number",
    "numpy.dtypes.Int64DType": "the type of a numpy number",
}


class UnsupportedCheckpointError(ValueError):
    """A checkpoint that Tessera will not read, or whose model it cannot represent exactly."""


class Discarded:
    """Stand-in for a harmless global: accepts whatever the unpickler passes and keeps nothing."""

    def __new__(cls, *args, **kwargs):
        return super().__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state) -> None:
        pass


def unsafe_globals(path: Path) -> list[str] | None:
    """The globals ``path`` references beyond ``weights_only``'s defaults; None for the legacy (pre-zip)
    format, which torch cannot list (its load below refuses anything undeclared all the same)."""
    try:
        return torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except (RuntimeError, ValueError, pickle.UnpicklingError):
        return None


def refusal(path: Path, names: list[str]) -> UnsupportedCheckpointError:
    return UnsupportedCheckpointError(
        f"refusing to read {path}: it references {', '.join(names)}, which is not one of the harmless objects "
        "Tessera declares (a pickle can run code while it loads, so only tensors, plain values and "
        f"{len(HARMLESS_GLOBALS)} known bookkeeping objects are read). If you trust the file, save its weights "
        "as .safetensors in the environment that wrote it and convert that file instead.")


def load_pickle_safely(path: Path) -> object:
    """``torch.load(path, weights_only=True)`` with only the harmless globals it needs declared."""
    names = unsafe_globals(path)
    if names is not None:
        unknown = sorted(set(names) - set(HARMLESS_GLOBALS))
        if unknown:
            raise refusal(path, unknown)
    declared = [(Discarded, name) for name in (HARMLESS_GLOBALS if names is None else names)]
    try:
        with torch.serialization.safe_globals(declared):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:  # the legacy format, which could not be listed beforehand
        named = re.search(r"GLOBAL (\S+) was not an allowed global", str(error))
        raise refusal(path, [named.group(1) if named else "an object weights_only does not build"]) from error


def is_state_dict(value: object) -> bool:
    return isinstance(value, dict) and bool(value) and all(
        isinstance(key, str) and isinstance(tensor, torch.Tensor) for key, tensor in value.items())


def weights_in(loaded: object, path: Path) -> dict[str, torch.Tensor]:
    """The state dict of a loaded checkpoint: the object itself, or its first ``WEIGHT_ENTRIES`` entry."""
    if is_state_dict(loaded):
        return dict(loaded)
    if isinstance(loaded, dict):
        for entry in WEIGHT_ENTRIES:
            if is_state_dict(loaded.get(entry)):
                return dict(loaded[entry])
        keys = ", ".join(repr(key) for key in list(loaded)[:12] if isinstance(key, str))
        raise UnsupportedCheckpointError(
            f"{path} holds no state dict of tensors at its top level or under {', '.join(WEIGHT_ENTRIES)} "
            f"(its keys: {keys})")
    raise UnsupportedCheckpointError(f"{path} holds a {type(loaded).__name__}, not a dict of weights")


def read_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file or of a checkpoint pickle (read safely), on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    if path.suffix == ".safetensors":
        return load_safetensors(path, component="source checkpoint")
    if path.suffix in PICKLE_SUFFIXES:
        return weights_in(load_pickle_safely(path), path)
    raise UnsupportedCheckpointError(
        f"{path}: unknown checkpoint format {path.suffix!r}; expected .safetensors or one of {PICKLE_SUFFIXES}")
