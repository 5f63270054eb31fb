"""Image input on real photos in every format and mode, and broken files as per-item errors."""

from __future__ import annotations

import base64
import io
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stages.errors import ItemError
from stages.io.imageio import IMAGE_EXTENSIONS, check_image, downscale, iter_images, load_image, to_data_url

MP50 = 50_000_000


def _photo(name: str, side: int = 160) -> Image.Image:
    from skimage import data

    img = Image.fromarray(getattr(data, name)())
    img.thumbnail((side, side))
    return img


@pytest.fixture(scope="module")
def cat() -> Image.Image:
    return _photo("chelsea").convert("RGB")        # 160x106


def _diff(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, dtype=float) - np.asarray(b, dtype=float)).mean())


@pytest.mark.parametrize("ext,tolerance", [(".jpg", 4), (".png", 0), (".webp", 6), (".gif", 12),
                                           (".bmp", 0), (".tiff", 0), (".JPEG", 4), (".Tif", 0)])
def test_every_format_loads_as_rgb_with_its_pixels(tmp_path, cat, ext, tolerance):
    path = tmp_path / f"cat{ext}"
    cat.save(path)
    img = load_image(path, MP50)
    assert img.mode == "RGB" and img.size == cat.size
    assert _diff(img, cat) <= tolerance


@pytest.mark.parametrize("ext", [".gif", ".webp"])
def test_animated_images_give_their_first_frame(tmp_path, cat, ext):
    other = _photo("coffee").convert("RGB").resize(cat.size)
    path = tmp_path / f"anim{ext}"
    cat.save(path, save_all=True, append_images=[other], duration=100, loop=0, lossless=True)
    with Image.open(path) as check:
        assert check.n_frames == 2
    img = load_image(path, MP50)
    assert _diff(img, cat) < 12 < _diff(img, other)


def test_rgba_is_composited_on_white(tmp_path, cat):
    rgba = cat.convert("RGBA")
    alpha = np.full(cat.size[::-1], 255, np.uint8)
    alpha[:40, :40] = 0                              # fully transparent corner
    alpha[60:, 80:] = 128                            # half transparent block
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(tmp_path / "cut.png")
    img = load_image(tmp_path / "cut.png", MP50)
    assert img.getpixel((5, 5)) == (255, 255, 255)
    original, half = np.asarray(cat, float)[100, 120], np.asarray(img, float)[100, 120]
    assert np.allclose(half, (original * 128 + 255 * 127) / 255, atol=2)
    assert img.getpixel((100, 20)) == cat.getpixel((100, 20))


def test_opaque_rgba_keeps_its_pixels_and_la_gets_a_white_background(tmp_path):
    logo = _photo("logo", 200)                       # RGBA with every pixel opaque
    assert logo.mode == "RGBA"
    logo.save(tmp_path / "logo.png")
    assert _diff(load_image(tmp_path / "logo.png", MP50), logo.convert("RGB")) == 0
    grey, alpha = Image.new("L", (8, 8), 10), Image.new("L", (8, 8), 255)
    alpha.paste(0, (0, 0, 4, 8))
    Image.merge("LA", (grey, alpha)).save(tmp_path / "la.png")
    img = load_image(tmp_path / "la.png", MP50)
    assert img.getpixel((0, 0)) == (255, 255, 255) and img.getpixel((7, 0)) == (10, 10, 10)


def test_palette_transparency_becomes_white_and_plain_palette_keeps_colours(tmp_path, cat):
    pal = cat.quantize(16)
    pal.save(tmp_path / "plain.png")
    plain = load_image(tmp_path / "plain.png", MP50)
    assert _diff(plain, pal.convert("RGB")) == 0
    index = pal.getpixel((0, 0))
    pal.save(tmp_path / "holes.png", transparency=index)
    holes = load_image(tmp_path / "holes.png", MP50)
    assert holes.getpixel((0, 0)) == (255, 255, 255)
    other = next(xy for xy in ((x, y) for x in range(160) for y in range(106)) if pal.getpixel(xy) != index)
    assert holes.getpixel(other) == plain.getpixel(other)


def test_greyscale_and_bilevel_become_grey_rgb(tmp_path):
    camera = _photo("camera")
    assert camera.mode == "L"
    camera.save(tmp_path / "camera.png")
    img = np.asarray(load_image(tmp_path / "camera.png", MP50))
    assert (img[..., 0] == np.asarray(camera)).all() and (img[..., 0] == img[..., 2]).all()
    camera.convert("1").save(tmp_path / "bits.bmp")
    bits = np.asarray(load_image(tmp_path / "bits.bmp", MP50))
    assert set(np.unique(bits)) == {0, 255}


def test_16_bit_gradient_keeps_its_gradient(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (8, 1))
    Image.fromarray(ramp).save(tmp_path / "ramp16.png")
    with Image.open(tmp_path / "ramp16.png") as check:
        assert check.mode.startswith("I")
    row = np.asarray(load_image(tmp_path / "ramp16.png", MP50))[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255 and abs(row[128] - 128) <= 1
    assert (np.diff(row) >= 0).all() and len(set(row)) > 200


def test_float_tiff_in_unit_range_is_scaled(tmp_path):
    ramp = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (4, 1))
    Image.fromarray(ramp, "F").save(tmp_path / "ramp.tif")
    row = np.asarray(load_image(tmp_path / "ramp.tif", MP50))[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255 and (np.diff(row) >= 0).all()


def test_cmyk_jpeg_becomes_rgb(tmp_path, cat):
    cat.convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    with Image.open(tmp_path / "cmyk.jpg") as check:
        assert check.mode == "CMYK"
    img = load_image(tmp_path / "cmyk.jpg", MP50)
    assert img.mode == "RGB" and _diff(img, cat) < 6


def test_exif_orientation_is_applied(tmp_path, cat):
    exif = Image.Exif()
    exif[0x0112] = 6                                 # stored sideways: rotate 90 clockwise to view
    cat.save(tmp_path / "sideways.jpg", exif=exif, quality=95)
    img = load_image(tmp_path / "sideways.jpg", MP50)
    assert img.size == cat.size[::-1]
    assert _diff(img, cat.transpose(Image.Transpose.ROTATE_270)) < 4


def test_broken_files_are_item_errors_with_a_reason(tmp_path, cat):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.jpg").write_text("these are my notes, not a picture\n")
    buf = io.BytesIO()
    cat.save(buf, "JPEG")
    (tmp_path / "half.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    png = io.BytesIO()
    cat.save(png, "PNG")
    (tmp_path / "half.png").write_bytes(png.getvalue()[:400])
    cases = {"empty.png": "empty file", "notes.jpg": "not an image file",
             "half.jpg": "truncated image data", "half.png": "truncated image data",
             "missing.jpg": "cannot read file: No such file or directory"}
    for name, reason in cases.items():
        with pytest.raises(ItemError, match=reason) as info:
            load_image(tmp_path / name, MP50)
        assert "\n" not in str(info.value)


def test_check_image_fails_what_load_image_fails_without_decoding_pixels(tmp_path, cat, monkeypatch):
    from PIL import ImageFile

    buf = io.BytesIO()
    cat.save(buf, "JPEG")
    trailing = buf.getvalue() + b"camera maker data after the end marker"
    (tmp_path / "trailing.jpg").write_bytes(trailing)
    (tmp_path / "half.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (tmp_path / "tail.jpg").write_bytes(buf.getvalue()[:-2])            # only the end marker cut
    for fmt, ext in (("PNG", "png"), ("WEBP", "webp")):
        out = io.BytesIO()
        cat.save(out, fmt)
        (tmp_path / f"ok.{ext}").write_bytes(out.getvalue())
        (tmp_path / f"cut.{ext}").write_bytes(out.getvalue()[:-30])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.jpg").write_text("these are my notes, not a picture\n")
    Image.new("1", (20000, 20000)).save(tmp_path / "huge.png")
    good = ("trailing.jpg", "ok.png", "ok.webp")
    bad = ("half.jpg", "tail.jpg", "cut.png", "cut.webp", "empty.png", "notes.jpg", "huge.png")
    for name in good:
        load_image(tmp_path / name, MP50)
    for name in bad:
        with pytest.raises(ItemError) as loaded:
            load_image(tmp_path / name, MP50)
        with pytest.raises(ItemError) as checked:
            check_image(tmp_path / name, MP50)
        assert "\n" not in str(checked.value)
        if name not in ("tail.jpg", "cut.webp"):        # Pillow's decoder words these its own way
            assert str(checked.value) == str(loaded.value), name

    def no_decoding(self):
        raise AssertionError("pixels decoded")
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    for name in good:
        check_image(tmp_path / name, MP50)
    with pytest.raises(AssertionError):
        load_image(tmp_path / "trailing.jpg", MP50)


def test_huge_images_are_refused_from_the_header_before_decoding(tmp_path):
    Image.new("1", (20000, 20000)).save(tmp_path / "huge.png")     # 48 KB on disk, 400 MP
    with pytest.raises(ItemError, match=r"^image is 20000x20000 = 400\.0 MP, over "
                                        r"interrogate\.max_pixels = 50\.0 MP$"):
        load_image(tmp_path / "huge.png", MP50)
    with pytest.raises(ItemError, match="20000x20000 = 400.0 MP, over Pillow's decompression-bomb"):
        load_image(tmp_path / "huge.png", 10**9)
    Image.new("1", (10000, 10000)).save(tmp_path / "big.gif")     # in Pillow's warning band
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ItemError, match=r"10000x10000 = 100\.0 MP"):
            load_image(tmp_path / "big.gif", MP50)
        assert load_image(tmp_path / "big.gif", 10**8).size == (10000, 10000)


def test_iter_images_walks_lazily_in_stable_order(tmp_path, cat):
    files = ["b.jpg", "A.PNG", "a/x.webp", "a/notes.txt", "c/d/y.gif", "c/z.bmp", ".hidden.jpg",
             ".b.jpg.1234.tmp", "e/.cache/w.jpg", "f.tiff", "g.txt", "h.jpeg~"]
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "link").symlink_to(tmp_path / "a")                 # not entered: no cycles
    found = [p.relative_to(tmp_path).as_posix() for p in iter_images(tmp_path)]
    assert found == ["A.PNG", "a/x.webp", "b.jpg", "c/d/y.gif", "c/z.bmp", "f.tiff"]
    walk = iter_images(tmp_path)
    assert next(walk).name == "A.PNG"
    shutil.rmtree(tmp_path / "c")                                  # removed mid-walk: just skipped
    assert [p.name for p in walk] == ["x.webp", "b.jpg", "f.tiff"]
    assert list(iter_images(tmp_path / "nowhere")) == []
    assert {".jpg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".jpeg"} == set(IMAGE_EXTENSIONS)


def test_downscale_and_data_url(cat):
    assert downscale(cat, 512) is cat
    small = downscale(cat, 64)
    assert small.size == (64, 42)
    url = to_data_url(cat.convert("RGBA"), 80)
    head, payload = url.split(",", 1)
    assert head == "data:image/jpeg;base64"
    back = Image.open(io.BytesIO(base64.b64decode(payload)))
    assert back.format == "JPEG" and back.size == (80, 53)
    png = to_data_url(cat, 40, fmt="PNG")
    assert png.startswith("data:image/png;base64,")
    assert Image.open(io.BytesIO(base64.b64decode(png.split(",", 1)[1]))).size == (40, 26)


def test_sample_folder_images_all_load():
    root = Path(__file__).resolve().parent.parent / "images"
    paths = list(iter_images(root))
    assert len(paths) >= 6 and sum(p.stat().st_size for p in paths) < 1_000_000
    assert {p.suffix for p in paths} >= {".jpg", ".png", ".webp"}
    for path in paths:
        img = load_image(path, MP50)
        assert img.mode == "RGB" and max(img.size) <= 512
