"""Fixtures of the pipeline tests."""

from __future__ import annotations

import pytest

from tessera.pipelines.text_to_image import TextToImagePipeline
from tests.pipelines.tiny_pipelines import tiny_pipelines


@pytest.fixture(scope="module")
def pipes() -> dict[str, TextToImagePipeline]:
    """``tiny_pipelines()`` without progress bars, one set per test module."""
    pipes = tiny_pipelines()
    for pipe in pipes.values():
        pipe.set_progress_bar_config(disable=True)
    return pipes
