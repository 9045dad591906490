"""Decode one frame file: Pillow draft-mode decode, ~256 px thumbnail, cheap image statistics.

`read_frame()` is what ingest's worker processes run: it reads the file once (bytes -> hash and
decode), decodes JPEGs at a reduced DCT scale (draft mode) just big enough for the thumbnail,
respects the EXIF orientation, converts CMYK, 16-bit, palette and alpha images to RGB, and
computes the statistics on the thumbnail, so every frame is measured at the same scale. It
never raises for a bad file: the result carries a clear message instead.

Statistics (all on the RGB thumbnail, 0..255 scale):
- `mean_luma`: mean Rec.601 luma; `contrast`: its standard deviation;
- `sharpness`: variance of the 4-neighbour Laplacian of luma (low = blurred or foggy);
- `colorfulness`: Hasler & Suesstrunk (2003) metric (0 = grey, ~100+ = very colourful).
"""

from __future__ import annotations

import errno
import hashlib
import io
import signal
import struct
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from pipeline.timestamps import FrameTime, frame_time

JPEG_FORMATS = {"JPEG", "MPO"}
SUPPORTED_FORMATS = JPEG_FORMATS | {"PNG"}
ORIENTATION = 0x0112
THUMBNAIL_QUALITY = 80
# EXIF orientation -> the transpose that shows the image upright (as ImageOps.exif_transpose).
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@dataclass
class Stats:
    mean_luma: float
    contrast: float
    sharpness: float
    colorfulness: float


@dataclass
class FrameResult:
    """What a worker learned about one file; `error` is set when it is not a usable frame."""

    name: str                         # path relative to the root, as stored
    file_bytes: int
    mtime_ns: int | None              # None: bytes with no file (an upload to `serve`)
    error: str | None = None
    error_kind: str | None = None     # FrameDecodeError.kind of `error`, when it is one
    width: int | None = None          # upright (after EXIF orientation)
    height: int | None = None
    content_hash: str | None = None
    stats: Stats | None = None
    thumbnail: bytes | None = None
    thumb_width: int | None = None
    thumb_height: int | None = None
    time: FrameTime | None = None


def configure(max_image_pixels: int) -> None:
    """Pillow limits for this process (run in every worker): bombs and truncation are errors."""
    Image.MAX_IMAGE_PIXELS = int(max_image_pixels)
    ImageFile.LOAD_TRUNCATED_IMAGES = False


def configure_worker(max_image_pixels: int) -> None:
    """A decode worker process (ingest's pool): `configure`, and Ctrl-C left to the parent. A
    terminal sends Ctrl-C to the whole process group; the parent stops the pool itself (`watch`
    after the batch being written), so a worker must not die mid-task with a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure(max_image_pixels)


def read_frame(task: tuple[str, str, int, int, int, int, int]) -> FrameResult:
    """Decode one file: task = (os path, stored name, file bytes, mtime ns, thumb px, max px,
    max file bytes)."""
    os_path, name, file_bytes, mtime_ns, thumb_size, max_pixels, max_bytes = task
    result = FrameResult(name=name, file_bytes=file_bytes, mtime_ns=mtime_ns)
    try:
        data = read_image_file(os_path, file_bytes, max_bytes)
    except FrameDecodeError as exc:
        result.error, result.error_kind = str(exc), exc.kind
        return result
    except OSError as exc:
        result.error = describe_os_error(exc)
        return result
    return read_frame_bytes(data, result, thumb_size, max_pixels)


def read_frame_bytes(data: bytes, result: FrameResult, thumb_size: int,
                     max_pixels: int | None = None) -> FrameResult:
    """Fill `result` from a frame file's bytes: decode, thumbnail, statistics, timestamp (or
    set its `error`). `read_frame` reads the file first; `serve` has the bytes of an upload
    (and no mtime: `result.mtime_ns` None, so its time comes from EXIF or the name only)."""
    try:
        image, exif = decode(data, thumb_size, max_pixels)
    except FrameDecodeError as exc:
        result.error, result.error_kind = str(exc), exc.kind
        return result
    result.content_hash = hashlib.blake2b(data, digest_size=16).hexdigest()
    result.width, result.height = image.info["upright_size"]
    result.time = frame_time(exif, result.name, result.mtime_ns)
    rgb = np.asarray(image, dtype=np.float32)
    result.stats = image_stats(rgb)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=THUMBNAIL_QUALITY)
    result.thumbnail = buffer.getvalue()
    result.thumb_width, result.thumb_height = image.size
    return result


class FrameDecodeError(Exception):
    """A file that is not a usable JPEG/PNG frame; the message says why and `kind` names the
    problem for programs: 'empty', 'too_big', 'not_an_image', 'unsupported_format',
    'truncated', 'corrupt' or 'too_many_pixels'."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def read_image_file(os_path: str, file_bytes: int, max_bytes: int) -> bytes:
    """A file's bytes, after the cheap checks: not empty, not over `max_bytes` (the size the
    listing gave, and what is actually there), and a JPEG or PNG header. A worker never
    holds more than `max_bytes` of one file, whatever the listing said."""
    if file_bytes == 0:
        raise FrameDecodeError("empty file (0 bytes)", "empty")
    if file_bytes > max_bytes:
        raise FrameDecodeError(too_big(file_bytes, max_bytes), "too_big")
    with open(os_path, "rb") as fh:
        head = fh.read(len(PNG_MAGIC))
        if not head:
            raise FrameDecodeError("empty file (0 bytes)", "empty")
        check_header(head)
        data = head + fh.read(max_bytes + 1 - len(head))
    if len(data) > max_bytes:
        raise FrameDecodeError(too_big(len(data), max_bytes, grew=True), "too_big")
    return data


# Other formats a camera folder may hold, by their first bytes, for a clearer refusal.
_OTHER_FORMATS = [(b"GIF8", "GIF"), (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"),
                  (b"RIFF", "WebP or another RIFF"), (b"\x00\x00\x00", "HEIC or MP4")]


def check_header(head: bytes) -> None:
    """Refuse bytes that do not start like a JPEG or a PNG, naming what they start with."""
    if head.startswith(JPEG_MAGIC) or head.startswith(PNG_MAGIC):
        return
    for magic, name in _OTHER_FORMATS:
        if head.startswith(magic):
            raise FrameDecodeError(f"unsupported image format {name} (only JPEG and PNG frames)",
                                   "unsupported_format")
    raise FrameDecodeError(f"not an image: the file starts with bytes {head[:8].hex(' ')}, "
                           "not a JPEG or PNG header (is it really a JPEG or PNG?)",
                           "not_an_image")


def too_big(n_bytes: int, max_bytes: int, grew: bool = False) -> str:
    return (f"file too big: {n_bytes / 2**20:.0f} MiB{' and still growing' if grew else ''}, "
            f"over the max_file_bytes limit of {max_bytes / 2**20:.0f} MiB (raise the setting "
            "if the image is genuine)")


def decode(data: bytes, thumb_size: int, max_pixels: int | None = None):
    """Bytes -> (upright RGB thumbnail with info['upright_size'], Pillow Exif or None)."""
    if max_pixels is not None:
        configure(max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Corrupt EXIF data": EXIF is dropped
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.format not in SUPPORTED_FORMATS:
                raise FrameDecodeError(
                    f"unsupported image format {image.format} (only JPEG and PNG frames)",
                    "unsupported_format")
            exif = _exif(image)
            width, height = image.size
            limit = Image.MAX_IMAGE_PIXELS
            if limit and width * height > limit:
                # Pillow only warns up to twice the limit, and the filter that makes its warning
                # an error is process-wide state another thread's catch_warnings may undo
                # (`serve` decodes in threads): check the limit here too
                raise Image.DecompressionBombError(
                    f"Image size ({width * height} pixels) exceeds limit of {limit} pixels, "
                    "could be decompression bomb DOS attack.")
            if image.format in JPEG_FORMATS:
                image.draft("RGB", _box(width, height, thumb_size))
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise FrameDecodeError(
            f"refused as a decompression bomb: {exc} (raise the max_image_pixels setting if "
            "the image is genuine)", "too_many_pixels") from None
    except UnidentifiedImageError:
        raise FrameDecodeError(
            "not an image: Pillow cannot identify the file (is it really a JPEG or PNG?)",
            "not_an_image") from None
    except FrameDecodeError:
        raise
    except OSError as exc:
        if "truncated" in str(exc):
            raise FrameDecodeError(f"truncated image: {exc}", "truncated") from None
        raise FrameDecodeError(f"corrupt image: {exc}", "corrupt") from None
    except (SyntaxError, ValueError, TypeError, IndexError, struct.error) as exc:
        raise FrameDecodeError(f"corrupt image: {type(exc).__name__}: {exc}",
                               "corrupt") from None
    orientation = _orientation(exif)
    rgb = to_rgb(image)
    rgb.thumbnail((thumb_size, thumb_size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    if orientation in _TRANSPOSE:
        rgb = rgb.transpose(_TRANSPOSE[orientation])
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    rgb.info["upright_size"] = (width, height)
    return rgb, exif


def _box(width: int, height: int, thumb_size: int) -> tuple[int, int]:
    """The draft request: the thumbnail's size, so DCT scaling stops at >= thumbnail pixels."""
    scale = thumb_size / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _exif(image: Image.Image):
    """The image's EXIF, or None when it is unreadable (the pixels may still be fine)."""
    try:
        exif = image.getexif()
        exif.get_ifd(0x8769)  # parse the sub-IFD now, so a broken one is caught here
        return exif
    except Exception:  # noqa: BLE001 - any EXIF parser failure means "no usable EXIF"
        return None


def _orientation(exif) -> int:
    if exif is None:
        return 1
    try:
        value = int(exif.get(ORIENTATION, 1))
    except (TypeError, ValueError):
        return 1
    return value if 1 <= value <= 8 else 1


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB: 16-bit and float scaled, alpha composited on black."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 1.0 if mode == "F" and values.max(initial=0) <= 1.0 else (
            65535.0 if values.max(initial=0) > 255 else 255.0)
        grey = np.clip(values * (255.0 / top), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode in ("P", "PA") and ("transparency" in image.info or mode == "PA"):
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("RGB")
    return image.convert("RGB")


def image_stats(rgb: np.ndarray) -> Stats:
    """Statistics of an RGB array (H, W, 3) on the 0..255 scale."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    luma = 0.299 * r + 0.587 * g + 0.114 * b
    if luma.shape[0] >= 3 and luma.shape[1] >= 3:
        lap = (luma[:-2, 1:-1] + luma[2:, 1:-1] + luma[1:-1, :-2] + luma[1:-1, 2:]
               - 4.0 * luma[1:-1, 1:-1])
        sharpness = float(lap.var())
    else:
        sharpness = 0.0
    rg = r - g
    yb = 0.5 * (r + g) - b
    colorfulness = float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))
    return Stats(mean_luma=float(luma.mean()), contrast=float(luma.std()),
                 sharpness=sharpness, colorfulness=colorfulness)


def decode_stats(task: tuple[str, int, int]) -> Stats:
    """Decode-only ceiling for the benchmark: read, draft-decode, thumbnail, stats; no more."""
    os_path, thumb_size, max_pixels = task
    with open(os_path, "rb") as fh:
        data = fh.read()
    image, _ = decode(data, thumb_size, max_pixels)
    return image_stats(np.asarray(image, dtype=np.float32))


def describe_os_error(exc: OSError) -> str:
    """A clear message for a file that cannot be read."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "cannot read the file: permission denied"
    if exc.errno == errno.ELOOP:
        return "symlink loop: the link points back to itself"
    if exc.errno == errno.ENOENT:
        return "the file disappeared or is a broken link"
    if exc.errno == errno.EISDIR:
        return "a folder named like an image"
    return f"cannot read the file: {exc.strerror or exc}"
