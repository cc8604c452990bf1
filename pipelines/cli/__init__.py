"""The ``tessera`` command (also ``python -m tessera``): generate and edit images with a saved pipeline;
convert other projects' VQ image tokenizers to Tessera VQ-GAN folders and export ours to diffusers.

```bash
tessera generate "a small red circle on the left" -o out.png
tessera generate "a small red circle on the left" "a large blue square above a small green triangle" \
    --num_images_per_prompt 4 --seed 0 -o samples/      # samples/00000.png ... + samples/metadata.jsonl
python -m tessera.pipelines.shapes.evaluate samples/                   # score them (pipelines trained on the shapes)
tessera generate "a red circle" "a blue square" --num_images_per_prompt 4 --grid -o grid.png
tessera generate --prompts_file prompts.txt --pipeline runs/masked -o samples/ --device cuda
tessera generate "a small red circle on the left" --num_candidates 4 -o best.png   # reranked by the captioner
```

Captioning (``pipelines.image_to_text``; a pipeline folder with a ``captioner/`` component)::

    tessera caption scene.png other.jpg                      # one "path<TAB>caption" line per image
    tessera caption scene.png --num_beams 4 --num_return_sequences 2
    tessera caption scene.png --do_sample --top_k 10 --seed 1 --num_return_sequences 3
    tessera caption scene.png --score "a small red circle on the left"   # log-likelihood per token

Where images go (``-o``):

- a path ending in an image suffix (``.png``, ``.jpg``, ``.jpeg``, ``.webp``, ``.bmp``) is one file in that
  format: the image, when there is exactly one, or the grid with ``--grid`` (one row per prompt when
  ``--num_images_per_prompt`` > 1). More than one image without ``--grid`` is an error, before any work.
- any other path is a folder: ``00000.png``, ``00001.png``, ... (prompt-major: the first prompt's images
  first), a ``metadata.jsonl`` with one ``{"file_name", "text"}`` line per image (the imagefolder layout that
  ``python -m tessera.pipelines.shapes.evaluate`` and ``datasets`` read) and a ``generation.json`` with the settings used;
  with ``--grid``, ``grid.png`` instead of the single images. An earlier ``tessera generate`` folder (it has a
  ``generation.json``) is written over; a folder holding anything else the images would overwrite (an
  imagefolder's ``metadata.jsonl``, a dataset, a pipeline, files of the same names) is refused before any work
  unless ``--overwrite``. A path below a file (``notes.txt/out.png``) is refused before any work too.

Editing (``pipelines.editing``; one image in, one ``.png`` out at the input's size; the sampling flags are
``generate``'s)::

    tessera inpaint IMAGE MASK "a small green square on the left" -o out.png    # MASK: white = regenerate
    tessera outpaint IMAGE "a red circle to the left of a blue square" --left 16 -o out.png
    tessera edit IMAGE "a small blue circle on the left" --strength 0.6 -o out.png
    tessera denoise IMAGE -o out.png [--prompt "a small red circle on the left"]

The same ``--seed``, prompts, settings and ``--batch_size`` give the same images (on the CPU, also across
processes); images made on a GPU differ from those made on the CPU.

Image quality (``pipelines.evaluation``; README "Image quality: FD, KID, IS"; one JSON line)::

    tessera evaluate-images samples/ --reference heldout/                       # EfficientNet-Lite0 FD, offline
    tessera evaluate-images samples/ --reference heldout/ --features inception \
        --inception_weights pt_inception-2015-12-05-6726825d.pth --reference_stats heldout-inception.safetensors

Bring your own VQ image tokenizer (see ``tokenizer/convert``; README "Bring your own VQ tokenizer"):

```bash
tessera convert --from taming logs/vqgan_imagenet_f16_16384/checkpoints/last.ckpt -o runs/taming-f16
tessera convert --from llamagen vq_ds16_c2i.pt -o runs/llamagen-vq16 --resolution 256
tessera convert --from diffusers path/to/amused-256 -o runs/amused-vq     # a VQModel folder or a pipeline's
tessera export --to diffusers runs/vqgan -o runs/vqgan-diffusers          # diffusers.VQModel.from_pretrained
```
"""

from tessera.pipelines.cli.command import build_parser, main

__all__ = ["build_parser", "main"]
