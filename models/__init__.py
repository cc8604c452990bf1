"""The pipelines shipped with Tessera, installed as package data (``tessera.models``; the repository's
``models/`` folder): each subfolder is a saved pipeline that ``TextToImagePipeline.from_pretrained`` loads.

    from tessera.models import shipped_pipeline, SHIPPED_PIPELINES
    shipped_pipeline("tessera-shapes")     # -> the folder, wherever Tessera is installed

The ``tessera`` command and every ``from_pretrained`` take these names wherever a pipeline folder goes: a
folder of that name in the working directory comes first, then the shipped one.
"""

from __future__ import annotations

from pathlib import Path

FOLDER = Path(__file__).resolve().parent
DEFAULT_PIPELINE = "tessera-shapes"


def shipped_pipeline_names() -> list[str]:
    """The names of the shipped pipeline folders (those with a ``pipeline.json``)."""
    return sorted(path.parent.name for path in FOLDER.glob("*/pipeline.json"))


SHIPPED_PIPELINES = tuple(shipped_pipeline_names())


def shipped_pipeline(name: str = DEFAULT_PIPELINE) -> Path:
    """The folder of the shipped pipeline ``name``; ``FileNotFoundError`` naming the ones there are."""
    folder = FOLDER / name
    if name not in SHIPPED_PIPELINES or not (folder / "pipeline.json").is_file():
        raise FileNotFoundError(f"Tessera ships no pipeline named {name!r}; shipped: {', '.join(SHIPPED_PIPELINES)} "
                                f"(in {FOLDER})")
    return folder


def resolve_pipeline_folder(name_or_path: str | Path) -> Path:
    """A pipeline folder: ``name_or_path`` itself when it exists, else the shipped pipeline of that name."""
    path = Path(name_or_path)
    if path.exists() or str(name_or_path) not in SHIPPED_PIPELINES:
        return path
    return shipped_pipeline(str(name_or_path))


def existing_pipeline_folder(name_or_path: str | Path) -> Path:
    """``resolve_pipeline_folder``, and ``FileNotFoundError`` naming the shipped pipelines when the folder holds
    no saved pipeline (no ``pipeline.json``)."""
    folder = resolve_pipeline_folder(name_or_path)
    if not (folder / "pipeline.json").is_file():
        raise FileNotFoundError(f"no pipeline at {folder} (no pipeline.json): give a folder written by "
                                "TextToImagePipeline.save_pretrained, or a shipped pipeline's name: "
                                f"{', '.join(SHIPPED_PIPELINES)}")
    return folder
