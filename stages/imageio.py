"""Image input: lazy, stable folder walks and robust loading of any format and mode to RGB.

Every failure to read an image becomes an ItemError with a one-line reason, so one broken
file is a failed item, never a crashed batch. Dimensions are checked from the header
before decoding, so a decompression bomb is refused without being decoded.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import ItemError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})


def iter_images(folder: Path) -> Iterator[Path]:
    """Image files under `folder`, recursively, sorted by name within each folder.

    Only one folder's names are held at a time; hidden names and temp files are skipped.
    """
    try:
        with os.scandir(folder) as scan:
            entries = sorted((e.name, e.is_dir(follow_symlinks=False)) for e in scan
                             if not e.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return
    subdirs = []
    for name, is_dir in entries:
        if is_dir:
            subdirs.append(name)
        elif os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
            yield Path(folder) / name
    del entries
    for name in subdirs:
        yield from iter_images(Path(folder) / name)


def _reason(exc: BaseException) -> str:
    text = str(exc)
    low = text.lower()
    if "truncated" in low or "premature end" in low or "broken data stream" in low:
        return "truncated image data"
    if "cannot identify image file" in low:
        return "not an image file (or a format Pillow cannot read)"
    return f"unreadable image: {type(exc).__name__}: {text}"[:200]


def _to_rgb(img):
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        import numpy as np

        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        if img.mode.startswith("I;16"):
            lo, hi = 0.0, 65535.0
        scaled = np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo) * 255.0
        return Image.fromarray(scaled.clip(0, 255).astype("uint8"), "L").convert("RGB")
    has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")   # L, 1, P, CMYK (naive inversion, no ICC), YCbCr, RGB


def load_image(path: Path, max_pixels: int):
    """The image at `path` as RGB (first frame, EXIF orientation applied, alpha on white)."""
    from PIL import Image, ImageOps

    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise ItemError(f"cannot read file: {exc.strerror or exc}") from None
    if size == 0:
        raise ItemError("empty file")
    try:
        with Image.open(path) as img:
            width, height = img.size
            if width * height > max_pixels:
                raise ItemError(f"image is {width}x{height} = {width * height / 1e6:.1f} MP, over "
                                f"interrogate.max_pixels = {max_pixels / 1e6:.1f} MP")
            img.seek(0)
            img.load()
            img = ImageOps.exif_transpose(img)
            return _to_rgb(img)
    except ItemError:
        raise
    except Image.DecompressionBombError as exc:
        raise ItemError(f"refused as a decompression bomb: {exc}"[:200]) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ItemError(_reason(exc)) from None


def downscale(img, max_side: int):
    """A copy no larger than `max_side` on its longest side (aspect ratio kept)."""
    from PIL import Image

    if max(img.size) <= max_side:
        return img
    scale = max_side / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.Resampling.LANCZOS)


def to_data_url(img, max_side: int, fmt: str = "JPEG", quality: int = 90) -> str:
    """A base64 data URL of the image, RGB and downscaled, for OpenAI-style image parts."""
    buf = io.BytesIO()
    small = downscale(img.convert("RGB"), max_side)
    small.save(buf, format=fmt, quality=quality)
    mime = "image/jpeg" if fmt.upper() == "JPEG" else f"image/{fmt.lower()}"
    return f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode("ascii")
