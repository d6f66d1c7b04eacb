"""Tests for edgeface.imageio: modes, orientation, limits and every error path.

Every image is generated with Pillow in tmp_path. Two real files, a JPEG
photo and a PGM from the ORL face database, are read from the data folder
beside the repository, and those two tests skip when it is absent.
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features

from edgeface import imageio
from edgeface.errors import ImageError
from edgeface.imageio import BACKGROUND_RGB, is_image_file, load_image, to_rgb_array

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

WHITE = (255, 255, 255)


def save(image: Image.Image, path: Path, file_format: str | None = None, **params) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=file_format, **params)
    return path


def pixel(pixels: np.ndarray, row: int, column: int) -> tuple[int, ...]:
    return tuple(int(value) for value in pixels[row, column])


def png_chunk(kind: bytes, data: bytes) -> bytes:
    checksum = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", checksum)


def png_header_only(width: int, height: int) -> bytes:
    """Build an 8-bit grey PNG whose header claims the given size but whose data is empty."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b""))
        + png_chunk(b"IEND", b"")
    )


def palette_image(size: tuple[int, int], mode: str = "P") -> Image.Image:
    """Build a palette image whose index 0 is red and index 1 is blue."""
    image = Image.new(mode, size)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))
    return image


def assert_error(path: Path, reason: str, **kwargs) -> str:
    with pytest.raises(ImageError) as caught:
        load_image(path, **kwargs)
    message = str(caught.value)
    assert path.name in message
    # The path contains the test's name, so look for the reason in the rest.
    assert reason in message.replace(str(path), "")
    return message


# Output contract


def test_load_image_returns_contiguous_rgb_uint8(tmp_path):
    path = save(Image.new("RGB", (5, 3), (10, 20, 30)), tmp_path / "plain.png")

    pixels = load_image(path)

    assert pixels.shape == (3, 5, 3)
    assert pixels.dtype == np.uint8
    assert pixels.flags.c_contiguous
    assert pixels.flags.writeable
    assert pixel(pixels, 2, 4) == (10, 20, 30)


def test_load_image_accepts_str_and_path(tmp_path):
    path = save(Image.new("RGB", (2, 2), (1, 2, 3)), tmp_path / "plain.png")

    assert pixel(load_image(str(path)), 0, 0) == (1, 2, 3)
    assert pixel(load_image(path), 0, 0) == (1, 2, 3)


def test_background_is_white():
    assert BACKGROUND_RGB == WHITE


# Modes without transparency


def test_mode_1_becomes_black_and_white(tmp_path):
    image = Image.new("1", (2, 1))
    image.putpixel((1, 0), 1)
    path = save(image, tmp_path / "bilevel.png")

    pixels = load_image(path)

    assert pixel(pixels, 0, 0) == (0, 0, 0)
    assert pixel(pixels, 0, 1) == (255, 255, 255)


def test_mode_l_copies_grey_to_channels(tmp_path):
    path = save(Image.new("L", (2, 2), 77), tmp_path / "grey.png")

    assert pixel(load_image(path), 1, 1) == (77, 77, 77)


def test_mode_p_without_transparency(tmp_path):
    image = palette_image((2, 1))
    image.putpixel((1, 0), 1)
    path = save(image, tmp_path / "palette.png")

    pixels = load_image(path)

    assert pixel(pixels, 0, 0) == (255, 0, 0)
    assert pixel(pixels, 0, 1) == (0, 0, 255)


def test_cmyk_tiff_cyan_and_grey(tmp_path):
    image = Image.new("CMYK", (2, 1), (255, 0, 0, 0))
    image.putpixel((1, 0), (0, 0, 0, 128))
    path = save(image, tmp_path / "cmyk.tif")

    pixels = load_image(path)

    assert pixel(pixels, 0, 0) == (0, 255, 255)
    assert pixel(pixels, 0, 1) == (127, 127, 127)


def test_cmyk_jpeg_adobe_inverted_cyan(tmp_path):
    # Pillow saves CMYK JPEGs with an Adobe APP14 marker and inverted channels,
    # as Photoshop does, and inverts the channels back when reading.
    path = save(Image.new("CMYK", (16, 16), (255, 0, 0, 0)), tmp_path / "cmyk.jpg", quality=100)
    assert b"Adobe" in path.read_bytes()

    pixels = load_image(path)

    assert pixel(pixels, 8, 8) == (0, 255, 255)


def test_ycbcr_tiff_grey_and_red(tmp_path):
    image = Image.new("YCbCr", (2, 1), (128, 128, 128))
    image.putpixel((1, 0), (76, 85, 255))
    path = save(image, tmp_path / "ycbcr.tif")

    pixels = load_image(path)

    assert pixel(pixels, 0, 0) == (128, 128, 128)
    red, green, blue = pixel(pixels, 0, 1)
    assert red >= 250
    assert green <= 3
    assert blue <= 3


def test_lab_tiff_mid_grey(tmp_path):
    # Pillow stores a* and b* offset by 128, so (128, 128, 128) is L* = 50,
    # neutral, which is sRGB 119.
    path = save(Image.new("LAB", (2, 2), (128, 128, 128)), tmp_path / "lab.tif")

    assert pixel(load_image(path), 0, 0) == (119, 119, 119)


def test_hsv_primary_colours():
    image = Image.new("HSV", (2, 1), (0, 255, 255))
    image.putpixel((1, 0), (85, 255, 255))

    pixels = to_rgb_array(image)

    assert pixel(pixels, 0, 0) == (255, 0, 0)
    assert pixel(pixels, 0, 1) == (0, 255, 0)


# Transparency


def test_la_half_transparent_over_background(tmp_path):
    image = Image.new("LA", (3, 1), (0, 128))
    image.putpixel((1, 0), (10, 255))
    image.putpixel((2, 0), (10, 0))
    path = save(image, tmp_path / "grey-alpha.png")

    pixels = load_image(path)

    # Black at alpha 128 over white: 255 * 127 / 255 = 127.
    assert pixel(pixels, 0, 0) == (127, 127, 127)
    assert pixel(pixels, 0, 1) == (10, 10, 10)
    assert pixel(pixels, 0, 2) == WHITE


def test_rgba_half_transparent_red_is_pink(tmp_path):
    image = Image.new("RGBA", (3, 1), (255, 0, 0, 128))
    image.putpixel((1, 0), (1, 2, 3, 255))
    image.putpixel((2, 0), (1, 2, 3, 0))
    path = save(image, tmp_path / "alpha.png")

    pixels = load_image(path)

    assert pixel(pixels, 0, 0) == (255, 127, 127)
    assert pixel(pixels, 0, 1) == (1, 2, 3)
    assert pixel(pixels, 0, 2) == WHITE


@pytest.mark.parametrize("file_format, suffix", [("PNG", ".png"), ("GIF", ".gif")])
def test_mode_p_transparent_index(tmp_path, file_format, suffix):
    image = palette_image((2, 1))
    image.putpixel((1, 0), 1)
    path = save(image, tmp_path / f"palette{suffix}", file_format, transparency=1)

    pixels = load_image(path)

    assert pixel(pixels, 0, 0) == (255, 0, 0)
    assert pixel(pixels, 0, 1) == WHITE


def test_mode_p_palette_alpha(tmp_path):
    image = palette_image((2, 1))
    image.putpixel((1, 0), 1)
    path = save(image, tmp_path / "palette-alpha.png", transparency=bytes([255, 128]))

    pixels = load_image(path)

    assert pixel(pixels, 0, 0) == (255, 0, 0)
    assert pixel(pixels, 0, 1) == (127, 127, 255)


def test_mode_pa_tiff(tmp_path):
    image = palette_image((2, 1), mode="PA")
    image.putpixel((0, 0), (0, 255))
    image.putpixel((1, 0), (1, 0))
    path = save(image, tmp_path / "palette-alpha.tif")
    with Image.open(path) as reopened:
        assert reopened.mode == "PA"

    pixels = load_image(path)

    assert pixel(pixels, 0, 0) == (255, 0, 0)
    assert pixel(pixels, 0, 1) == WHITE


def test_grey_transparency_key(tmp_path):
    image = Image.new("L", (2, 1), 40)
    image.putpixel((1, 0), 7)
    path = save(image, tmp_path / "grey-key.png", transparency=7)

    pixels = load_image(path)

    assert pixel(pixels, 0, 0) == (40, 40, 40)
    assert pixel(pixels, 0, 1) == WHITE


def test_rgba_premultiplied():
    image = Image.new("RGBa", (2, 1), (100, 0, 0, 128))
    image.putpixel((1, 0), (0, 0, 0, 0))

    pixels = to_rgb_array(image)

    assert pixel(pixels, 0, 0) == (227, 127, 127)
    assert pixel(pixels, 0, 1) == WHITE


def test_la_premultiplied():
    image = Image.new("La", (2, 1), (100, 128))
    image.putpixel((1, 0), (60, 255))

    pixels = to_rgb_array(image)

    assert pixel(pixels, 0, 0) == (227, 227, 227)
    assert pixel(pixels, 0, 1) == (60, 60, 60)


# Grey deeper than 8 bits

SIXTEEN_BIT = [0, 128, 129, 257, 32896, 65535]
SIXTEEN_BIT_AS_8 = [0, 0, 1, 1, 128, 255]


def test_16bit_png_scaled_by_257(tmp_path):
    image = Image.fromarray(np.array([SIXTEEN_BIT], dtype=np.uint16))
    path = save(image, tmp_path / "deep.png")
    with Image.open(path) as reopened:
        assert reopened.mode == "I;16"

    pixels = load_image(path)

    assert pixels[0, :, 0].tolist() == SIXTEEN_BIT_AS_8
    assert (pixels[0, :, 0] == pixels[0, :, 1]).all()
    assert (pixels[0, :, 0] == pixels[0, :, 2]).all()


@pytest.mark.parametrize("mode", ["I;16B", "I;16L"])
def test_16bit_tiff_scaled_by_257(tmp_path, mode):
    dtype = ">u2" if mode == "I;16B" else "<u2"
    data = np.array(SIXTEEN_BIT, dtype=dtype).tobytes()
    image = Image.frombytes(mode, (len(SIXTEEN_BIT), 1), data)
    path = save(image, tmp_path / "deep.tif")

    assert load_image(path)[0, :, 0].tolist() == SIXTEEN_BIT_AS_8


@pytest.mark.parametrize(
    "mode, dtype", [("I;16", "<u2"), ("I;16L", "<u2"), ("I;16B", ">u2"), ("I;16N", "=u2")]
)
def test_16bit_modes_scaled_by_257(mode, dtype):
    data = np.array(SIXTEEN_BIT, dtype=dtype).tobytes()
    image = Image.frombytes(mode, (len(SIXTEEN_BIT), 1), data)

    assert to_rgb_array(image)[0, :, 0].tolist() == SIXTEEN_BIT_AS_8


def test_16bit_transparency_key(tmp_path):
    image = Image.fromarray(np.array([[32896, 0]], dtype=np.uint16))
    path = save(image, tmp_path / "deep-key.png", transparency=32896)
    with Image.open(path) as reopened:
        assert reopened.info["transparency"] == 32896

    pixels = load_image(path)

    assert pixel(pixels, 0, 0) == WHITE
    assert pixel(pixels, 0, 1) == (0, 0, 0)


@pytest.mark.parametrize(
    "values, expected",
    [
        pytest.param([0, 200, 255], [0, 200, 255], id="8-bit range kept"),
        pytest.param([-5, 100], [0, 100], id="negative clipped"),
        pytest.param([0, 32896, 65535], [0, 128, 255], id="16-bit range divided by 257"),
        pytest.param([0, 400_000, 1_000_000], [0, 102, 255], id="wider range scaled to max"),
    ],
)
def test_mode_i_scaled_by_range(tmp_path, values, expected):
    image = Image.fromarray(np.array([values], dtype=np.int32))
    assert image.mode == "I"
    path = save(image, tmp_path / "wide.tif")

    assert load_image(path)[0, :, 0].tolist() == expected


@pytest.mark.parametrize(
    "values, expected",
    [
        pytest.param([0.0, 0.5, 1.0], [0, 128, 255], id="0..1 multiplied by 255"),
        pytest.param([-3.0, 100.4, 300.0], [0, 100, 255], id="clipped to 0..255"),
        pytest.param([float("nan"), 2.0], [0, 2], id="nan becomes 0"),
    ],
)
@pytest.mark.filterwarnings("error")
def test_mode_f_scaled_by_range(tmp_path, values, expected):
    image = Image.fromarray(np.array([values], dtype=np.float32))
    assert image.mode == "F"
    path = save(image, tmp_path / "float.tif")

    assert load_image(path)[0, :, 0].tolist() == expected


# EXIF orientation

# The displayed image for each EXIF orientation, from the stored pixels.
ORIENTED = {
    1: lambda stored: stored,
    2: lambda stored: stored[:, ::-1],
    3: lambda stored: stored[::-1, ::-1],
    4: lambda stored: stored[::-1, :],
    5: lambda stored: stored.transpose(1, 0, 2),
    6: lambda stored: np.rot90(stored, k=-1),
    7: lambda stored: stored[::-1, ::-1].transpose(1, 0, 2),
    8: lambda stored: np.rot90(stored, k=1),
}


def exif_with_orientation(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


@pytest.mark.parametrize("orientation", sorted(ORIENTED))
def test_exif_orientation_applied(tmp_path, orientation):
    stored = np.arange(3 * 2 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10
    exif = exif_with_orientation(orientation)
    path = save(Image.fromarray(stored), tmp_path / "oriented.png", exif=exif)

    pixels = load_image(path)

    assert pixels.flags.c_contiguous
    np.testing.assert_array_equal(pixels, ORIENTED[orientation](stored))


def test_exif_orientation_6_jpeg_corner(tmp_path):
    # A camera held rotated 90 degrees clockwise stores a landscape image with
    # orientation 6, and the stored top-left corner is shown top-right.
    stored = Image.new("RGB", (64, 32), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 16, 16))
    path = save(stored, tmp_path / "portrait.jpg", quality=95, exif=exif_with_orientation(6))

    pixels = load_image(path)

    assert pixels.shape == (64, 32, 3)
    red, green, blue = pixel(pixels, 0, 31)
    assert red >= 240
    assert green <= 15
    assert blue <= 15


# Decompression bombs


def test_max_pixels_rejects_before_decoding(tmp_path):
    path = tmp_path / "ten-by-ten.png"
    save(Image.new("RGB", (10, 10)), path)

    assert load_image(path, max_pixels=100).shape == (10, 10, 3)
    message = assert_error(path, "over the limit of 99 pixels", max_pixels=99)
    assert "10x10" in message


def test_huge_header_rejected_by_pillow_limit(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(100_000, 100_000))

    assert_error(path, "decompression bomb")


def test_huge_header_rejected_without_pillow_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(20_000, 20_000))
    assert path.stat().st_size < 100

    message = assert_error(path, "over the limit of 50000000 pixels")
    assert "20000x20000" in message


def test_max_pixels_message_says_how_to_resize(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(20_000, 20_000))

    message = assert_error(path, "Resize the image to at most 50 megapixels")

    assert "pass a larger max_pixels to load_image" in message


def test_max_pixels_message_rounds_megapixels_down(tmp_path):
    path = save(Image.new("RGB", (2_000, 1_000)), tmp_path / "two-megapixels.png")

    assert_error(path, "at most 1.2 megapixels", max_pixels=1_299_999)


def test_max_pixels_message_small_limit_in_pixels(tmp_path):
    path = save(Image.new("RGB", (10, 10)), tmp_path / "ten-by-ten.png")

    assert_error(path, "Resize the image to at most 99 pixels", max_pixels=99)


def test_pillow_bomb_warning_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 60)
    path = save(Image.new("RGB", (10, 10)), tmp_path / "warned.png")

    assert_error(path, "possible decompression bomb")


def test_max_pixels_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="max_pixels"):
        load_image(tmp_path / "unused.png", max_pixels=0)


# Broken and missing files


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_truncated_file_rejected(tmp_path, suffix):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    complete = io.BytesIO()
    Image.fromarray(noise).save(complete, format="JPEG" if suffix == ".jpg" else "PNG")
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(complete.getvalue()[: len(complete.getvalue()) // 2])

    assert_error(path, "truncated")


def test_corrupt_png_data_rejected(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    encoded = io.BytesIO()
    Image.fromarray(noise).save(encoded, format="PNG")
    data = bytearray(encoded.getvalue())
    data[200:220] = bytes(20)
    path = tmp_path / "damaged.png"
    path.write_bytes(bytes(data))

    assert_error(path, "corrupt")


def test_text_file_rejected(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("not an image\n")

    assert_error(path, "not a supported image")


def test_eps_rejected_without_ghostscript(tmp_path):
    path = tmp_path / "vector.eps"
    path.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")

    assert_error(path, "not a supported image")


def test_zero_width_rejected(tmp_path):
    path = tmp_path / "zero-width.png"
    path.write_bytes(png_header_only(0, 5))

    assert_error(path, "width or height of 0")


def test_empty_file_rejected(tmp_path):
    path = tmp_path / "empty.jpg"
    path.touch()

    assert_error(path, "the file is empty")


def test_missing_file_rejected(tmp_path):
    assert_error(tmp_path / "absent.jpg", "not found")


def test_directory_rejected(tmp_path):
    path = tmp_path / "album.jpg"
    path.mkdir()

    assert_error(path, "the path is a directory, not a file")


def test_permission_denied_rejected(tmp_path, monkeypatch):
    # Root can read a chmod 000 file, so the denial is simulated.
    path = save(Image.new("RGB", (2, 2)), tmp_path / "locked.png")

    def deny(file, mode="r", *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(file))

    monkeypatch.setattr(imageio, "open", deny, raising=False)

    assert_error(path, "permission denied")


# Prints the ImageError message of load_image(argv[1]), or "loaded".
LOAD_IN_CHILD = """
import sys
from edgeface.errors import ImageError
from edgeface.imageio import load_image
try:
    load_image(sys.argv[1])
    print("loaded")
except ImageError as error:
    print(error)
"""


def load_in_subprocess(path: Path) -> str:
    """Return what load_image(path) prints in a child process, failing the test if it blocks."""
    try:
        result = subprocess.run(
            [sys.executable, "-c", LOAD_IN_CHILD, str(path)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"load_image({str(path)!r}) was still blocked after 30 s")
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="os.mkfifo is not available")
def test_fifo_rejected_without_blocking(tmp_path):
    path = tmp_path / "camera.jpg"
    os.mkfifo(path)

    message = load_in_subprocess(path)

    assert "camera.jpg" in message
    assert "named pipe (FIFO), not a regular file" in message


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="os.mkfifo is not available")
def test_symlink_to_fifo_rejected(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    link = tmp_path / "photo.jpg"
    link.symlink_to(fifo)

    message = load_in_subprocess(link)

    assert "photo.jpg" in message
    assert "not a regular file" in message


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="/dev/zero is not present")
def test_character_device_rejected():
    message = assert_error(Path("/dev/zero"), "character device, not a regular file")

    assert "empty" not in message


def test_symlink_to_image_loads(tmp_path):
    target = save(Image.new("RGB", (3, 2), (1, 2, 3)), tmp_path / "real.png")
    link = tmp_path / "link.png"
    link.symlink_to(target)

    assert pixel(load_image(link), 1, 2) == (1, 2, 3)


# Paths, formats and frames


def test_non_ascii_path(tmp_path):
    image = Image.new("RGB", (4, 2), (0, 200, 0))
    path = save(image, tmp_path / "Zoë" / "Ærø 写真.JPG", "JPEG")

    for argument in (path, str(path)):
        pixels = load_image(argument)
        assert pixels.shape == (2, 4, 3)
        assert pixel(pixels, 1, 3)[1] >= 195


def test_format_detected_from_content(tmp_path):
    path = save(Image.new("RGB", (2, 2), (9, 8, 7)), tmp_path / "Mislabelled.Jpeg", "PNG")

    assert pixel(load_image(path), 0, 0) == (9, 8, 7)


def test_error_message_keeps_non_ascii_name(tmp_path):
    path = tmp_path / "Zoë" / "Ærø 写真.JPG"
    path.parent.mkdir()
    path.write_text("text")

    assert_error(path, "not a supported image")


@pytest.mark.parametrize(
    "file_format, suffix, params",
    [
        ("PNG", ".png", {}),
        ("BMP", ".bmp", {}),
        ("TIFF", ".tif", {}),
        ("PPM", ".ppm", {}),
        ("WEBP", ".webp", {"lossless": True}),
    ],
)
def test_lossless_formats_exact(tmp_path, file_format, suffix, params):
    if file_format == "WEBP" and not features.check("webp"):
        pytest.skip("this Pillow build has no WebP support")
    image = Image.new("RGB", (3, 2), (12, 34, 56))
    path = save(image, tmp_path / f"plain{suffix}", file_format, **params)

    assert pixel(load_image(path), 1, 2) == (12, 34, 56)


def test_gif_first_frame(tmp_path):
    first = Image.new("RGB", (4, 4), (255, 0, 0))
    second = Image.new("RGB", (4, 4), (0, 0, 255))
    path = save(first, tmp_path / "animated.gif", save_all=True, append_images=[second])
    with Image.open(path) as reopened:
        assert reopened.n_frames == 2

    assert pixel(load_image(path), 0, 0) == (255, 0, 0)


def test_mpo_first_picture(tmp_path):
    # Pillow opens multi-picture JPEGs from stereo and some phone cameras as MPO.
    first = Image.new("RGB", (8, 8), (250, 0, 0))
    second = Image.new("RGB", (8, 8), (0, 0, 250))
    path = save(first, tmp_path / "stereo.jpg", "MPO", save_all=True, append_images=[second])
    with Image.open(path) as reopened:
        assert reopened.format == "MPO"

    red, green, blue = pixel(load_image(path), 4, 4)
    assert red >= 245
    assert green <= 5
    assert blue <= 5


def test_tiff_first_frame(tmp_path):
    first = Image.new("RGB", (4, 4), (255, 0, 0))
    second = Image.new("RGB", (6, 6), (0, 0, 255))
    path = save(first, tmp_path / "pages.tif", save_all=True, append_images=[second])
    with Image.open(path) as reopened:
        assert reopened.n_frames == 2

    pixels = load_image(path)

    assert pixels.shape == (4, 4, 3)
    assert pixel(pixels, 0, 0) == (255, 0, 0)


# Real files


def shared_file(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.is_file():
        pytest.skip(f"{path} is absent (the data folder beside the repository)")
    return path


def test_real_jpeg_photo():
    path = shared_file("knn-examples/train/obama/obama.jpg")

    pixels = load_image(path)

    assert pixels.shape == (1137, 910, 3)
    assert pixels.std() > 10


def test_orl_pgm_is_grey_112_by_92():
    path = shared_file("orl/s1/1.pgm")

    pixels = load_image(path)

    assert pixels.shape == (112, 92, 3)
    assert (pixels[..., 0] == pixels[..., 1]).all()
    assert (pixels[..., 0] == pixels[..., 2]).all()


# Folder scans


@pytest.mark.parametrize(
    "name, expected",
    [
        ("face.jpg", True),
        ("FACE.JPG", True),
        ("face.Jpeg", True),
        ("scan.TIFF", True),
        ("s1/1.pgm", True),
        ("frame.ppm", True),
        ("frame.pnm", True),
        ("logo.webp", True),
        ("anim.gif", True),
        ("old.bmp", True),
        ("Zoë/Ærø 写真.JPG", True),
        ("iphone.heic", True),
        ("notes.txt", False),
        ("jpg", False),
        ("._face.jpg", False),
        (".hidden.png", False),
    ],
)
def test_is_image_file(name, expected):
    assert is_image_file(name) is expected
    assert is_image_file(Path(name)) is expected


def test_heif_detected_from_content_not_name(tmp_path):
    from edgeface.imageio import heif_decoder_available, is_heif

    header = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00"
    assert is_heif(header)
    assert is_heif(b"\x00\x00\x00\x1cftypmif1")
    assert not is_heif(b"\x00\x00\x00\x18ftypisom")  # an MP4 video
    assert not is_heif(b"ftypheic")

    disguised = tmp_path / "photo.jpg"
    disguised.write_bytes(header + bytes(200))
    if heif_decoder_available():
        pytest.skip("pillow-heif is installed, so HEIC files are decoded")
    with pytest.raises(ImageError, match="HEIC photos need pillow-heif: pip install pillow-heif"):
        load_image(disguised)


def test_decode_image_matches_load_image(tmp_path):
    from edgeface.imageio import decode_image

    path = tmp_path / "x.png"
    pixels = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    Image.fromarray(pixels).save(path)
    np.testing.assert_array_equal(decode_image(path.read_bytes(), path), load_image(path))
    with pytest.raises(ImageError, match="empty"):
        decode_image(b"", path)
    with pytest.raises(ImageError, match="over the limit"):
        decode_image(path.read_bytes(), path, max_pixels=10)
