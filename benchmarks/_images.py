"""JPEG images for the image workload.

Real photographs come from the sample images bundled in the scikit-image
wheel. They are read straight from the package's data folder with Pillow, so
scikit-image itself (and its dependencies) is never imported. Without it, the
images are smooth random noise, encoded the same way.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

TARGET_BYTES = 16 * 1024
MIN_SIDE = 160
MAX_SIDE = 224

# Photographs with enough detail to reach the target size; flat scientific
# images (retina, cells) would all come out a few kilobytes small.
_PHOTOS = (
    "astronaut.png",
    "coffee.png",
    "chelsea.png",
    "rocket.jpg",
    "hubble_deep_field.jpg",
    "ihc.png",
    "camera.png",
    "moon.png",
    "brick.png",
    "grass.png",
    "gravel.png",
    "coins.png",
    "motorcycle_left.png",
    "motorcycle_right.png",
)


def _skimage_data_dir() -> Path | None:
    spec = importlib.util.find_spec("skimage")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "data"
    return folder if folder.is_dir() else None


def ensure_skimage(timeout: float = 300.0) -> bool:
    """Install scikit-image with pip if it is missing; ignore failures.

    Parameters
    ----------
    timeout : float
        Upper bound in seconds for the ``pip install`` call.

    Returns
    -------
    bool
        Whether the bundled sample images can be found afterwards.
    """
    if _skimage_data_dir() is not None:
        return True
    try:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "scikit-image"],
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    importlib.invalidate_caches()  # let find_spec see the new package
    return _skimage_data_dir() is not None


def load_photos() -> list[Image.Image]:
    """Return the bundled photographs as RGB images (empty list if none).

    Returns
    -------
    list of PIL.Image.Image
        Decoded images, in the fixed order of ``_PHOTOS``; the index in this
        list is used as the class label.
    """
    folder = _skimage_data_dir()
    if folder is None:
        return []
    photos = []
    for name in _PHOTOS:
        path = folder / name
        if not path.is_file():
            continue
        with Image.open(path) as image:
            rgb = image.convert("RGB")
        if min(rgb.size) >= MAX_SIDE:
            photos.append(rgb)
    return photos


def noise_image(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Make a smooth random colour image with some fine grain.

    A few coarse random colours are upscaled into soft blobs, then per-pixel
    grain is added so that JPEG sizes land in the range of real photographs.
    """
    coarse = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
    blobs = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC))
    grain = rng.normal(0.0, 18.0, size=(height, width, 3))
    pixels = np.clip(blobs + grain, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def random_crop(rng: np.random.Generator, photo: Image.Image) -> Image.Image:
    """Cut a random rectangle from ``photo``, zoomed out by a random factor.

    The output is ``MIN_SIDE``..``MAX_SIDE`` pixels on each side. Zooming
    (taking a larger region and shrinking it) varies the level of detail
    more than plain crops of a few source images would.
    """
    width = int(rng.integers(MIN_SIDE, MAX_SIDE + 1))
    height = int(rng.integers(MIN_SIDE, MAX_SIDE + 1))
    max_zoom = min(photo.width / width, photo.height / height, 2.5)
    zoom = float(rng.uniform(1.0, max(max_zoom, 1.0)))
    region_w, region_h = round(width * zoom), round(height * zoom)
    left = int(rng.integers(0, photo.width - region_w + 1))
    top = int(rng.integers(0, photo.height - region_h + 1))
    crop = photo.crop((left, top, left + region_w, top + region_h))
    crop = crop.resize((width, height), Image.BILINEAR, reducing_gap=2.0)
    if rng.random() < 0.5:
        crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
    return crop


def _encode(image: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def encode_jpeg(image: Image.Image, target: int = TARGET_BYTES) -> bytes:
    """JPEG-encode ``image`` at the quality whose size is nearest ``target``.

    A bisection over the quality setting (50..95) takes five encodes; above
    95 libjpeg's size grows steeply for little visual gain, so images short
    of detail simply stay smaller than the target.
    """
    low, high = 50, 95
    best = _encode(image, 75)
    while low <= high:
        quality = (low + high) // 2
        data = _encode(image, quality)
        if abs(len(data) - target) < abs(len(best) - target):
            best = data
        if len(data) < target:
            low = quality + 1
        else:
            high = quality - 1
    return best
