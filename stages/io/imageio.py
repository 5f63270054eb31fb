"""Image input: lazy, stable folder walks and robust loading of any format and mode to RGB.

Every failure to read an image becomes an ItemError with a one-line reason, so one broken
file is a failed item, never a crashed batch. Dimensions are checked from the header
before decoding, so an oversized image (or a decompression bomb) is refused undecoded.
"""

from __future__ import annotations

import base64
import io
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

from ..errors import ItemError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
# A folder holding this file is a captions folder (stages/io/owner.py): our output, never
# input, wherever it lies (`caption.py photos/sub` writes photos/sub-captions/, thumbnails too)
CAPTIONS_MARKER = ".tagcap-input.json"
_HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


def is_image_name(name: str) -> bool:
    """Whether a file name is one we treat as an image (by extension, any case; never hidden)."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _sorted_entries(folder: Path) -> tuple[list[tuple[str, bool]], str]:
    """(name, is_folder) for one folder, sorted, and why it could not be listed ('' when it
    could). Hidden names (our temp files too) are left out."""
    entries = []
    try:
        with os.scandir(folder) as scan:
            for entry in scan:
                if entry.name.startswith("."):
                    continue
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    is_dir = False
                entries.append((entry.name, is_dir))
    except OSError as exc:
        return [], f"cannot list folder: {exc.strerror or exc}"
    return sorted(entries), ""


def is_captions_folder(folder: Path) -> bool:
    """Whether `folder` is a captions folder (it holds CAPTIONS_MARKER)."""
    return os.path.isfile(os.path.join(folder, CAPTIONS_MARKER))


def walk_images(folder: Path) -> Iterator[tuple[Path, str]]:
    """(image path, '') for every image file under `folder`, recursively, in sorted-name order
    within each folder, and (folder path, reason) for a sub-folder that cannot be listed.
    A sub-folder that is a captions folder (`is_captions_folder`) is passed over.

    An image whose name stem it shares with another image of its folder comes with the
    reason as its problem. Depth first, so `a.jpg, b/x.jpg, c.jpg` come in that order. Only
    the names of the folders on the current path are held, never the whole tree; symlinked
    folders are not entered (no cycles).
    """
    names, problem = _sorted_entries(Path(folder))
    if problem and Path(folder).exists():
        yield Path(folder), problem
    stack = [(Path(folder), iter(names), _clashes(names))]
    while stack:
        parent, names, clashes = stack[-1]
        for name, is_dir in names:
            if is_dir:
                if is_captions_folder(parent / name):
                    continue                      # our output, not input (see CAPTIONS_MARKER)
                entries, problem = _sorted_entries(parent / name)
                if problem:
                    yield parent / name, problem
                    continue
                stack.append((parent / name, iter(entries), _clashes(entries)))
                break
            if is_image_name(name):
                others = clashes.get(Path(name).stem)
                yield parent / name, (f"several images share the name {Path(name).stem!r} "
                                      f"({', '.join(others)}): one id, one caption; rename all "
                                      "but one" if others else "")
        else:
            stack.pop()


def _clashes(entries: list[tuple[str, bool]]) -> dict[str, list[str]]:
    """Image names of one folder that share a stem (`cat.jpg`, `cat.png`): each would get
    the item id `cat`, so all of them fail instead of one silently taking the other's caption."""
    stems: dict[str, list[str]] = {}
    for name, is_dir in entries:
        if not is_dir and is_image_name(name):
            stems.setdefault(Path(name).stem, []).append(name)
    return {stem: names for stem, names in stems.items() if len(names) > 1}


def iter_images(folder: Path) -> Iterator[Path]:
    """The image files of `walk_images` (folders that cannot be listed are passed over)."""
    for path, problem in walk_images(folder):
        if not problem:
            yield path


def _mp(pixels: int) -> str:
    return f"{pixels / 1e6:.1f} MP"


def _too_big(size: tuple[int, int] | None, pixels: int, max_pixels: int) -> str:
    shape = f"{size[0]}x{size[1]} = " if size else ""
    if pixels > max_pixels:
        return f"image is {shape}{_mp(pixels)}, over interrogate.max_pixels = {_mp(max_pixels)}"
    return f"image is {shape}{_mp(pixels)}, over Pillow's decompression-bomb limit"


def _header_size(path: Path | bytes) -> tuple[int, int] | None:
    """Dimensions read by the format plugins directly, for a message when Image.open refused
    the file as a decompression bomb (its check fires before the size can be seen)."""
    from PIL import Image

    with (io.BytesIO(path) if isinstance(path, bytes) else open(path, "rb")) as fp:
        prefix = fp.read(16)
        for fmt in list(Image.ID):
            factory, accept = Image.OPEN[fmt]
            verdict = accept(prefix) if accept else True
            if not verdict or isinstance(verdict, str):
                continue
            try:
                fp.seek(0)
                return factory(fp, str(path)).size
            except Exception:
                continue
    return None


def _bomb_reason(path: Path | bytes, exc: Exception, max_pixels: int) -> str:
    found = re.search(r"\((\d+) pixels\)", str(exc))
    pixels = int(found.group(1)) if found else 0
    try:
        size = _header_size(path)
    except OSError:
        size = None
    return _too_big(size, size[0] * size[1] if size else pixels, max_pixels)


def _reason(exc: BaseException) -> str:
    """A one-line, human reason for a Pillow or OS failure."""
    text = " ".join(str(exc).split())
    low = text.lower()
    if "truncated" in low or "premature end" in low or "broken data stream" in low:
        return "truncated image data"
    if "cannot identify image file" in low:
        return "not an image file (or a format Pillow cannot read)"
    if isinstance(exc, OSError) and exc.strerror:
        return f"cannot read file: {exc.strerror}"
    return f"unreadable image: {type(exc).__name__}: {text}"[:200]


def _to_8bit(img):
    """16-bit, 32-bit integer and float greyscale as 8-bit grey, scaled rather than clipped.

    Values are read against the range the mode implies (0-65535 for 16-bit, 0-1 or 0-255 for
    float, 0-255 or 0-65535 for 32-bit when they fit it); anything else is stretched min-max.
    """
    import numpy as np
    from PIL import Image

    arr = np.asarray(img, dtype=np.float64)
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if img.mode.startswith("I;16"):
        top = 65535.0
    elif img.mode == "F" and lo >= 0 and hi <= 1:
        top = 1.0
    elif lo >= 0 and hi <= 255:
        top = 255.0
    elif img.mode == "I" and lo >= 0 and hi <= 65535:
        top = 65535.0
    else:
        arr, top = arr - lo, max(hi - lo, 1e-12)
    grey = np.nan_to_num(arr / top * 255.0).round().clip(0, 255).astype(np.uint8)
    return Image.fromarray(grey, "L")


def to_rgb(img):
    """Any Pillow image as RGB: transparency composited on white, high bit depths scaled."""
    from PIL import Image

    if img.mode in _HIGH_DEPTH_MODES:
        return _to_8bit(img).convert("RGB")
    if img.mode == "La":                 # premultiplied; Pillow converts it only to LA
        img = img.convert("LA")
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")   # L, 1, P, CMYK (no ICC transform), YCbCr, LAB, HSV, RGB


def _upright(img):
    """Apply the EXIF orientation; a broken EXIF block leaves the pixels as stored."""
    from PIL import ImageOps

    try:
        return ImageOps.exif_transpose(img)
    except Exception:
        return img


def load_image(path: Path | bytes, max_pixels: int):
    """The image at `path` (or in these bytes: a shard's member) as RGB (first frame, EXIF
    orientation applied, alpha on white).

    Raises ItemError with a one-line reason for an empty, truncated, oversized or
    unreadable file, or one that is not an image.
    """

    def decode(img):
        img.seek(0)
        img.load()
        return to_rgb(_upright(img))

    return _opened(path, max_pixels, decode)


def check_image(path: Path | bytes, max_pixels: int) -> None:
    """Raise the ItemError `load_image` would for a file that is not a whole, readable image,
    without decoding its pixels (a 12 MP photo costs a header read, not a decode).

    The header is parsed and the size checked as `load_image` does; then a PNG's chunks are
    verified (CRCs, through IEND), a JPEG must end with its end-of-image marker after the
    scan data, and a WebP must be as long as its RIFF header says. Other formats (GIF, BMP,
    TIFF) are decoded: Pillow cannot check them otherwise.
    """

    source = path if isinstance(path, bytes) else Path(path)

    def verify(img):
        if img.format == "PNG":
            img.verify()
        elif img.format in ("JPEG", "MPO"):
            if not _jpeg_complete(source, img.tile[0][2] if img.tile else 0):
                raise ItemError("truncated image data")
        elif img.format == "WEBP":
            if not _riff_complete(source):
                raise ItemError("truncated image data")
        else:
            img.seek(0)
            img.load()

    _opened(path, max_pixels, verify)


def _jpeg_complete(path: Path | bytes, scan_start: int) -> bool:
    """An end-of-image marker (FF D9) after the first scan's start; trailing bytes after it
    (some cameras append data) are allowed. FF D9 cannot occur inside scan data (0xFF is
    stuffed there), so a file cut anywhere in its scans has none."""
    size = len(path) if isinstance(path, bytes) else os.path.getsize(path)
    start = max(scan_start, size - (1 << 16))
    if isinstance(path, bytes):
        return b"\xff\xd9" in path[start:]
    with open(path, "rb") as fh:
        fh.seek(start)
        return b"\xff\xd9" in fh.read()


def _riff_complete(path: Path | bytes) -> bool:
    if isinstance(path, bytes):
        head, size = path[:8], len(path)
    else:
        with open(path, "rb") as fh:
            head = fh.read(8)
        size = os.path.getsize(path)
    return len(head) == 8 and int.from_bytes(head[4:8], "little") + 8 <= size


def _opened(path: Path, max_pixels: int, use):
    """`use(img)` on the opened image once its size is checked, with every failure to read
    turned into an ItemError with a one-line reason."""
    from PIL import Image

    try:
        if (len(path) if isinstance(path, bytes) else os.path.getsize(path)) == 0:
            raise ItemError("empty file")
    except OSError as exc:
        raise ItemError(f"cannot read file: {exc.strerror or exc}") from None
    source = io.BytesIO(path) if isinstance(path, bytes) else path
    try:
        with warnings.catch_warnings():
            # our max_pixels check is the guard; Pillow's warning would only break the
            # progress bar (its hard limit still raises, handled below)
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise ItemError(_too_big((width, height), width * height, max_pixels))
                return use(img)
    except ItemError:
        raise
    except Image.DecompressionBombError as exc:
        raise ItemError(_bomb_reason(path if isinstance(path, bytes) else Path(path), exc,
                                     max_pixels)) from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as exc:
        raise ItemError(_reason(exc)) from None


def downscale(img, max_side: int):
    """The image itself when its longest side is within `max_side`, else a resized copy."""
    from PIL import Image

    if max(img.size) <= max_side:
        return img
    scale = max_side / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.Resampling.LANCZOS)


def to_data_url(img, max_side: int, fmt: str = "JPEG", quality: int = 90) -> str:
    """A base64 data URL of the image, RGB and downscaled, for OpenAI-style image parts."""
    buf = io.BytesIO()
    small = downscale(to_rgb(img), max_side)
    small.save(buf, format=fmt, quality=quality)
    mime = "image/jpeg" if fmt.upper() in ("JPEG", "JPG") else f"image/{fmt.lower()}"
    return f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode("ascii")
