"""Decoding pixels, the one path: frame files (originals) and stored thumbnails.

Originals (`read_image_file`, `decode_original`, `decode_originals`, `model_input`, `upright`):
ingest (`pipeline.imagestats`), embedding (`pipeline.embed`), `run`'s one pass and the video
export read frame files only through these: the cheap checks before a file is read (size,
header), Pillow's draft mode, EXIF orientation, every mode to 8-bit RGB, the model's square
input, and one wording for every way a file is not a frame (`FrameDecodeError`).

Thumbnails, as small RGB grids of frames by frame_id:

`ThumbnailReader` decodes the thumbnails the store holds (libjpeg-turbo through simplejpeg, at
the smallest DCT scale that is at least the grid, in threads, a chunk of frames per short
connection, so memory stays flat with the number of frames); `ArrayReader` serves images held
in memory (tests, callers that have the pixels already), and a `GridCache` keeps decoded grids
between reads (`serve`); `UploadReader` serves the thumbnails
of frames that are not in the store (`serve`'s uploads), decoded exactly as stored ones are,
and the store's for the others. All follow `GridReader`, which the detectors that look at
pixels read (`FrameBatch.pixels`).
"""

from __future__ import annotations

import io
import itertools
import os
import struct
import threading
import warnings
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Protocol, Sequence

import numpy as np
import simplejpeg
from PIL import Image, ImageFile, UnidentifiedImageError

import store
from store import frames as store_frames


class GridReader(Protocol):
    """Where a detector gets pixels: small RGB grids of frames by frame_id."""

    def aspect(self, frame_ids: np.ndarray) -> float | None:
        """Typical width / height of these frames' images (None when there are none)."""

    def grids(
        self, frame_ids: np.ndarray, size: tuple[int, int]
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Chunks of (positions into `frame_ids`, RGB grids [m, height, width, 3] in 0..255,
        uint8 or float). Frames without an image are left out."""


class GridCache:
    """Decoded grids kept between reads (frame_id, size -> grid), least recently used first
    out beyond `max_bytes`; shared by threads. `serve` keeps one per loaded run, so the fit
    frames the `background` detector compares every upload with are decoded once."""

    def __init__(self, max_bytes: int = 256 * 2**20):
        self.max_bytes = max_bytes
        self.n_bytes = 0
        self._grids: OrderedDict[tuple[int, tuple[int, int]], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, frame_id: int, size: tuple[int, int]) -> np.ndarray | None:
        with self._lock:
            grid = self._grids.get((frame_id, size))
            if grid is not None:
                self._grids.move_to_end((frame_id, size))
            return grid

    def put(self, frame_id: int, size: tuple[int, int], grid: np.ndarray) -> None:
        with self._lock:
            if (frame_id, size) in self._grids:
                return
            self._grids[(frame_id, size)] = grid
            self.n_bytes += grid.nbytes
            while self.n_bytes > self.max_bytes and len(self._grids) > 1:
                _, old = self._grids.popitem(last=False)
                self.n_bytes -= old.nbytes


class ThumbnailReader:
    """Thumbnails from the store, resized to a grid; `chunk` frames per short connection
    (read-only ones with `read_only`, for a process that never writes). With a `cache`, grids
    decoded before are taken from it; the chunks come out the same (frames in frame_id order
    within each chunk), so what is computed from them is too."""

    def __init__(
        self,
        db: Path,
        chunk: int = 1024,
        workers: int | None = None,
        read_only: bool = False,
        cache: GridCache | None = None,
    ):
        self.db = Path(db)
        self.chunk = chunk
        self.workers = workers or min(4, os.cpu_count() or 1)
        self.read_only = read_only
        self.cache = cache

    def aspect(self, frame_ids: np.ndarray) -> float | None:
        with store.connect(self.db, read_only=self.read_only) as con:
            return store_frames.thumbnail_aspect(con, frame_ids)

    def grids(self, frame_ids, size):
        frame_ids = np.asarray(frame_ids, dtype=np.int64)
        with ThreadPoolExecutor(self.workers) as pool:  # decoding releases the GIL
            for start in range(0, len(frame_ids), self.chunk):
                part = frame_ids[start : start + self.chunk]
                found = self._read(part, size, pool)
                if found:
                    ids = sorted(found)  # the store's order (frame_id)
                    yield (
                        start + _positions(part, np.array(ids, dtype=np.int64)),
                        np.stack([found[i] for i in ids]),
                    )

    def _read(self, part: np.ndarray, size: tuple[int, int], pool) -> dict[int, np.ndarray]:
        """The decoded grids of the frames of `part` that have a readable thumbnail."""
        found: dict[int, np.ndarray] = {}
        if self.cache is not None:
            for frame_id in map(int, part):
                grid = self.cache.get(frame_id, size)
                if grid is not None:
                    found[frame_id] = grid
        missing = [int(i) for i in part if int(i) not in found]
        if not missing:
            return found
        with store.connect(self.db, read_only=self.read_only) as con:
            ids, jpegs = store_frames.thumbnail_jpegs(con, missing)
        # a slice of frames per task, not a task per frame: thousands of futures cost more
        # GIL than the decoding leaves free (the decoding itself releases it)
        step = max(1, -(-len(jpegs) // (4 * self.workers)))
        slices = [jpegs[lo : lo + step] for lo in range(0, len(jpegs), step)]
        decoded = itertools.chain.from_iterable(
            pool.map(lambda part: [decode_thumbnail(b, size) for b in part], slices)
        )
        for frame_id, grid in zip(ids.tolist(), decoded):
            if grid is not None:
                found[frame_id] = grid
                if self.cache is not None:
                    self.cache.put(frame_id, size, grid)
        return found


class ArrayReader:
    """Images held in memory (frame_id -> HxWx3 array); resized to the grid like thumbnails."""

    def __init__(self, images: dict[int, np.ndarray]):
        self.images = images

    def aspect(self, frame_ids):
        shapes = [self.images[int(i)].shape for i in frame_ids if int(i) in self.images]
        return float(np.median([w / h for h, w, *_ in shapes])) if shapes else None

    def grids(self, frame_ids, size):
        have = [p for p, i in enumerate(frame_ids) if int(i) in self.images]
        if have:
            grids = [
                resize_rgb(
                    Image.fromarray(np.asarray(self.images[int(frame_ids[p])], np.uint8)), size
                )
                for p in have
            ]
            yield np.array(have, dtype=np.int64), np.stack(grids)


class UploadReader:
    """Thumbnails held in memory (frame_id -> JPEG bytes, as ingest stores them) for frames
    the store does not have, and `stored`'s grids for every other frame. The same bytes decode
    to the same grid (`decode_thumbnail`), so an upload is seen as it would be once ingested."""

    def __init__(self, thumbnails: dict[int, bytes], stored: GridReader):
        self.thumbnails = thumbnails
        self.stored = stored

    def aspect(self, frame_ids):
        return self.stored.aspect(frame_ids)

    def grids(self, frame_ids, size):
        frame_ids = np.asarray(frame_ids, dtype=np.int64)
        mine = np.array([int(i) in self.thumbnails for i in frame_ids], dtype=bool)
        if (~mine).any():
            others = np.flatnonzero(~mine)
            for pos, grids in self.stored.grids(frame_ids[others], size):
                yield others[pos], grids
        held = [
            (p, decode_thumbnail(self.thumbnails[int(frame_ids[p])], size))
            for p in np.flatnonzero(mine)
        ]
        held = [(p, g) for p, g in held if g is not None]
        if held:
            yield np.array([p for p, _ in held], dtype=np.int64), np.stack([g for _, g in held])


class ReadStopped(Exception):
    """A `StoppableReader` was asked to stop."""


class StoppableReader:
    """`reader`, raising `ReadStopped` before its next chunk once `stop` is set: a detector
    fitting in a thread of its own (`analyze`'s pixel detectors, side by side) gives up within
    a chunk when the other one failed or the run was interrupted, instead of running to its
    end while the error waits."""

    def __init__(self, reader: GridReader, stop: threading.Event):
        self.reader, self.stop = reader, stop

    def aspect(self, frame_ids):
        return self.reader.aspect(frame_ids)

    def grids(self, frame_ids, size):
        for chunk in self.reader.grids(frame_ids, size):
            if self.stop.is_set():
                raise ReadStopped("stopped reading thumbnails: the analysis is stopping")
            yield chunk


def _positions(part: np.ndarray, found: np.ndarray) -> np.ndarray:
    lookup = {int(f): p for p, f in enumerate(part)}
    return np.array([lookup[int(f)] for f in found], dtype=np.int64)


def decode_thumbnail(jpeg: bytes | memoryview, size: tuple[int, int]) -> np.ndarray | None:
    """A thumbnail as a uint8 RGB grid of `size` (width, height); None when it is unreadable
    (a stored thumbnail is written by ingest, so this only happens to a damaged store).

    libjpeg-turbo decodes at the smallest DCT scale that is at least `size` (simplejpeg: the
    same pixels as Pillow's draft mode, at half its CPU, and without the GIL, which Pillow
    holds while it opens a file); what simplejpeg refuses goes to Pillow."""
    try:
        grid = simplejpeg.decode_jpeg(jpeg, colorspace="RGB", min_width=size[0], min_height=size[1])
    except ValueError:
        grid = None
    try:
        if grid is not None:
            return grid if grid.shape[1::-1] == size else resize_rgb(Image.fromarray(grid), size)
        image = Image.open(io.BytesIO(jpeg))
        image.draft("RGB", size)
        return resize_rgb(image, size)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def resize_rgb(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """uint8 RGB grid; no conversion or resize when the draft decode already gave it (both
    would only copy)."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    if image.size != size:
        image = image.resize(size, Image.BILINEAR)
    return np.asarray(image)


def grid_size(aspect: float | None, width: int) -> tuple[int, int]:
    """(width, height) of the grid for images of this aspect ratio."""
    aspect = aspect if aspect and np.isfinite(aspect) and aspect > 0 else 16 / 9
    return width, int(min(4 * width, max(8, round(width / aspect))))


# --- originals: one decoding path for ingest, embed and export ------------------------------------

JPEG_FORMATS = {"JPEG", "MPO"}
# WebP (a web archive's or a scraper's frames) and BMP are read since 2026-12-07, through the
# same decode as PNG (no draft scale): Pillow reads them without a plug-in.
SUPPORTED_FORMATS = JPEG_FORMATS | {"PNG", "WEBP", "BMP"}
FRAME_FORMATS = "JPEG, PNG, WebP or BMP"  # the formats read, in messages
ORIENTATION = 0x0112
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


# The decompression-bomb limit `decode_original` applies when its caller gives none (set by
# `configure`). Ours, not Pillow's: Pillow's `Image.MAX_IMAGE_PIXELS` is process-wide state every
# other Pillow user in the process reads (the dashboard's thumbnails, the mosaic), so a low limit
# set for one ingest must not refuse their pictures; it is only ever raised, to our limit, so
# that Pillow's own check does not refuse a frame ours allows.
_max_pixels: int = Image.MAX_IMAGE_PIXELS or 0


def configure(max_image_pixels: int) -> None:
    """Decoding limits for this process (ingest runs it in every worker): a truncated file is an
    error, a decompression bomb too (over `max_image_pixels`: `decode_original`'s default
    limit), and a corrupt EXIF block is dropped quietly (the pixels may still be fine).
    Process-wide, so threads share it; Pillow's own limit is only raised (`_allow`)."""
    global _max_pixels
    _max_pixels = int(max_image_pixels)
    _allow(_max_pixels)


def _allow(max_pixels: int) -> None:
    """Pillow's process-wide settings our decoding needs: its bomb limit at least `max_pixels`
    (never lowered: our own limit is checked per call), truncation an error, quiet EXIF."""
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
        Image.MAX_IMAGE_PIXELS = int(max_pixels)
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    warnings.filterwarnings("ignore", "Corrupt EXIF data", UserWarning)
    warnings.simplefilter("error", Image.DecompressionBombWarning)


class FrameDecodeError(Exception):
    """A file that is not a usable frame (`SUPPORTED_FORMATS`); the message says why and `kind`
    names the problem for programs: 'empty', 'too_big', 'not_an_image', 'unsupported_format',
    'truncated', 'corrupt' or 'too_many_pixels'."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BMP_MAGIC = b"BM"
HEADER_BYTES = 12  # enough to tell every format read: WebP is RIFF, 4 bytes of size, WEBP


def _is_webp(head: bytes) -> bool:
    return head[:4] == b"RIFF" and head[8:12] == b"WEBP"


def read_image_file(os_path: str, file_bytes: int, max_bytes: int) -> bytes:
    """A file's bytes, after the cheap checks: not empty, not over `max_bytes` (the size the
    listing gave, and what is actually there), and the header of a format read. A worker never
    holds more than `max_bytes` of one file, whatever the listing said."""
    if file_bytes == 0:
        raise FrameDecodeError("empty file (0 bytes)", "empty")
    if file_bytes > max_bytes:
        raise FrameDecodeError(too_big(file_bytes, max_bytes), "too_big")
    with open(os_path, "rb") as fh:
        head = fh.read(HEADER_BYTES)
        if not head:
            raise FrameDecodeError("empty file (0 bytes)", "empty")
        check_header(head)
        data = head + fh.read(max_bytes + 1 - len(head))
    if len(data) > max_bytes:
        raise FrameDecodeError(too_big(len(data), max_bytes, grew=True), "too_big")
    return data


# Other formats a camera folder may hold, by their first bytes, for a clearer refusal.
_OTHER_FORMATS = [
    (b"GIF8", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"RIFF", "RIFF (not WebP: a video or sound?)"),
    (b"\x00\x00\x00", "HEIC or MP4"),
]


def check_header(head: bytes) -> None:
    """Refuse bytes that do not start like a JPEG, PNG, WebP or BMP, naming what they start
    with (`HEADER_BYTES` of them tell every format read)."""
    if head.startswith((JPEG_MAGIC, PNG_MAGIC, BMP_MAGIC)) or _is_webp(head):
        return
    for magic, name in _OTHER_FORMATS:
        if head.startswith(magic):
            raise FrameDecodeError(
                f"unsupported image format {name} (only {FRAME_FORMATS} frames)",
                "unsupported_format",
            )
    raise FrameDecodeError(
        f"not an image: the file starts with bytes {head[:8].hex(' ')}, "
        f"not a {FRAME_FORMATS} header (is it really an image?)",
        "not_an_image",
    )


def too_big(n_bytes: int, max_bytes: int, grew: bool = False) -> str:
    return (
        f"file too big: {n_bytes / 2**20:.0f} MiB{' and still growing' if grew else ''}, "
        f"over the max_file_bytes limit of {max_bytes / 2**20:.0f} MiB (raise the setting "
        "if the image is genuine)"
    )


@dataclass
class Original:
    """A decoded original: RGB at the draft scale asked for (not yet turned upright), its EXIF
    (None when unreadable), its EXIF orientation and its full size once upright."""

    image: Image.Image
    exif: Image.Exif | None
    orientation: int
    upright_size: tuple[int, int]


def decode_original(
    source: bytes | str | os.PathLike,
    box_for: Callable[[int, int], tuple[int, int]],
    max_pixels: int | None = None,
) -> Original:
    """Bytes (or a file) -> `Original`; raises `FrameDecodeError` saying why it is no frame.

    JPEGs are decoded at the smallest DCT scale that still gives `box_for(width, height)`
    (Pillow's draft mode); any mode becomes 8-bit RGB (`to_rgb`). A file that cannot be opened
    raises its OSError (FileNotFoundError for a vanished file), not `FrameDecodeError`.
    """
    limit = _max_pixels if max_pixels is None else int(max_pixels)
    if max_pixels is not None:
        _allow(limit)
    stream = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else open(source, "rb")
    with stream:
        try:
            image = Image.open(stream)
            if image.format not in SUPPORTED_FORMATS:
                raise FrameDecodeError(
                    f"unsupported image format {image.format} (only {FRAME_FORMATS} frames)",
                    "unsupported_format",
                )
            exif = _exif(image)
            width, height = image.size
            if limit and width * height > limit:
                # our limit, this call's (Pillow's process-wide one is at least as high; it
                # only warns up to twice it, and the filter that makes its warning an error is
                # process-wide state another thread's catch_warnings may undo: `serve` decodes
                # in threads)
                raise Image.DecompressionBombError(
                    f"Image size ({width * height} pixels) exceeds limit of {limit} pixels, "
                    "could be decompression bomb DOS attack."
                )
            if image.format in JPEG_FORMATS:
                image.draft("RGB", box_for(width, height))
            image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise FrameDecodeError(
                f"refused as a decompression bomb: {exc} (raise the max_image_pixels setting if "
                "the image is genuine)",
                "too_many_pixels",
            ) from None
        except UnidentifiedImageError:
            raise FrameDecodeError(
                "not an image: Pillow cannot identify the file (is it really an image?)",
                "not_an_image",
            ) from None
        except FrameDecodeError:
            raise
        except OSError as exc:
            if "truncated" in str(exc):
                raise FrameDecodeError(f"truncated image: {exc}", "truncated") from None
            raise FrameDecodeError(f"corrupt image: {exc}", "corrupt") from None
        except (SyntaxError, ValueError, TypeError, IndexError, struct.error) as exc:
            raise FrameDecodeError(
                f"corrupt image: {type(exc).__name__}: {exc}", "corrupt"
            ) from None
    orientation = _orientation(exif)
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return Original(to_rgb(image), exif, orientation, (width, height))


def decode_originals(
    data: bytes,
    draft_boxes: Sequence[Callable[[int, int], tuple[int, int]]],
    max_pixels: int | None = None,
) -> list[Original]:
    """`decode_original` of one file's bytes for several draft requests, decoding once per
    distinct draft scale: requests that come to the same scale (a 1080p or larger frame's
    thumbnail and the model's 224 px input both decode at 1/4 or 1/8) share one `Original`,
    the very pixels each would get alone. Raises as `decode_original` does."""
    decoded = [decode_original(data, draft_boxes[0], max_pixels)]
    for box in draft_boxes[1:]:
        size = draft_size(data, box)
        same = next((original for original in decoded if original.image.size == size), None)
        decoded.append(same if same is not None else decode_original(data, box, max_pixels))
    return decoded


def draft_size(data: bytes, box_for: Callable[[int, int], tuple[int, int]]) -> tuple[int, int]:
    """The size `decode_original(data, box_for)` decodes at, before orientation, without
    decoding (only the header is read). For bytes `decode_original` already accepted."""
    with Image.open(io.BytesIO(data)) as image:
        if image.format in JPEG_FORMATS:
            image.draft("RGB", box_for(*image.size))
        return image.size


def square_box(size: int) -> Callable[[int, int], tuple[int, int]]:
    """The draft request of a model's square input: decode at the smallest scale that still
    has `size` pixels on both sides."""
    return lambda width, height: (size, size)


def model_input(original: Original, size: int) -> np.ndarray:
    """A model's input from a decoded original: RGB uint8 `[size, size, 3]`, the whole frame
    squashed, upright (embed and run build it here, from the same pixels). Leaves
    `original.image` as it is."""
    image = original.image
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    # turned after squashing: the same pixels as turning first, on a smaller image
    return np.asarray(upright(image, original.orientation), dtype=np.uint8)


def decode_within(
    data: bytes, longest: int, max_pixels: int | None = None
) -> tuple[Image.Image, Image.Exif | None]:
    """Bytes -> (upright RGB image whose long side is at most `longest`, with
    info['upright_size'] = the original's upright size; its EXIF or None). Thumbnails and the
    video export's frames are made this way."""
    original = decode_original(data, lambda w, h: draft_box(w, h, longest), max_pixels)
    return shrink_within(original, longest)


def shrink_within(original: Original, longest: int) -> tuple[Image.Image, Image.Exif | None]:
    """A decoded original -> `decode_within`'s answer (upright, long side at most `longest`,
    info['upright_size']; its EXIF). Shrinks `original.image` in place (`run`'s one pass takes
    the model's input from a shared original before this)."""
    rgb = original.image
    rgb.thumbnail((longest, longest), Image.Resampling.BILINEAR, reducing_gap=2.0)
    rgb = upright(rgb, original.orientation)
    rgb.info["upright_size"] = original.upright_size
    return rgb, original.exif


def draft_box(width: int, height: int, longest: int) -> tuple[int, int]:
    """The draft request for a long side of `longest`: DCT scaling stops at >= that size."""
    scale = longest / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def upright(image: Image.Image, orientation: int) -> Image.Image:
    """The image turned as its EXIF orientation says (as ImageOps.exif_transpose)."""
    return image.transpose(_TRANSPOSE[orientation]) if orientation in _TRANSPOSE else image


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
        top = (
            1.0
            if mode == "F" and values.max(initial=0) <= 1.0
            else (65535.0 if values.max(initial=0) > 255 else 255.0)
        )
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
