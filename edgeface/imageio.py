"""Load photos and frames from disk as 8-bit RGB arrays, whatever their format or mode.

:func:`load_image` detects the format from the content, never from the
extension. It rejects decompression bombs from the header before any pixel is
decoded, and decodes the whole first frame so that truncated files fail here
and not later. It then applies the EXIF orientation and converts any Pillow
mode to a C-contiguous ``H x W x 3`` uint8 RGB array, compositing transparent
pixels over :data:`BACKGROUND_RGB` and scaling deep grey by the rules in
:func:`to_rgb_array`. Every failure raises :class:`~edgeface.errors.ImageError`
with a message that names the file, the reason and, where there is one, the fix.
"""

from __future__ import annotations

import io
import logging
import os
import stat
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

log = logging.getLogger(__name__)

# 50 megapixels admits full-resolution photos from 48 and 50 MP phone cameras.
# Loading an 8000x6000 JPEG raised peak RSS by about 460 MB (Pillow 13, x86-64
# Linux), because Pillow's decoded image, its bytes and the returned array
# exist at once. On boards with 1 GB of RAM or less, pass a smaller max_pixels.
DEFAULT_MAX_PIXELS = 50_000_000

# White, the colour that photo viewers and browsers show behind transparent
# areas, so the recogniser gets the picture a user checked in a viewer.
BACKGROUND_RGB = (255, 255, 255)

# Extensions that folder scans try, lower case. Pillow's format names for them
# are in _PILLOW_FORMATS. HEIC/HEIF (the iPhone default) decodes only where
# the optional pillow-heif package is installed.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pnm", ".heic", ".heif"}
)

# Major brands of the ISO base media file format (bytes 8..12, after "ftyp"
# at bytes 4..8) that mark HEIF still images and sequences, HEIC included.
HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"})

HEIF_DECODER_MISSING = "HEIC photos need pillow-heif: pip install pillow-heif"

# Pillow identifies only these formats, so that a file with any other content
# (for example EPS, which Pillow renders by running Ghostscript) is rejected.
# "PPM" is Pillow's plugin for all PNM files, including PGM.
_PILLOW_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP", "PPM")


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """Return True when the file name has an extension in :data:`IMAGE_EXTENSIONS`.

    The check is case-insensitive and reads only the name, never the file.
    Hidden files (names starting with ``.``) return False, which also skips
    the ``._IMG_0001.JPG`` metadata files that macOS writes to USB sticks.
    """
    path = Path(path)
    if path.name.startswith("."):
        return False
    return path.suffix.lower() in IMAGE_EXTENSIONS


def is_heif(header: bytes) -> bool:
    """Return True when ``header`` (at least the first 12 bytes of a file) starts a HEIF/HEIC file."""
    return len(header) >= 12 and header[4:8] == b"ftyp" and header[8:12] in HEIF_BRANDS


def heif_decoder_available() -> bool:
    """Return True when pillow-heif is installed; registers its Pillow opener on the first call."""
    global _heif_registered
    if _heif_registered is None:
        try:
            import pillow_heif
        except ImportError:
            _heif_registered = False
        else:
            pillow_heif.register_heif_opener()
            _heif_registered = True
    return _heif_registered


_heif_registered: bool | None = None


def decode_image(data: bytes, path: str | os.PathLike[str], max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode the bytes of an image file into an ``H x W x 3`` uint8 RGB array, as :func:`load_image` does.

    ``path`` only names the file in error messages. Callers that also hash a
    file use this, so the bytes hashed are the bytes decoded. Raises
    ImageError for every content that :func:`load_image` rejects.
    """
    if max_pixels <= 0:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    path = Path(path)
    if not data:
        raise _image_error(path, "the file is empty (0 bytes)", "Copy the file again from its source")
    image = _decode_first_frame(io.BytesIO(data), path, max_pixels)
    return _to_checked_rgb(image, path)


def load_image(path: str | os.PathLike[str], max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Load the image at ``path`` as a writable, C-contiguous ``H x W x 3`` uint8 RGB array.

    The format is detected from the content (JPEG, PNG, BMP, GIF, TIFF, WebP
    and PNM/PGM/PPM, and HEIC/HEIF where pillow-heif is installed). Multi-frame files (GIF, TIFF) return their first frame.
    The EXIF orientation is applied, so rows and columns are as a viewer shows
    them.

    ``max_pixels`` is the maximum width x height, checked from the header
    before decoding. Pillow's own decompression-bomb limit
    (``PIL.Image.MAX_IMAGE_PIXELS``, 89,478,485 pixels by default in Pillow 13)
    is enforced as well, so a larger ``max_pixels`` does not lift it.

    Raises ImageError when the file is missing, a directory or another file
    that is not a regular file (a FIFO, device or socket, checked before it is
    opened), unreadable, empty, not an image, larger than ``max_pixels``,
    truncated or corrupt. Truncated files load without an error only if some
    other code has set ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES``.
    """
    if max_pixels <= 0:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    path = Path(path)

    # The type is checked before open() because opening a FIFO blocks until a
    # writer appears, and a device such as /dev/zero reports a size of 0.
    # os.stat follows symlinks, so a link to an image file passes.
    try:
        file_mode = os.stat(path).st_mode
    except OSError as error:
        raise _open_error(path, error) from error
    if not stat.S_ISREG(file_mode):
        raise _not_regular_file_error(path, file_mode)

    try:
        file = open(path, "rb")
    except OSError as error:
        raise _open_error(path, error) from error

    with file:
        if os.fstat(file.fileno()).st_size == 0:
            raise _image_error(
                path, "the file is empty (0 bytes)", "Copy the file again from its source"
            )
        image = _decode_first_frame(file, path, max_pixels)
    return _to_checked_rgb(image, path)


def _to_checked_rgb(image: Image.Image, path: Path) -> np.ndarray:
    try:
        pixels = to_rgb_array(image)
    except ValueError as error:
        raise _image_error(
            path,
            f"pixel mode {image.mode!r} cannot be converted to RGB ({error})",
            "Save the image as RGB",
        ) from error

    height, width = pixels.shape[:2]
    log.debug("loaded %s: %dx%d format=%s mode=%s", path, width, height, image.format, image.mode)
    return pixels


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """Convert a Pillow image of any mode to a writable ``H x W x 3`` uint8 RGB array.

    Pixels with an alpha channel or a transparency key (``info['transparency']``,
    including transparent palette entries) are composited over
    :data:`BACKGROUND_RGB`. Grey with more than 8 bits is scaled as follows:

    - ``I;16``, ``I;16B``, ``I;16L``, ``I;16N``: divided by 257 and rounded,
      so 65535 becomes 255 and 32896 becomes 128.
    - ``I`` (signed 32-bit): negative values become 0. When the maximum is at
      most 255 the values are used as they are, when it is at most 65535 they
      are 16-bit data and divided by 257, and above that the range 0..maximum
      is scaled linearly to 0..255.
    - ``F`` (32-bit float): NaN becomes 0. When every value is within 0..1 the
      values are multiplied by 255, otherwise they are clipped to 0..255.
      Then they are rounded to the nearest integer.

    Every other mode goes through Pillow's ``convert``. It maps LAB to sRGB
    with littleCMS, and it converts CMYK with a plain formula because embedded
    ICC profiles are ignored here.
    """
    mode = image.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        return _wide_grey_to_rgb(image)

    if mode in ("RGBa", "La"):
        # Premultiplied alpha. Compositing it directly skips the rounding of
        # un-premultiplying, and Pillow 13 converts La only to LA.
        pixels = np.asarray(image)
        return _composite(pixels[..., :-1], pixels[..., -1:], premultiplied=True)

    if image.has_transparency_data:
        pixels = np.asarray(image.convert("RGBA"))
        return _composite(pixels[..., :3], pixels[..., 3:], premultiplied=False)

    if mode != "RGB":
        image = image.convert("RGB")
    # np.asarray would return a read-only view of Pillow's bytes.
    return np.array(image)


def _decode_first_frame(file: BinaryIO, path: Path, max_pixels: int) -> Image.Image:
    """Decode the first frame of ``file`` and apply its EXIF orientation.

    Raises ImageError when the content is not a supported image, is over
    ``max_pixels`` or Pillow's limit, or cannot be fully decoded.
    """
    # Image.init() imports every Pillow plugin on the first call and returns at
    # once after that. A Pillow built without WebP has no "WEBP" opener.
    Image.init()
    formats = [name for name in _PILLOW_FORMATS if name in Image.OPEN]

    header = file.read(12)
    file.seek(0)
    if is_heif(header):
        # NOTE: decoding through pillow-heif has not run in the tests, which
        # have no pillow-heif installed; only the missing-decoder message has.
        if not heif_decoder_available():
            raise _image_error(path, "it is a HEIC/HEIF photo, which Pillow decodes only with a plugin", HEIF_DECODER_MISSING)
        formats.append("HEIF")
    try:
        # NOTE: catch_warnings changes process-wide state in Python 3.11, so
        # threads that load images at the same time can lose this filter. Then
        # Pillow's warning passes silently, but the max_pixels check still runs.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(file, formats=formats)

            width, height = image.size
            if width * height > max_pixels:
                raise _image_error(
                    path,
                    f"the image is {width}x{height} = {width * height} pixels, over the limit "
                    f"of {max_pixels} pixels that guards against decompression bombs",
                    f"Resize the image to at most {_format_pixel_limit(max_pixels)} "
                    f"(library callers: pass a larger max_pixels to load_image)",
                )

            image.load()
            ImageOps.exif_transpose(image, in_place=True)
    except UnidentifiedImageError as error:
        raise _image_error(
            path,
            "not a supported image. Its content is not JPEG, PNG, BMP, GIF, TIFF, WebP or "
            "PNM, or its header is invalid (for example a width or height of 0)",
            "Convert the file to JPEG or PNG",
        ) from error
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise _image_error(
            path,
            f"Pillow rejected the image as a possible decompression bomb ({error})",
            "Downscale the image",
        ) from error
    except OSError as error:
        if error.errno is not None:
            raise _image_error(path, f"reading the file failed ({error.strerror})") from error
        raise _image_error(
            path,
            f"the image data is truncated or corrupt ({error})",
            "Copy or export the file again",
        ) from error
    except (SyntaxError, ValueError, EOFError) as error:
        raise _image_error(
            path, f"the image data is corrupt ({error})", "Copy or export the file again"
        ) from error
    return image


def _wide_grey_to_rgb(image: Image.Image) -> np.ndarray:
    raw = np.asarray(image)
    mode = image.mode

    if mode == "F":
        values = np.nan_to_num(raw, nan=0.0)
        if values.size and values.min() >= 0.0 and values.max() <= 1.0:
            values = values * 255.0
        grey = np.rint(np.clip(values, 0.0, 255.0)).astype(np.uint8)
    elif mode.startswith("I;16"):
        grey = ((raw.astype(np.uint32) + 128) // 257).astype(np.uint8)
    else:
        grey = _scale_int32_grey(raw)

    rgb = np.repeat(grey[:, :, np.newaxis], 3, axis=2)

    # A PNG transparency key on 16-bit grey is one raw value, not an alpha channel.
    transparency = image.info.get("transparency")
    if isinstance(transparency, int) and mode != "F":
        rgb[raw == transparency] = BACKGROUND_RGB
    return rgb


def _scale_int32_grey(values: np.ndarray) -> np.ndarray:
    values = np.maximum(values, 0)
    peak = int(values.max()) if values.size else 0

    if peak <= 255:
        return values.astype(np.uint8)
    if peak <= 65535:
        return ((values + 128) // 257).astype(np.uint8)
    return np.rint(values * (255.0 / peak)).astype(np.uint8)


def _composite(colour: np.ndarray, alpha: np.ndarray, premultiplied: bool) -> np.ndarray:
    """Blend ``colour`` (1 or 3 channels) over BACKGROUND_RGB, rounded to the nearest integer."""
    if colour.shape[-1] == 1:
        colour = np.repeat(colour, 3, axis=2)
    colour = colour.astype(np.uint16)
    alpha = alpha.astype(np.uint16)
    background = np.array(BACKGROUND_RGB, dtype=np.uint16)

    # Every sum below is at most 255 * 255 + 127, so uint16 does not overflow.
    background_part = background * (255 - alpha)
    if premultiplied:
        blended = colour + (background_part + 127) // 255
        # Invalid premultiplied data (colour above alpha) would exceed 255.
        blended = np.minimum(blended, 255)
    else:
        blended = (colour * alpha + background_part + 127) // 255
    return blended.astype(np.uint8)


def _format_pixel_limit(pixels: int) -> str:
    """Format a pixel limit for a message, in megapixels from one million up.

    Megapixels are rounded down to one decimal, so an image of the printed size passes.
    """
    if pixels < 1_000_000:
        return f"{pixels} pixels"
    tenths = pixels // 100_000
    if tenths % 10 == 0:
        return f"{tenths // 10} megapixels"
    return f"{tenths // 10}.{tenths % 10} megapixels"


def _open_error(path: Path, error: OSError) -> ImageError:
    if isinstance(error, FileNotFoundError):
        return _image_error(path, "file not found", "Check the path")
    if isinstance(error, IsADirectoryError):
        return _directory_error(path)
    if isinstance(error, PermissionError):
        return _image_error(
            path, "permission denied", "Make the file readable by the user that runs edgeface"
        )
    return _image_error(path, f"the file cannot be opened ({error.strerror})")


def _not_regular_file_error(path: Path, file_mode: int) -> ImageError:
    if stat.S_ISDIR(file_mode):
        return _directory_error(path)
    if stat.S_ISFIFO(file_mode):
        kind = "a named pipe (FIFO)"
    elif stat.S_ISCHR(file_mode):
        kind = "a character device"
    elif stat.S_ISBLK(file_mode):
        kind = "a block device"
    elif stat.S_ISSOCK(file_mode):
        kind = "a socket"
    else:
        kind = "a special file"
    return _image_error(
        path, f"the path is {kind}, not a regular file", "Pass the path of an image file"
    )


def _directory_error(path: Path) -> ImageError:
    return _image_error(
        path, "the path is a directory, not a file", "Pass the path of an image file"
    )


def _image_error(path: Path, reason: str, action: str = "") -> ImageError:
    message = f"cannot load image {str(path)!r}: {reason}."
    if action:
        message += f" {action}."
    return ImageError(message)
