"""Fine-tuning a saved pipeline on new captions (``python train.py finetune``), callable from Python too.

    from tessera.pipelines.training.finetune import FinetuneRequest, finetune_pipeline
    finetune_pipeline(FinetuneRequest(pipeline="models/tessera-shapes", data="path/to/imagefolder"),
                      dataclasses.replace(FINETUNE_TRAINING_DEFAULTS, output_dir="runs/ft"))

The new images are tokenized with the pipeline's own VQ-GAN into ``OUTPUT_DIR/tokens``; a share of each batch
replays the original data (the source recorded in ``pipeline.json``, tokenized into ``OUTPUT_DIR/replay_tokens``)
against forgetting; the scratch text tokenizer grows by the frequent new words. Both exports resume. Then the
prior stage continues the pipeline's prior and text encoder, and writes a new pipeline folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tessera.core.config import JSONConfig
from tessera.core.folders import check_output_folder
from tessera.models import existing_pipeline_folder
from tessera.pipelines.data.worlds import world_of_captions, world_of_source
from tessera.pipelines.pipeline_folder import PipelineConfig
from tessera.pipelines.tokens import ExportConfig, export_tokenized_dataset, load_tokenized_dataset
from tessera.pipelines.training.config import TrainingConfig
from tessera.pipelines.training.prior import PriorRunConfig, train_prior
from tessera.pipelines.training.prior_options import FinetuneOptions, PriorDataOptions
from tessera.prior.config import SamplingConfig
from tessera.prior.text import TEXT_CONFIG_NAME, TextEncoderConfig

DEFAULT_NEW_TEXT_TOKENS = 512  # with the jointly trained scratch text encoder


@dataclass
class FinetuneRequest(JSONConfig):
    """What to fine-tune on (``train.py finetune`` has one flag per field)."""

    pipeline: str = ""  # a saved pipeline folder, or a shipped pipeline's name (e.g. tessera-shapes)
    data: str | None = None  # new images + captions (any data-layer source); or:
    tokens: str | None = None  # new data already tokenized with the pipeline's VQ-GAN
    image_column: str | None = None
    caption_column: str | None = None
    replay_fraction: float = 0.25  # share of each batch drawn from the original data (0: none)
    replay_data: str | None = None  # default: the source recorded in pipeline.json
    replay_tokens: str | None = None  # the original data already tokenized
    max_replay_samples: int = 5000  # rows of the replayed source to tokenize
    new_text_tokens: int | None = None  # None: 512 for a scratch text encoder, 0 for a frozen pretrained one
    validation_prompts: tuple[str, ...] = ()
    evaluation_caption_styles: tuple[str, ...] | None = None  # a world's data: default "en" + the new data's
    sampling: SamplingConfig | None = None  # validation sampling; default: the pipeline's own
    overwrite: bool = False  # write into an output folder that holds a pipeline (or a dataset, an imagefolder)

    def __post_init__(self) -> None:
        if not self.pipeline:
            raise ValueError("FinetuneRequest.pipeline (a saved pipeline folder) is required")
        if (self.data is None) == (self.tokens is None):
            raise ValueError("give exactly one of data (new images + captions) and tokens (already tokenized)")
        if self.replay_data is not None and self.replay_tokens is not None:
            raise ValueError("give at most one of replay_data (the original images + captions) and replay_tokens "
                             "(already tokenized)")


def missing_local_source(source: str) -> bool:
    """Whether ``source`` reads as a local path that does not exist: not a benchmark world's data (the built-in
    shapes), a glob or a Hub name (``owner/name``, unless ``owner/`` is a folder here, as ``pipelines.data.sources``
    reads it)."""
    if world_of_source(source) is not None or any(char in source for char in "*?["):
        return False
    path = Path(source).expanduser()
    local = source.startswith((".", "/", "~")) or len(path.parts) > 2 or (len(path.parts) == 2 and path.parent.is_dir())
    return local and not path.exists()


def evaluation_caption_styles(captions: list[str]) -> tuple[str, ...]:
    """The caption styles the benchmark world of ``captions`` judges ("en" plus the styles of the new
    captions); ("en",) when no world owns them (nothing is judged then)."""
    world = world_of_captions(captions)
    return ("en",) if world is None else tuple(world.caption_styles(captions))


def finetune_run_config(request: FinetuneRequest, training: TrainingConfig) -> PriorRunConfig:
    """Tokenize what needs tokenizing (resumable) and build the prior run's config."""
    pipeline_dir, output_dir = existing_pipeline_folder(request.pipeline), Path(training.output_dir)
    if output_dir.resolve() == pipeline_dir.resolve():
        raise ValueError("the output folder must differ from the pipeline folder: the fine-tuned pipeline is a new "
                         "folder, and the one it starts from stays as it is")
    check_output_folder(output_dir, what="the fine-tuned pipeline", override="--overwrite (overwrite=True)",
                        overwrite=request.overwrite)
    pipeline = PipelineConfig.read(pipeline_dir)
    vqgan = str(pipeline_dir / pipeline.components["vqgan"])
    replay_tokens, replay_data = request.replay_tokens, None
    if request.replay_fraction > 0 and replay_tokens is None:  # checked before any export
        replay_data = request.replay_data or pipeline.training_data
        if replay_data is None:
            raise ValueError(f"{pipeline_dir / 'pipeline.json'} does not record the data the pipeline was trained "
                             "on: pass replay_data (--replay_data) or replay_tokens, or replay_fraction 0")
        if request.replay_data is None and missing_local_source(replay_data):
            raise ValueError(f"the replayed data {replay_data!r} (the training data recorded in "
                             f"{pipeline_dir / 'pipeline.json'}) is not here: pass --replay_data with the original "
                             "images + captions (or --replay_tokens), or --replay_fraction 0 to fine-tune without "
                             "replay")
    for flag, source in (("--data", request.data), ("--replay_data", request.replay_data)):
        if source is not None and missing_local_source(source):
            raise ValueError(f"{flag} {source}: no such file or folder (read as a local path, not a Hub dataset)")
    tokens = request.tokens
    if tokens is None:
        tokens = str(output_dir / "tokens")
        export_tokenized_dataset(ExportConfig(vqgan=vqgan, data=request.data, output_dir=tokens,
                                              image_column=request.image_column,
                                              caption_column=request.caption_column))
    if replay_data is not None:
        replay_tokens = str(output_dir / "replay_tokens")
        export_tokenized_dataset(ExportConfig(vqgan=vqgan, data=replay_data, output_dir=replay_tokens,
                                              max_samples=request.max_replay_samples))
    text = TextEncoderConfig.load(pipeline_dir / TEXT_CONFIG_NAME)
    new_text_tokens = request.new_text_tokens
    if new_text_tokens is None:
        new_text_tokens = DEFAULT_NEW_TEXT_TOKENS if text.pretrained is None and text.is_trainable else 0
    styles = request.evaluation_caption_styles
    if styles is None:
        styles = evaluation_caption_styles(load_tokenized_dataset(tokens)["caption"][:200])
    return PriorRunConfig(
        data=PriorDataOptions(tokens=tokens, vqgan=vqgan, validation_prompts=tuple(request.validation_prompts),
                              evaluation_caption_styles=tuple(styles)),
        sampling=request.sampling or pipeline.sampling,
        training=training,
        finetune=FinetuneOptions(pipeline=str(pipeline_dir), replay_tokens=replay_tokens,
                                 replay_fraction=request.replay_fraction, new_text_tokens=new_text_tokens),
    )


def finetune_pipeline(request: FinetuneRequest, training: TrainingConfig) -> Path:
    """Fine-tune ``request.pipeline`` into ``training.output_dir`` (a new pipeline folder); returns it."""
    return train_prior(finetune_run_config(request, training))
