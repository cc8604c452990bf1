"""Editing with the priors: inpainting and outpainting (``InpaintPipeline``), image-to-image and denoising
(``ImageToImagePipeline``). Both load a saved pipeline folder (``from_pretrained``) or share the modules of a
loaded ``TextToImagePipeline`` (``from_pipe``) and return its output type, with the regenerated code cells.

    masks.py            pixel mask -> token mask, paste-back (the rules, documented there)
    inputs.py           input images converted, cropped and resized like training data; outpainting canvases
    base.py             EditingPipeline: shared components, the one edit loop, EditOutput
    inpaint.py          InpaintPipeline (+ outpaint)
    image_to_image.py   ImageToImagePipeline (+ denoise)
"""

from tessera.pipelines.editing.base import EditingPipeline, EditOutput
from tessera.pipelines.editing.image_to_image import ImageToImagePipeline
from tessera.pipelines.editing.inpaint import InpaintPipeline

__all__ = ["EditOutput", "EditingPipeline", "ImageToImagePipeline", "InpaintPipeline"]
