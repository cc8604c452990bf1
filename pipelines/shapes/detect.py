"""Find the shapes in an image: foreground mask, connected components, and their attributes.

The steps, each made to survive what a VQ-GAN does to a picture (noise, blur, shifted colours,
specks):

1. A pixel is foreground when some palette colour is nearer to it than the background is (for a
   shape edge: when it is more than about half covered).
2. Foreground pixels are grouped into 8-connected components; components smaller than
   ``MIN_AREA`` of the image are specks and are dropped.
3. Each component gets
   - a colour: the palette colour nearest to its median pixel (allowing for some darkening by
     blur); ``None`` when that is farther than ``MAX_COLOR_DISTANCE`` or when fewer than
     ``MIN_COLOR_PURITY`` of its pixels agree;
   - a shape, from moments of its soft coverage (how far each pixel is from background towards
     the component's colour). Moments of the coverage barely move under blur, unlike a
     thresholded outline, whose corners and tips erode: the skewness of the rows tells an
     apex-up triangle (about -0.57) from the symmetric circle and square (0), and the fourth
     angular harmonic ``E[x^4 - 6x^2y^2 + y^4] / E[x^2 + y^2]^2``, which an isotropic blur leaves
     unchanged, tells a square (-0.6) from a circle (0). The fill of its bounding box and its
     aspect must also fit the shape, which keeps odd blobs from passing as shapes;
   - a size, from the larger side of its bounding box;
   - a centre: that of its bounding box.

An attribute that fits no class is ``None``, and ``None`` never equals what a spec asks for.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from tessera.pipelines.shapes.dataset import BACKGROUND, COLORS, SIZE_FRACTION

_PALETTE_NAMES = tuple(COLORS)
_PALETTE = np.array([COLORS[name] for name in _PALETTE_NAMES], dtype=np.float32)  # (C, 3)
_BACKGROUND = np.array(BACKGROUND, dtype=np.float32)  # (3,)

MIN_AREA = 0.01  # fraction of the image; a small triangle covers about 0.034
# Half the smallest distance between two palette colours (blue and purple: 190).
MAX_COLOR_DISTANCE = 0.5 * min(float(np.linalg.norm(a - b)) for i, a in enumerate(_PALETTE) for b in _PALETTE[:i])
MIN_COLOR_PURITY = 0.5  # share of a component's pixels whose nearest colour is the component's
MIN_COLOR_MIX = 0.6  # a component's colour may be this dark a mix of a palette colour with background
# Larger side of the bounding box, fraction of the image side: small 0.26, large 0.42.
_SIZE_SPLIT = float(np.sqrt(SIZE_FRACTION["small"] * SIZE_FRACTION["large"]))
SIZE_BOUNDS = {"small": (0.15, _SIZE_SPLIT), "large": (_SIZE_SPLIT, 0.6)}
MAX_ASPECT = 1.4  # every shape has a square bounding box
COVERAGE_FLOOR = 0.15  # coverage below this is background noise
RIM = 2  # pixels around a component whose coverage counts towards its shape (blur spills there)
TRIANGLE_SKEW = -0.25  # row skewness below this: an apex-up triangle (ideal -0.57)
MAX_SYMMETRIC_SKEW = 0.15  # |row skewness| of circles and squares (ideal 0)
MAX_COLUMN_SKEW = 0.3  # |column skewness| of every shape (ideal 0; a sideways triangle: 0.57)
SQUARE_HARMONIC = -0.3  # fourth harmonic below this: square (ideal -0.6), above: circle (ideal 0)
# Fill of the bounding box by the thresholded mask (ideal 0.5, 0.785, 1): a sanity check.
FILL_BOUNDS = {"triangle": (0.35, 0.88), "circle": (0.6, 0.95), "square": (0.75, 1.01)}


@dataclass(frozen=True)
class DetectedObject:
    """One shape found in an image. Coordinates are fractions of the image, y pointing down."""

    color: str | None
    shape: str | None
    size: str | None
    center: tuple[float, float]  # centre of the bounding box: used for position and relation
    centroid: tuple[float, float]  # mean of the pixels
    area: float  # fraction of the image
    extent: float  # larger side of the bounding box, fraction of the image side
    fill: float  # area / bounding-box area
    skew: tuple[float, float]  # skewness of the coverage along x and y
    harmonic: float  # fourth angular harmonic of the coverage

    def to_dict(self) -> dict:
        return asdict(self)


def to_uint8_image(image) -> np.ndarray:
    """An (H, W, 3) uint8 array from a PIL image, an (H, W, 3) array or a (3, H, W) tensor.

    Conventions: uint8 arrays/tensors are 0..255; float numpy arrays are in [0, 1] (like a
    diffusers ``output_type="np"``); float tensors are in [-1, 1] (like ``VQGAN.decode``).
    """
    if hasattr(image, "convert"):  # PIL
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    if hasattr(image, "detach"):  # torch tensor, (3, H, W)
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"expected a (3, H, W) tensor, got shape {tuple(image.shape)}")
        is_uint8 = str(image.dtype) == "torch.uint8"
        tensor = image.detach().cpu()
        array = (tensor if is_uint8 else tensor.float()).numpy().transpose(1, 2, 0)  # (H, W, 3)
        if is_uint8:
            return np.ascontiguousarray(array)
        return np.clip(np.round((array + 1) * 127.5), 0, 255).astype(np.uint8)
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) array, got shape {array.shape}")
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating):
        return np.clip(np.round(array * 255), 0, 255).astype(np.uint8)
    raise TypeError(f"unsupported image array dtype {array.dtype}")


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components of a boolean (H, W) mask: (labels (H, W) int32 with 0 = none, count).

    Works on horizontal runs of pixels: runs on neighbouring rows that touch (diagonals
    included) are merged with a union-find; there are few runs, so plain Python is quick.
    """
    h, w = mask.shape
    padded = np.zeros((h, w + 2), dtype=np.int8)  # (H, W + 2): a blank column on each side
    padded[:, 1:-1] = mask
    edges = np.diff(padded, axis=1)  # (H, W + 1): +1 where a run starts, -1 just after it ends
    rows, starts = np.nonzero(edges == 1)
    _, ends = np.nonzero(edges == -1)  # row-major order, so ends pair with starts
    parent = list(range(len(starts)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_of_row = np.searchsorted(rows, np.arange(h + 1))  # runs of row r: [first[r], first[r+1])
    for r in range(h - 1):
        for a in range(first_of_row[r], first_of_row[r + 1]):
            for b in range(first_of_row[r + 1], first_of_row[r + 2]):
                if starts[a] <= ends[b] and starts[b] <= ends[a]:  # [s, e) runs touching diagonally
                    parent[find(a)] = find(b)
    roots = np.array([find(i) for i in range(len(starts))], dtype=np.int64)
    _, run_label = np.unique(roots, return_inverse=True)
    labels = np.zeros((h, w), dtype=np.int32)
    for row, start, end, label in zip(rows, starts, ends, run_label):
        labels[row, start:end] = label + 1
    count = int(run_label.max()) + 1 if len(starts) else 0
    return labels, count


def _nearest_color(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest palette colour and its distance, for (..., 3) float pixels."""
    distances = np.linalg.norm(pixels[..., None, :] - _PALETTE, axis=-1)  # (..., C)
    nearest = distances.argmin(axis=-1)
    return nearest, np.take_along_axis(distances, nearest[..., None], axis=-1)[..., 0]


def _classify_color(pixels: np.ndarray, nearest: np.ndarray) -> str | None:
    """Colour of a component from its (N, 3) pixels and their nearest palette indices (N,).

    The median pixel is compared with each palette colour mixed with some background (at least
    ``MIN_COLOR_MIX`` of the colour), since blur mixes a small shape with the background around it.
    """
    median = np.median(pixels, axis=0) - _BACKGROUND  # (3,)
    directions = _PALETTE - _BACKGROUND  # (C, 3)
    mix = np.clip(directions @ median / (directions**2).sum(axis=1), MIN_COLOR_MIX, 1.0)  # (C,)
    distances = np.linalg.norm(median - mix[:, None] * directions, axis=1)  # (C,)
    index = int(distances.argmin())
    if distances[index] > MAX_COLOR_DISTANCE or np.mean(nearest == index) < MIN_COLOR_PURITY:
        return None
    return _PALETTE_NAMES[index]


def _classify(value: float, bounds: dict[str, tuple[float, float]]) -> str | None:
    return next((name for name, (low, high) in bounds.items() if low <= value < high), None)


def coverage_moments(coverage: np.ndarray) -> tuple[tuple[float, float], float]:
    """Skewness along (x, y) and fourth angular harmonic of an (h, w) coverage map."""
    h, w = coverage.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)  # (h, w) each
    weights = coverage / coverage.sum()
    x = xs - (weights * xs).sum()
    y = ys - (weights * ys).sum()
    # Clamped: a one-pixel-wide streak has no spread across it (and is no shape: see the aspect).
    var_x, var_y = max((weights * x**2).sum(), 1e-6), max((weights * y**2).sum(), 1e-6)
    skew = ((weights * x**3).sum() / var_x**1.5, (weights * y**3).sum() / var_y**1.5)
    harmonic = (weights * (x**4 - 6 * x**2 * y**2 + y**4)).sum() / (var_x + var_y) ** 2
    return (float(skew[0]), float(skew[1])), float(harmonic)


def _classify_shape(skew: tuple[float, float], harmonic: float, fill: float, aspect: float) -> str | None:
    skew_x, skew_y = skew
    if abs(skew_x) > MAX_COLUMN_SKEW or not 1 / MAX_ASPECT <= aspect <= MAX_ASPECT:
        return None
    if skew_y < TRIANGLE_SKEW:
        shape = "triangle"
    elif abs(skew_y) <= MAX_SYMMETRIC_SKEW:
        shape = "square" if harmonic < SQUARE_HARMONIC else "circle"
    else:
        return None
    low, high = FILL_BOUNDS[shape]
    return shape if low <= fill < high else None


def _coverage(pixels: np.ndarray, labels: np.ndarray, label: int, color: np.ndarray) -> np.ndarray:
    """How much of each pixel one component covers, in [0, 1]: the pixel's position between the
    background and the component's ``color`` (3,). ``pixels`` (h, w, 3) and ``labels`` (h, w) are
    a window around the component. Only the component and its two-pixel rim count: noise
    farther out, or another component, would weigh heavily on the higher moments."""
    direction = color - _BACKGROUND  # (3,)
    coverage = (pixels - _BACKGROUND) @ direction / max(float(direction @ direction), 1.0)  # (h, w)
    own = labels == label
    rim = _dilate(own, RIM) & (labels == 0)  # the blurred edge just outside the thresholded mask
    coverage[~(own | rim) | (coverage < COVERAGE_FLOOR)] = 0
    return np.clip(coverage, 0, 1)


def _dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    """A boolean (h, w) mask grown by ``steps`` pixels in all eight directions."""
    h, w = mask.shape
    for _ in range(steps):
        padded = np.pad(mask, 1)  # (h + 2, w + 2)
        mask = np.any([padded[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)], axis=0)
    return mask


def _describe(pixels: np.ndarray, nearest: np.ndarray, labels: np.ndarray, label: int) -> DetectedObject:
    """Attributes of component ``label`` from the image's (H, W, 3) pixels, their nearest palette
    indices (H, W) and the component labels (H, W)."""
    height, width = labels.shape
    ys, xs = np.nonzero(labels == label)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    box_h, box_w = y1 - y0, x1 - x0
    extent = max(box_w / width, box_h / height)
    fill = len(ys) / (box_h * box_w)
    # A window RIM pixels wider than the box on every side holds the blurred rim too.
    window = (slice(max(y0 - RIM, 0), y1 + RIM), slice(max(x0 - RIM, 0), x1 + RIM))
    own = pixels[ys, xs]  # (N, 3)
    coverage = _coverage(pixels[window], labels[window], label, np.median(own, axis=0))  # (h + 2 RIM, w + 2 RIM)
    skew, harmonic = coverage_moments(coverage)
    return DetectedObject(
        color=_classify_color(own, nearest[ys, xs]),
        shape=_classify_shape(skew, harmonic, fill, box_w / box_h),
        size=_classify(extent, SIZE_BOUNDS),
        center=(float((x0 + x1) / 2 / width), float((y0 + y1) / 2 / height)),
        centroid=(float((xs.mean() + 0.5) / width), float((ys.mean() + 0.5) / height)),
        area=len(ys) / (height * width),
        extent=float(extent),
        fill=float(fill),
        skew=skew,
        harmonic=harmonic,
    )


def detect_objects(image) -> list[DetectedObject]:
    """The shapes in ``image`` (see ``to_uint8_image`` for accepted types), largest first."""
    pixels = to_uint8_image(image).astype(np.float32)  # (H, W, 3)
    height, width, _ = pixels.shape
    nearest, distance = _nearest_color(pixels)  # (H, W) each
    mask = distance < np.linalg.norm(pixels - _BACKGROUND, axis=-1)  # (H, W)
    labels, count = label_components(mask)
    areas = np.bincount(labels.ravel(), minlength=count + 1)  # (count + 1,), 0 = background
    objects = [_describe(pixels, nearest, labels, label) for label in range(1, count + 1)
               if areas[label] >= MIN_AREA * height * width]
    return sorted(objects, key=lambda o: o.area, reverse=True)
