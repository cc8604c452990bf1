"""No component is ever dropped silently: every path that makes a pipeline from another keeps each component it
does not replace, and saving over a folder never deletes one the pipeline did not mean to remove."""

from __future__ import annotations

import shutil

import pytest
import torch

from tessera.pipelines.editing import ImageToImagePipeline, InpaintPipeline
from tessera.pipelines.image_to_text import ImageToTextPipeline
from tessera.pipelines.text_to_image import TextToImagePipeline
from tests.pipelines.tiny_pipelines import CAPTIONS, tiny_pipeline_with_captioner

# Every way of making a pipeline on another's modules. A new component in TextToImagePipeline.components is
# checked by every row without changing this list.
FROM_PIPE = {
    "TextToImagePipeline.from_pipe": TextToImagePipeline.from_pipe,
    "InpaintPipeline.from_pipe": InpaintPipeline.from_pipe,
    "ImageToImagePipeline.from_pipe": ImageToImagePipeline.from_pipe,
    "InpaintPipeline.from_pipe(ImageToImagePipeline)": lambda p: InpaintPipeline.from_pipe(ImageToImagePipeline.from_pipe(p)),
    "TextToImagePipeline.from_pipe(InpaintPipeline)": lambda p: TextToImagePipeline.from_pipe(InpaintPipeline.from_pipe(p)),
}


@pytest.fixture(scope="module")
def pipe() -> TextToImagePipeline:
    """A tiny pipeline with every component, the optional captioner included."""
    return tiny_pipeline_with_captioner()


@pytest.fixture()
def folder(pipe, tmp_path):
    return pipe.save_pretrained(tmp_path / "pipeline")


def test_the_pipeline_lists_every_constructor_component(pipe):
    assert set(pipe.components) == {"vqgan", "text", "prior", "captioner"}
    assert all(module is not None for module in pipe.components.values())


@pytest.mark.parametrize("path", sorted(FROM_PIPE))
def test_from_pipe_keeps_every_component(pipe, path):
    made = FROM_PIPE[path](pipe)
    assert set(made.components) == set(pipe.components)
    for name, module in pipe.components.items():
        assert made.components[name] is module, f"{path} dropped or replaced {name}"
    assert made.pipe.sampling == pipe.sampling if hasattr(made, "pipe") else made.sampling == pipe.sampling


def test_from_pipe_replaces_only_what_it_is_given(pipe):
    without = TextToImagePipeline.from_pipe(pipe, captioner=None)
    assert without.captioner is None and without.prior is pipe.prior
    with pytest.raises(TypeError, match="unknown components"):
        TextToImagePipeline.from_pipe(pipe, decoder=None)


def test_image_to_text_from_any_pipeline_shares_the_captioner(pipe):
    for source in (pipe, InpaintPipeline.from_pipe(pipe), ImageToImagePipeline.from_pipe(pipe)):
        captioning = ImageToTextPipeline.from_pipe(source)
        assert captioning.captioner is pipe.captioner and captioning.vqgan is pipe.vqgan
        assert captioning.text_tokenizer is pipe.text.text_tokenizer


@pytest.mark.parametrize("path", sorted(FROM_PIPE))
def test_an_editing_round_trip_saved_over_its_folder_keeps_the_captioner(folder, path):
    """The measured bug: InpaintPipeline.from_pipe(from_pretrained(folder)).save_pretrained(folder) lost captioner/."""
    FROM_PIPE[path](TextToImagePipeline.from_pretrained(folder)).save_pretrained(folder)
    assert (folder / "captioner").is_dir()
    assert TextToImagePipeline.from_pretrained(folder).captioner is not None


def test_saving_without_a_component_over_a_folder_that_has_it_is_refused(pipe, folder):
    before = sorted(path.relative_to(folder) for path in folder.rglob("*"))
    without = TextToImagePipeline.from_pipe(pipe, captioner=None)
    with pytest.raises(FileExistsError, match="captioner/.*remove_missing_components=True"):
        without.save_pretrained(folder)
    with pytest.raises(FileExistsError, match="captioner/"):
        without.save_pretrained(folder, dtype=torch.float16)
    assert sorted(path.relative_to(folder) for path in folder.rglob("*")) == before  # nothing written
    assert TextToImagePipeline.from_pretrained(folder).captioner is not None
    without.save_pretrained(folder, remove_missing_components=True)  # asked for: removed
    assert not (folder / "captioner").exists()
    assert TextToImagePipeline.from_pretrained(folder).captioner is None


def test_image_to_text_saves_a_folder_it_loads_and_never_writes_over_a_pipeline(pipe, folder, tmp_path):
    captioning = ImageToTextPipeline.from_pipe(pipe)
    images = torch.rand(2, 3, 8, 8) * 2 - 1
    saved = captioning.save_pretrained(tmp_path / "captioning")
    assert sorted(path.name for path in saved.iterdir()) == ["captioner", "text_config.json", "text_tokenizer",
                                                             "vqgan"]
    loaded = ImageToTextPipeline.from_pretrained(saved)
    assert loaded(images).captions == captioning(images).captions
    torch.testing.assert_close(loaded.score(images, CAPTIONS[0]), captioning.score(images, CAPTIONS[0]))
    shutil.copytree(folder, tmp_path / "copy")
    before = {path: path.stat().st_mtime_ns for path in (tmp_path / "copy").rglob("*")}
    with pytest.raises(FileExistsError, match="text-to-image pipeline"):
        captioning.save_pretrained(tmp_path / "copy")
    assert {path: path.stat().st_mtime_ns for path in (tmp_path / "copy").rglob("*")} == before


def test_image_to_text_restores_module_modes_after_a_call(pipe):
    captioning = ImageToTextPipeline.from_pipe(pipe)
    pipe.captioner.train()
    pipe.vqgan.train()
    try:
        captioning(torch.zeros(1, 3, 8, 8))
        captioning.score(torch.zeros(1, 3, 8, 8), CAPTIONS[0])
        assert pipe.captioner.training and pipe.vqgan.training
    finally:
        pipe.captioner.eval()
        pipe.vqgan.eval()
