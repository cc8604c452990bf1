"""The installed package: one import namespace (``tessera``), every subpackage in the wheel, the shipped
pipelines inside it as package data, and a non-editable install that generates from any directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]


def packages_on_disk() -> set[str]:
    """Every folder with an ``__init__.py`` under the package-dir table, by its import name."""
    found = set()
    for package, folder in SETUPTOOLS["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join([package, *parts]))
    return found


def test_every_package_on_disk_is_installed_and_all_under_tessera():
    listed = set(SETUPTOOLS["packages"])
    assert listed == packages_on_disk()
    assert {name.split(".")[0] for name in listed} == {"tessera"}
    assert not {"tokenizer", "prior", "captioner", "pipelines"} & listed


def test_the_public_surface_loads_lazily_and_names_what_it_exports():
    import tessera

    expected = {"TextToImagePipeline", "InpaintPipeline", "ImageToImagePipeline", "ImageToTextPipeline", "VQGAN",
                "load_prior"}
    assert expected <= set(tessera.__all__) <= set(dir(tessera))
    for name in tessera.__all__:
        assert getattr(tessera, name) is not None
    with pytest.raises(AttributeError):
        tessera.NoSuchName  # noqa: B018


def test_the_old_top_level_names_are_refused_with_a_clear_error():
    for name in ("tokenizer", "prior", "captioner", "pipelines"):
        result = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=ROOT, capture_output=True, text=True)
        assert result.returncode != 0 and f"import it as tessera.{name}" in result.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel ``pip install .`` builds, made offline with the installed setuptools, from a copy of the
    sources (the build leaves build/ and *.egg-info behind, not in the checkout)."""
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for folder in set(SETUPTOOLS["package-dir"].values()):
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(source)], check=True, capture_output=True, timeout=600)
    (path,) = out.glob("tessera-*.whl")
    return path


def test_the_wheel_holds_only_tessera_and_the_shipped_pipelines(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"tessera", wheel.name.split("-")[0] + "-"
                                                      + wheel.name.split("-")[1] + ".dist-info"}
    shipped = ROOT / "models"
    for path in shipped.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            assert f"tessera/models/{path.relative_to(shipped).as_posix()}" in names


def test_a_non_editable_install_generates_from_any_directory(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=600)
    env = {**os.environ, "PYTHONPATH": str(target)}
    work = tmp_path / "elsewhere"
    work.mkdir()
    result = subprocess.run([sys.executable, "-m", "tessera", "generate", "a small red circle on the left", "-o",
                             "out.png", "--no_progress"], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (work / "out.png").is_file()
    where = subprocess.run([sys.executable, "-c", "import tessera.models as m; print(m.shipped_pipeline())"],
                           cwd=work, env=env, capture_output=True, text=True, check=True).stdout
    assert Path(where.strip()).is_relative_to(target)
    assert subprocess.run([sys.executable, "-c", "import tokenizer"], cwd=work, env=env,
                          capture_output=True).returncode != 0


def test_shipped_names_resolve_wherever_a_folder_goes(tmp_path, monkeypatch):
    from tessera.models import SHIPPED_PIPELINES, resolve_pipeline_folder, shipped_pipeline

    assert "tessera-shapes" in SHIPPED_PIPELINES
    monkeypatch.chdir(tmp_path)
    assert resolve_pipeline_folder("tessera-shapes") == ROOT / "models" / "tessera-shapes"
    (tmp_path / "tessera-shapes").mkdir()  # a folder of that name in the working directory comes first
    assert resolve_pipeline_folder("tessera-shapes") == Path("tessera-shapes")
    assert resolve_pipeline_folder("runs/none") == Path("runs/none")  # not shipped: left to the loader's error
    with pytest.raises(FileNotFoundError, match="ships no pipeline named 'nope'.*tessera-shapes"):
        shipped_pipeline("nope")
