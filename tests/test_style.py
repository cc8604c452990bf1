"""The code base lints clean with the ruff configuration in pyproject.toml."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_check_passes():
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    result = subprocess.run([ruff, "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_sys_path_edits():
    sources = [ROOT / "train.py"] + [path for package in ("tokenizer", "prior", "pipelines", "tests", "benchmarks")
                                     for path in (ROOT / package).rglob("*.py")]
    offenders = [str(path.relative_to(ROOT)) for path in sources
                 if "sys.path." + "append" in path.read_text(encoding="utf-8")]
    assert offenders == []
