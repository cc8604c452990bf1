"""Does a pipeline draw the emoji it is asked for? Recognisability and FD / KID on the emoji data.

The data is ``python -m benchmarks.emoji build DIR`` (``DIR/train``, ``DIR/test``). Every real image of both
splits is a **gallery** entry labelled with its name (its ``text``: the CLDR name; the two art styles of an
emoji share it). A prompt naming emoji ``e`` gets one seeded image; it is **recognised at k** when ``e`` is
among the k names nearest to the image, a name's distance being that of its nearest gallery image, in
EfficientNet-Lite0 pool features (cosine). Chance is k over the number of names.

Prompt families (``--families``; one prompt per distinct name, ``--num_prompts`` names drawn with ``--seed``):

- ``training_names``: names of the training split, as they are ("red apple");
- ``held_out_phrasings``: the same names asked with the lead-ins and tails caption variation never draws
  (``HELD_OUT_PROMPT_TEMPLATES``: "a picture of a red apple", "red apple sticker");
- ``held_out_emoji``: names of the test split, whose emoji (both styles, all skin tones) training never saw;
- ``training_drawings`` (on request, not in the default set): training names of emoji that are their own base
  (``hexcode == base``), not a skin-tone, gender or hair variant of another; over half of ``training_names`` are
  such variants, near-copies of a few drawings, so this family says how well the prior draws distinct things;
- ``training_variants`` (on request): the other training names, the variants (``hexcode != base``).

FD / KID (EfficientNet-Lite0 space, ``pipelines.evaluation``): one sample per test-split row (its own caption)
against the real test images, beside the floor: as many real training images against the same test images.
"FD, training captions" draws the floor's training rows from their own captions, against the same test images:
the samples' quality alone (the floor is its ideal), without names training never saw.

    python -m benchmarks.emoji_quality runs/emoji/pipeline --data data/emoji-32 --output_dir runs/emoji-quality
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import random
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from tessera.core.io import atomic_write_text
from tessera.pipelines.call_checks import GenerationRequest
from tessera.pipelines.data.captions import HELD_OUT_PROMPT_TEMPLATES, fill_template
from tessera.pipelines.evaluation import (
    ImageSet,
    evaluate_images,
    extract_features,
    load_feature_extractor,
)
from tessera.pipelines.evaluation.metrics import IS_SPLITS
from tessera.pipelines.reranking import SampleChunk
from tessera.pipelines.text_to_image import TextToImagePipeline
from tessera.prior.config import SamplingConfig

FAMILIES = ("training_names", "held_out_phrasings", "held_out_emoji")
ALL_FAMILIES = (*FAMILIES, "training_drawings", "training_variants")
TOP_K = (1, 5)
Sampler = Callable[[GenerationRequest], SampleChunk]  # a request -> the codes of its chunks


def read_split(folder: Path) -> list[dict]:
    """The metadata rows of one imagefolder split, with ``path`` added."""
    rows = [json.loads(line) for line in (folder / "metadata.jsonl").read_text(encoding="utf-8").splitlines()
            if line.strip()]
    return [{**row, "path": str(folder / row["file_name"])} for row in rows]


def family_prompts(family: str, train: list[dict], test: list[dict], count: int, seed: int) -> list[tuple[str, str]]:
    """``(prompt, name)`` pairs of a family: ``count`` distinct names drawn with ``seed``."""
    rows = test if family == "held_out_emoji" else train
    if family in ("training_drawings", "training_variants"):
        own_drawing = family == "training_drawings"
        rows = [row for row in rows if (row.get("base", row.get("hexcode")) == row.get("hexcode")) == own_drawing]
    names = sorted({row["text"] for row in rows})
    rng = random.Random(f"{seed}:{family}")
    names = rng.sample(names, min(count, len(names)))
    if family == "held_out_phrasings":
        return [(fill_template(rng.choice(HELD_OUT_PROMPT_TEMPLATES), name), name) for name in names]
    return [(name, name) for name in names]


def name_ranks(features: torch.Tensor, gallery: torch.Tensor, gallery_names: list[str], wanted: list[str]) -> list[int]:
    """For each image (N, D), the rank (0 = nearest) of its wanted name among all names, by each name's nearest
    gallery image (G, D) in cosine similarity."""
    names = sorted(set(gallery_names))
    index = {name: position for position, name in enumerate(names)}
    owner = torch.tensor([index[name] for name in gallery_names])  # (G,)
    similarity = torch.nn.functional.normalize(features, dim=1) @ torch.nn.functional.normalize(gallery, dim=1).T
    per_name = torch.full((len(features), len(names)), -2.0).scatter_reduce(
        1, owner.expand(len(features), -1), similarity, reduce="amax")  # (N, names): nearest image of each name
    target = per_name[torch.arange(len(features)), torch.tensor([index[name] for name in wanted])]  # (N,)
    return (per_name > target[:, None]).sum(dim=1).tolist()


def generate(pipe: TextToImagePipeline, prompts: list[str], seed: int, batch_size: int,
             sampler: Sampler | None = None, options: dict | None = None) -> ImageSet:
    """One seeded image per prompt, as PIL images (what a user saves); ``options``: the pipeline call's
    sampling arguments (``guidance_scale``, ``num_candidates``, ...); ``sampler`` (a request -> its
    ``sample_chunk``) draws the codes instead of the pipeline's prior."""
    generator = torch.Generator(device=pipe.device).manual_seed(seed)
    request = pipe.request(prompts, generator=generator, batch_size=batch_size, **(options or {}))
    images = pipe.generate(request, sampler(request) if sampler is not None else None).images
    return ImageSet("samples", images, [f"{index:05d}: {prompt}" for index, prompt in enumerate(prompts)])


def split_images(rows: list[dict], where: str) -> ImageSet:
    return ImageSet(where, [row["path"] for row in rows], [row["file_name"] for row in rows])


class EmojiJudge:
    """The gallery (every real image's features), the test split and the floor, computed once; ``judge``
    measures one pipeline (or one sampler through a pipeline's text encoder and VQ-GAN)."""

    def __init__(self, data: Path, *, seed: int = 0, cache_dir: Path | None = None):
        """``cache_dir``: keep the gallery's features and the test split's statistics there (reused when the
        gallery's files are the same); default: a temporary folder, for this judge only."""
        self.data, self.seed = data, seed
        self.train, self.test = read_split(data / "train"), read_split(data / "test")
        self.extractor = load_feature_extractor("efficientnet-lite0")
        self._temporary = tempfile.TemporaryDirectory() if cache_dir is None else None
        self.cache_dir = Path(self._temporary.name if cache_dir is None else cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        gallery_rows = self.train + self.test
        self.gallery = self.gallery_features(gallery_rows)  # (G, D)
        self.gallery_names = [row["text"] for row in gallery_rows]
        self.num_names = len(set(self.gallery_names))
        self.reference = split_images(self.test, "test")
        test_files = hashlib.sha256(json.dumps([row["path"] for row in self.test]).encode()).hexdigest()[:16]
        self.reference_stats = self.cache_dir / f"test-{test_files}-efficientnet-lite0.safetensors"
        self.is_splits = min(IS_SPLITS, len(self.test))  # the IS-like score's splits (fewer for a tiny test split)
        self.floor_rows = random.Random(seed).sample(self.train, min(len(self.train), len(self.test)))
        self.floor = self.fd(split_images(self.floor_rows, "train"))

    def gallery_features(self, rows: list[dict]) -> torch.Tensor:
        path = self.cache_dir / "gallery-efficientnet-lite0.safetensors"
        files = json.dumps([row["path"] for row in rows])
        if path.is_file():
            with safe_open(str(path), "pt") as cached:
                if (cached.metadata() or {}).get("files") == files:
                    return cached.get_tensor("pool")
        pool = extract_features(self.extractor, split_images(rows, "gallery"), total=len(rows), desc="gallery").pool
        save_file({"pool": pool.contiguous()}, str(path), metadata={"files": files})
        return pool

    def fd(self, images: ImageSet) -> dict:
        return evaluate_images(images, self.reference, extractor=self.extractor, is_splits=self.is_splits,
                               reference_stats=self.reference_stats).to_dict()

    def judge(self, pipe: TextToImagePipeline, *, families: tuple[str, ...] = FAMILIES, num_prompts: int = 200,
              batch_size: int = 64, sampler: Sampler | None = None, options: dict | None = None) -> dict:
        pipe.set_progress_bar_config(disable=True)
        results: dict = {"data": str(self.data), "seed": self.seed, "num_names": self.num_names,
                         "options": dict(options or {}), "families": {}}
        for family in families:
            pairs = family_prompts(family, self.train, self.test, num_prompts, self.seed)
            images = generate(pipe, [prompt for prompt, _ in pairs], self.seed, batch_size, sampler, options)
            features = extract_features(self.extractor, images, total=len(images), desc=family).pool  # (P, D)
            ranks = name_ranks(features, self.gallery, self.gallery_names, [name for _, name in pairs])
            results["families"][family] = {
                **{f"top{k}": sum(rank < k for rank in ranks) / len(ranks) for k in TOP_K},
                **{f"chance_top{k}": k / self.num_names for k in TOP_K},
                "num_prompts": len(pairs), "examples": [prompt for prompt, _ in pairs[:5]]}
        samples = generate(pipe, [row["text"] for row in self.test], self.seed, batch_size, sampler, options)
        results["fd_samples_vs_test"] = self.fd(samples)
        # the floor's training rows drawn from their own captions: sample quality alone, without unseen names
        seen = generate(pipe, [row["text"] for row in self.floor_rows], self.seed, batch_size, sampler, options)
        results["fd_seen_samples_vs_test"] = self.fd(seen)
        results["fd_train_vs_test"] = self.floor
        return results


def evaluate_pipeline(pipeline: str | Path, data: Path, *, families: tuple[str, ...] = FAMILIES,
                      num_prompts: int = 200, seed: int = 0, batch_size: int = 64, settings: list[dict] | None = None,
                      output_dir: Path | None = None, cache_dir: Path | None = None) -> dict:
    """The figures above for a saved pipeline (a folder or a shipped name), once per entry of ``settings``
    (sampling arguments of the pipeline call; default: its own defaults), the gallery and floor computed once."""
    judge = EmojiJudge(data, seed=seed, cache_dir=cache_dir)
    pipe = TextToImagePipeline.from_pretrained(pipeline)
    results = {"pipeline": str(pipeline), "runs": [judge.judge(pipe, families=families, num_prompts=num_prompts,
                                                               batch_size=batch_size, options=options)
                                                   for options in (settings or [{}])]}
    if output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(output_dir / "emoji_quality.json", json.dumps(results, indent=2) + "\n")
    return results


CALL_SETTINGS = (*(field.name for field in dataclasses.fields(SamplingConfig)), "num_candidates")


def sampling_setting(text: str) -> dict:
    """``"guidance_scale=3,num_candidates=4"`` -> the pipeline call's arguments (values parse as JSON, else stay
    strings: ``guidance_schedule=linear``; the call checks them); ``"defaults"`` -> ``{}``."""
    if text in ("", "defaults"):
        return {}
    setting = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        if name not in CALL_SETTINGS or not value:
            raise argparse.ArgumentTypeError(f"{item!r}: expected NAME=VALUE with NAME one of {sorted(CALL_SETTINGS)}")
        try:
            setting[name] = json.loads(value)
        except json.JSONDecodeError:
            setting[name] = value
    return setting


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pipeline", help="a saved pipeline folder (or a shipped pipeline's name)")
    parser.add_argument("--data", type=Path, required=True, help="python -m benchmarks.emoji build's folder")
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=ALL_FAMILIES)
    parser.add_argument("--num_prompts", type=int, default=200)
    parser.add_argument("--runs", nargs="+", type=sampling_setting, default=[{}], metavar="SETTING",
                        help="one run per SETTING, e.g. defaults guidance_scale=3 guidance_scale=2,num_candidates=4 "
                             "(the pipeline call's arguments; 'defaults': its own)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--output_dir", type=Path, default=None)
    parser.add_argument("--cache_dir", type=Path, default=None,
                        help="keep the gallery features and test statistics here for the next run")
    args = parser.parse_args(argv)
    results = evaluate_pipeline(args.pipeline, args.data, families=tuple(args.families), num_prompts=args.num_prompts,
                                seed=args.seed, batch_size=args.batch_size, settings=args.runs,
                                output_dir=args.output_dir, cache_dir=args.cache_dir)
    print("| sampling | " + " | ".join(f"{family} top-1 / top-5" for family in args.families)
          + " | FD vs test | KID vs test | FD, training captions |")
    print("|---" * (4 + len(args.families)) + "|")
    for run in results["runs"]:
        fd = run["fd_samples_vs_test"]
        print(f"| {run['options'] or 'defaults'} | " + " | ".join(
            f"{run['families'][family]['top1']:.1%} / {run['families'][family]['top5']:.1%}"
            for family in args.families) + f" | {fd['fid']:.2f} | {fd['kid_mean']:.4f} ± {fd['kid_std']:.4f} | "
              f"{run['fd_seen_samples_vs_test']['fid']:.2f} |")
    floor, first = results["runs"][0]["fd_train_vs_test"], results["runs"][0]
    print(f"floor, real training images vs test: FD {floor['fid']:.2f}, KID {floor['kid_mean']:.4f} "
          f"({floor['features']}); chance top-1 / top-5: {first['families'][args.families[0]]['chance_top1']:.2%} / "
          f"{first['families'][args.families[0]]['chance_top5']:.2%} of {first['num_names']} names")
    return 0

if __name__ == "__main__":
    sys.exit(main())
