"""Writes that never leave a half-written file behind: a temporary file in the same folder, then a rename."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import save_file


def umask_mode(mode: int = 0o666) -> int:
    """``mode`` as an ordinary ``open`` would create it under the process's umask."""
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder, then rename. The file gets the
    usual permissions (0666 less the umask), not the temporary file's private 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp", encoding="utf-8") as tmp:
        tmp.write(text)
    os.chmod(tmp.name, umask_mode())
    os.replace(tmp.name, path)


def atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({name: tensor.detach().contiguous().cpu() for name, tensor in tensors.items()}, str(tmp), metadata=metadata)
    os.chmod(tmp, umask_mode())  # safetensors writes its file 0600
    os.replace(tmp, path)


def apply_umask_modes(folder: Path) -> None:
    """Give every file and folder below ``folder`` the usual permissions (0666 / 0777 less the umask): writers
    such as safetensors' ``save_file`` (also inside transformers' ``save_pretrained``) create files 0600."""
    file_mode, folder_mode = umask_mode(0o666), umask_mode(0o777)
    for root, folders, files in os.walk(folder):
        for name in folders:
            os.chmod(os.path.join(root, name), folder_mode)
        for name in files:
            if not os.path.islink(os.path.join(root, name)):
                os.chmod(os.path.join(root, name), file_mode)


def temporary_path(path: Path) -> Path:
    return path.with_name(f"{path.name}.{os.getpid()}.tmp")  # one per writer: a stray writer cannot clobber it


def durable_replace(tmp: Path, path: Path) -> None:
    """fsync ``tmp``, rename it to ``path``, fsync the folder: after a power loss ``path`` is either
    absent or complete."""
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    try:
        folder = os.open(path.parent, os.O_RDONLY)
    except OSError:  # platforms without directory handles
        return
    try:
        os.fsync(folder)
    except OSError:
        pass
    finally:
        os.close(folder)


def write_json_durably(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    durable_replace(tmp, path)


LABEL_CHAR_WIDTH = 6  # PIL's default bitmap font: pixels per character
MIN_LABELLED_ROW = 24  # a labelled grid is scaled up (nearest) until each row is at least this tall


def save_image_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int = 8,
                    row_labels: list[str] | None = None) -> Path:
    """(B, 3, H, W) in [-1, 1] -> one PNG grid of ``nrow`` columns, written atomically. ``row_labels``: one text
    per grid row, written in a column on the left (the grid is scaled up so that the text fits a row)."""

    images = images.detach().float().cpu().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    b, c, h, w = images.shape
    ncol = min(nrow, b)
    nrows = math.ceil(b / ncol)
    grid = torch.zeros(c, nrows * (h + 2) + 2, ncol * (w + 2) + 2, dtype=torch.uint8)
    for index in range(b):
        row, col = divmod(index, ncol)
        grid[:, 2 + row * (h + 2): 2 + row * (h + 2) + h, 2 + col * (w + 2): 2 + col * (w + 2) + w] = images[index]
    picture = Image.fromarray(grid.permute(1, 2, 0).numpy())  # (H, W, 3)
    if row_labels is not None:
        picture = with_row_labels(picture, row_labels, h + 2, nrows)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    picture.save(tmp)
    os.replace(tmp, path)
    return path


def with_row_labels(grid: Image.Image, labels: list[str], row_height: int, nrows: int) -> Image.Image:
    """``grid`` (rows of ``row_height`` pixels, 2 above the first) with one label per row in a column on its left."""
    if len(labels) != nrows:
        raise ValueError(f"{len(labels)} row labels for a grid of {nrows} rows")
    from PIL import ImageDraw

    scale = max(1, math.ceil(MIN_LABELLED_ROW / row_height))
    grid = grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)
    texts = [label if len(label) <= 48 else label[:47] + "…" for label in labels]
    margin = 6 + LABEL_CHAR_WIDTH * max(len(text) for text in texts)
    labelled = Image.new("RGB", (margin + grid.width, grid.height), "white")
    labelled.paste(grid, (margin, 0))
    pen = ImageDraw.Draw(labelled)
    for row, text in enumerate(texts):
        pen.text((4, 2 * scale + row * row_height * scale + (row_height * scale - 12) // 2), text, fill="black")
    return labelled
