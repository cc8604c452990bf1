"""Why a source taken for a Hugging Face Hub dataset did not load, said so that a user knows what to do (the data
layer's ``open_source`` raises it as a ``DataSourceError``)."""

from __future__ import annotations

import datasets


def hub_error_message(name: str, error: Exception) -> str:
    """What went wrong loading ``name`` from the Hub, and what to do: offline, unreachable, or the error itself."""
    chain, cause = [], error
    while cause is not None and len(chain) < 10:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    lines = [f"cannot load {name!r}: no local file or folder has that name, so it was taken for a Hugging Face "
             f"Hub dataset, and loading that failed ({type(error).__name__}: {error})."]
    if datasets.config.HF_HUB_OFFLINE:
        lines.append("HF_HUB_OFFLINE is set, so nothing can be downloaded, and this dataset is not in the local "
                     "cache. Unset HF_HUB_OFFLINE on a machine with network access, or use a local source.")
    elif any(isinstance(cause, ConnectionError) for cause in chain):
        lines.append("The Hub could not be reached (no network?). Check the connection, or set HF_HUB_OFFLINE=1 "
                     "to use a cached copy without waiting on the network, or use a local source.")
    lines.append("Local sources: an imagefolder with metadata.jsonl or metadata.csv, a save_to_disk folder, "
                 "parquet files, or 'shapes' (the built-in synthetic dataset).")
    return "\n".join(lines)
