"""The ``tessera`` command line: the parser of every subcommand and the handlers of those that draw
(generate, caption, inpaint, outpaint, edit, denoise); ``tools`` has the others. Usage: the package docstring."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

from tessera.models import DEFAULT_PIPELINE, SHIPPED_PIPELINES, resolve_pipeline_folder
from tessera.pipelines.cli.tools import (
    add_convert_parsers,
    add_evaluate_images_parser,
    convert,
    evaluate_image_sets,
    export,
)

DTYPES = ("auto", "float32", "bfloat16", "float16")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")  # -o with one of these is one image file


def seed_value(text: str) -> int:
    """``--seed``: an integer a ``torch.Generator`` takes, 0 .. 2**64 - 1."""
    seed = int(text)
    if not 0 <= seed < 2 ** 64:
        raise argparse.ArgumentTypeError(f"{text} is outside 0 .. 2**64 - 1 (18446744073709551615)")
    return seed


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The pipeline, seed, sampling and device flags every command shares."""
    parser.add_argument("--pipeline", type=resolve_pipeline_folder, default=DEFAULT_PIPELINE,
                        help=f"a saved pipeline folder, or the name of a shipped one ({', '.join(SHIPPED_PIPELINES)}; "
                             f"default: {DEFAULT_PIPELINE})")
    parser.add_argument("--seed", type=seed_value, default=0)
    parser.add_argument("--negative_prompt", default=None, help="one negative prompt for every prompt")
    sampling = parser.add_argument_group("sampling (default: the pipeline's pipeline.json)")
    sampling.add_argument("--guidance_scale", type=float, default=None)
    sampling.add_argument("--temperature", type=float, default=None)
    sampling.add_argument("--top_k", type=int, default=None, help="0 turns top-k off")
    sampling.add_argument("--top_p", type=float, default=None, help="1 turns top-p off")
    sampling.add_argument("--num_steps", type=int, default=None, help="masked prior only")
    sampling.add_argument("--guidance_schedule", default=None, choices=["constant", "linear", "cosine"],
                          help="the guidance scale through decoding: constant, or from 1 up to --guidance_scale")
    sampling.add_argument("--choice_temperature", type=float, default=None,
                          help="masked prior only: noise on which codes are revealed first (0: by confidence)")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:N")
    parser.add_argument("--dtype", choices=DTYPES, default="auto",
                        help="auto: bfloat16 on a GPU that supports it, else float32")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    parser.add_argument("--allow_vqgan_mismatch", action="store_true",
                        help="load a pipeline whose vqgan/ is not the VQ-GAN its prior was trained with")


def add_edit_command(commands, name: str, help: str, *, mask: bool = False, prompt: bool = True):
    """An editing command: IMAGE [MASK] PROMPT -o OUT.png and the common flags."""
    command = commands.add_parser(name, help=help, description=help + " The result has the input's size.")
    command.add_argument("image", type=Path, metavar="IMAGE")
    if mask:
        command.add_argument("mask", type=Path, metavar="MASK", help="white = regenerate, black = keep")
    if prompt:
        command.add_argument("prompt", metavar="PROMPT")
    command.add_argument("-o", "--output", type=Path, required=True, help="the output .png")
    add_common_arguments(command)
    return command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tessera", description="Tessera text-to-image toolkit.")
    commands = parser.add_subparsers(dest="command", required=True)
    generate = commands.add_parser(
        "generate", help="generate images from prompts with a saved pipeline",
        description="Generate images from prompts. -o ending in an image suffix (.png, .jpg, ...): one image (or "
                    "the --grid); otherwise a folder of NNNNN.png + metadata.jsonl.")
    generate.add_argument("prompts", nargs="*", metavar="PROMPT",
                          help='prompts; "" is unconditional (the prior\'s null context)')
    generate.add_argument("--prompts_file", type=Path, default=None,
                          help="also read prompts from this file, one a line (blank lines are skipped)")
    generate.add_argument("-o", "--output", type=Path, required=True,
                          help="an image file (.png, .jpg, .jpeg, .webp, .bmp: one image, or the grid) or a folder")
    generate.add_argument("--overwrite", action="store_true",
                          help="write into a folder that holds something else (an imagefolder, a dataset, a "
                               "pipeline, other files of the names written)")
    generate.add_argument("--num_images_per_prompt", type=int, default=1)
    generate.add_argument("--grid", action="store_true",
                          help="write one grid image instead of single images: a row per prompt, labelled with it")
    generate.add_argument("--batch_size", type=int, default=64, help="images generated at once")
    generate.add_argument("--num_candidates", type=int, default=1,
                          help="draw N candidates per image and keep the one the pipeline's captioner scores best")
    add_common_arguments(generate)
    add_caption_parser(commands)

    inpaint = add_edit_command(commands, "inpaint", "Regenerate the masked part of an image from a prompt.",
                               mask=True)
    inpaint.add_argument("--cell_threshold", type=float, default=None,
                         help="share of a code cell's pixels that must be masked for it to be regenerated")
    inpaint.add_argument("--dilation", type=int, default=None, help="grow the regenerated cells by this many")
    inpaint.add_argument("--feather_radius", type=float, default=0.0, help="blend the seam over this many pixels")
    outpaint = add_edit_command(commands, "outpaint", "Grow an image's canvas and generate the new area.")
    for side in ("left", "right", "top", "bottom"):
        outpaint.add_argument(f"--{side}", type=int, default=0, help=f"pixels added on the {side}")
    edit = add_edit_command(commands, "edit", "Image-to-image: regenerate a share of an image's codes.")
    edit.add_argument("--strength", type=float, default=0.6, help="share of the codes regenerated (0..1)")
    edit.add_argument("--remask", choices=("likelihood", "random"), default="likelihood",
                      help="which codes: the least likely for the prompt, or random ones")
    denoise = add_edit_command(commands, "denoise", "Regenerate the codes the prior finds unlikely.", prompt=False)
    denoise.add_argument("--prompt", default=None, help="what the image shows (default: unconditional)")
    add_convert_parsers(commands)
    add_evaluate_images_parser(commands)
    return parser


def add_caption_parser(commands) -> None:
    caption = commands.add_parser(
        "caption", help="caption images with a saved pipeline's captioner",
        description="Print one line per caption: the image path, a tab, the caption (num_return_sequences lines "
                    "per image). With --score, the log-likelihood per token of the given caption for each image.")
    caption.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    caption.add_argument("--pipeline", type=resolve_pipeline_folder, default=DEFAULT_PIPELINE,
                         help=f"a folder with a captioner/ component, or a shipped pipeline's name (default: "
                              f"{DEFAULT_PIPELINE})")
    caption.add_argument("--score", default=None, metavar="CAPTION", help="score this caption instead of captioning")
    caption.add_argument("--num_beams", type=int, default=1)
    caption.add_argument("--num_return_sequences", type=int, default=1)
    caption.add_argument("--do_sample", action="store_true")
    caption.add_argument("--temperature", type=float, default=1.0)
    caption.add_argument("--top_k", type=int, default=None)
    caption.add_argument("--top_p", type=float, default=None)
    caption.add_argument("--max_new_tokens", type=int, default=None)
    caption.add_argument("--guidance_scale", type=float, default=None,
                         help="image guidance (1 = none; default: the captioner's own setting)")
    caption.add_argument("--seed", type=seed_value, default=0)
    caption.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:N")
    caption.add_argument("--dtype", choices=DTYPES, default="auto",
                         help="auto: bfloat16 on a GPU that supports it, else float32")
    caption.add_argument("--no_progress", action="store_true", help="no progress bar")


def caption(args: argparse.Namespace) -> int:
    import torch

    from tessera.pipelines.image_to_text import ImageToTextPipeline

    device, dtype = resolve_device(args.device, args.dtype)
    pipe = load_pipeline(args.pipeline, device, dtype, quiet=args.no_progress, cls=ImageToTextPipeline)
    images = [str(path) for path in args.images]
    if args.score is not None:
        for path, score in zip(images, pipe.score(images, args.score).tolist()):
            print(f"{path}\t{score:.4f}")
        return 0
    output = pipe(images, num_beams=args.num_beams, num_return_sequences=args.num_return_sequences,
                  do_sample=args.do_sample, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                  max_new_tokens=args.max_new_tokens, guidance_scale=args.guidance_scale, generator=torch.Generator(device=device).manual_seed(args.seed))
    per_image = args.num_return_sequences
    for index, text in enumerate(output.captions):
        print(f"{images[index // per_image]}\t{text}")
    return 0


def read_prompts(args: argparse.Namespace) -> list[str]:
    prompts = list(args.prompts)
    if args.prompts_file is not None:
        prompts += [line for line in read_prompts_file(args.prompts_file).splitlines() if line.strip()]
    if not prompts:
        raise ValueError("no prompts: pass PROMPT arguments or --prompts_file")
    return prompts


def read_prompts_file(path: Path) -> str:
    """The text of ``--prompts_file``, or a clear error naming it (missing, a folder, not UTF-8: the line)."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ValueError(f"--prompts_file {path}: cannot read it ({error.strerror or error}); give a text file "
                         "with one prompt a line") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise ValueError(f"--prompts_file {path}: line {line} is not UTF-8 text (byte 0x{data[error.start]:02x}); "
                         "save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)") from None


def resolve_device(name: str, dtype_name: str):
    import torch

    try:
        device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {name!r} is not a device this command runs on: use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name} was asked for, but torch sees no CUDA device")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: torch sees {torch.cuda.device_count()} CUDA devices (cuda:0 ...)")
    if dtype_name == "auto":
        dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    else:
        dtype = getattr(torch, dtype_name)
    return device, dtype


def save_png(image, path: Path) -> None:
    """Write a PIL image to ``path`` (in the format its suffix names) through a temporary file beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    image.save(tmp)
    os.replace(tmp, path)


def check_output_location(path: Path) -> None:
    """Before any work: ``path``'s nearest existing ancestor must be a folder (``-o notes.txt/out.png`` cannot
    be written)."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"-o {path}: {parent} is a file, not a folder, so nothing can be written below it")
            return


def check_edit_output(path: Path, inputs: dict[str, Path | None]) -> None:
    """Before any work: ``path`` can be written as one image and is none of the command's input files."""
    check_output_location(path)
    if path.is_dir():
        raise ValueError(f"-o {path} is a folder: name the output .png file")
    for name, source in inputs.items():
        if source is not None and path.exists() and source.exists() and os.path.samefile(path, source):
            raise ValueError(f"-o {path} is the input {name}: writing the result there would overwrite it; "
                             "name another file")


def check_generate_folder(folder: Path, count: int, grid: bool, overwrite: bool) -> None:
    """``FolderInUseError`` before any work when ``folder`` holds something the images would overwrite: another
    kind of folder (an imagefolder's metadata.jsonl, a dataset, a pipeline), or files of the names written,
    unless it is an earlier ``tessera generate`` output (it has a ``generation.json``) or ``overwrite``."""
    from tessera.core.folders import folder_kind, refuse_to_overwrite

    if folder.exists() and not folder.is_dir():
        raise ValueError(f"-o {folder} is a file: give a folder, or a path ending in an image suffix "
                         f"({', '.join(IMAGE_SUFFIXES)}) for one image")
    if overwrite or not folder.is_dir() or (folder / "generation.json").is_file():
        return
    kind = folder_kind(folder)
    names = ["grid.png"] if grid else [f"{index:05d}.png" for index in range(count)]
    taken = [name for name in names if (folder / name).exists()]
    if kind is not None or taken:
        holds = kind or f"files this would overwrite ({', '.join(taken[:3])}{', ...' if len(taken) > 3 else ''})"
        refuse_to_overwrite(folder, holds, what="the generated images and metadata.jsonl", override="--overwrite")


def load_pipeline(directory: Path, device, dtype, *, quiet: bool, cls=None, allow_vqgan_mismatch: bool = False):
    """``cls.from_pretrained`` (default ``TextToImagePipeline``); ``quiet`` also hides transformers'
    "Loading weights" bar and the pipeline's progress bar."""
    from tessera.pipelines.text_to_image import TextToImagePipeline
    from tessera.prior.text_sources import quiet_transformers_bars

    directory = resolve_pipeline_folder(directory)
    if not directory.exists():
        raise FileNotFoundError(f"no pipeline at {directory}; pass --pipeline DIR (a folder written by "
                                "TextToImagePipeline.save_pretrained, or a shipped pipeline's name: "
                                f"{', '.join(SHIPPED_PIPELINES)}), or train one with "
                                "`python train.py prior --tokens ... --vqgan ... --output_dir DIR`.")
    with quiet_transformers_bars() if quiet else contextlib.nullcontext():
        options = {"allow_vqgan_mismatch": True} if allow_vqgan_mismatch else {}
        pipe = (cls or TextToImagePipeline).from_pretrained(directory, device=device, dtype=dtype, **options)
    if quiet:
        pipe.set_progress_bar_config(disable=True)
    return pipe


def sampling_arguments(args: argparse.Namespace) -> dict:
    return dict(guidance_scale=args.guidance_scale, temperature=args.temperature, top_k=args.top_k,
                top_p=args.top_p, num_steps=args.num_steps, guidance_schedule=args.guidance_schedule,
                choice_temperature=args.choice_temperature)


def generate(args: argparse.Namespace) -> int:
    from PIL import Image

    prompts = read_prompts(args)
    count = len(prompts) * args.num_images_per_prompt
    single_file = args.output.suffix.lower() in IMAGE_SUFFIXES
    if single_file and args.grid and args.output.suffix.lower() != ".png":
        raise ValueError(f"-o {args.output}: a --grid is written as a .png file")
    if not single_file and args.output.suffix.lower() in Image.registered_extensions():  # e.g. out.gif
        raise ValueError(f"-o {args.output}: write one image as {', '.join(IMAGE_SUFFIXES)}, or give a folder")
    if single_file and count > 1 and not args.grid:
        raise ValueError(f"{count} images do not fit in one file {args.output}: pass a folder as -o "
                         "(NNNNN.png + metadata.jsonl), or --grid")
    check_output_location(args.output)
    if single_file and args.output.is_dir():
        raise ValueError(f"-o {args.output} is a folder: give a path without an image suffix to write into a "
                         "folder, or another file name")
    if not single_file:
        check_generate_folder(args.output, count, args.grid, args.overwrite)
    pipeline_dir = args.pipeline

    import torch

    from tessera.core.io import atomic_write_text, save_image_grid
    from tessera.core.version import tessera_version

    device, dtype = resolve_device(args.device, args.dtype)
    pipe = load_pipeline(pipeline_dir, device, dtype, quiet=args.no_progress,
                         allow_vqgan_mismatch=args.allow_vqgan_mismatch)
    given = sampling_arguments(args)
    options = pipe.sampling_options(**given).sample_kwargs(pipe.prior.config.kind)  # for generation.json
    generator = torch.Generator(device=device).manual_seed(args.seed)
    output = pipe(prompts, negative_prompt=args.negative_prompt, num_images_per_prompt=args.num_images_per_prompt,
                  generator=generator, output_type="pt" if args.grid else "pil", batch_size=args.batch_size,
                  num_candidates=args.num_candidates, **given)

    folder = args.output.parent if single_file else args.output
    if args.grid:
        path = args.output if single_file else folder / "grid.png"
        # one row per prompt, labelled with it: (N, 3, H, W) in [-1, 1], prompt-major
        save_image_grid(output.images, path, nrow=args.num_images_per_prompt, row_labels=list(prompts))
        print(f"wrote {path} ({count} images, {len(prompts)} prompts)")
    elif single_file:
        save_png(output.images[0], args.output)
        print(f"wrote {args.output}")
    else:
        rows = []
        for index, (image, text) in enumerate(zip(output.images, output.prompts)):
            name = f"{index:05d}.png"
            save_png(image, folder / name)
            rows.append(json.dumps({"file_name": name, "text": text}, ensure_ascii=False))
            print(f"wrote {folder / name}")
        atomic_write_text(folder / "metadata.jsonl", "\n".join(rows) + "\n")
        print(f"wrote {folder / 'metadata.jsonl'}")
    if not single_file:
        settings = {"pipeline": str(pipeline_dir), "prompts": prompts, "negative_prompt": args.negative_prompt,
                    "num_images_per_prompt": args.num_images_per_prompt, "seed": args.seed,
                    "batch_size": args.batch_size, "num_candidates": args.num_candidates, "device": str(device), "dtype": str(dtype).replace("torch.", ""),
                    "sampling": options, "tessera_version": tessera_version()}
        atomic_write_text(folder / "generation.json", json.dumps(settings, indent=2, ensure_ascii=False) + "\n")
    return 0


def edit(args: argparse.Namespace) -> int:
    """inpaint, outpaint, edit, denoise: one image in, one image (at its size) out."""
    import torch

    from tessera.pipelines.data.image_inputs import read_image
    from tessera.pipelines.editing import ImageToImagePipeline, InpaintPipeline

    if args.output.suffix.lower() != ".png":
        raise ValueError(f"-o must name a .png file, got {args.output}")
    check_edit_output(args.output, {"IMAGE": args.image, "MASK": getattr(args, "mask", None)})
    image = read_image(args.image)  # as caption reads images: the pixel limit from the header, clear errors
    mask = read_image(args.mask, name="mask") if args.command == "inpaint" else None
    device, dtype = resolve_device(args.device, args.dtype)
    cls = InpaintPipeline if args.command in ("inpaint", "outpaint") else ImageToImagePipeline
    pipe = load_pipeline(args.pipeline, device, dtype, quiet=args.no_progress, cls=cls,
                         allow_vqgan_mismatch=args.allow_vqgan_mismatch)
    options = dict(negative_prompt=args.negative_prompt, generator=torch.Generator(device=device).manual_seed(args.seed),
                   **sampling_arguments(args))
    if args.command == "inpaint":
        tuning = {name: getattr(args, name) for name in ("cell_threshold", "dilation") if getattr(args, name) is not None}
        output = pipe(args.prompt, image, mask, feather_radius=args.feather_radius, **tuning, **options)
    elif args.command == "outpaint":
        output = pipe.outpaint(args.prompt, image, left=args.left, right=args.right, top=args.top,
                               bottom=args.bottom, **options)
    elif args.command == "edit":
        output = pipe(args.prompt, image, strength=args.strength, remask=args.remask, **options)
    else:
        output = pipe.denoise(image, args.prompt, **options)
    save_png(output.images[0], args.output)
    print(f"wrote {args.output} ({int(output.regenerated.sum())} of {output.regenerated[0].numel()} codes "
          f"regenerated)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "generate":
            return generate(args)
        if args.command == "convert":
            return convert(args)
        if args.command == "export":
            return export(args)
        if args.command == "caption":
            return caption(args)
        if args.command == "evaluate-images":
            return evaluate_image_sets(args)
        return edit(args)
    except (OSError, ValueError) as error:  # files and folders; CheckpointMismatchError is a ValueError
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 1

