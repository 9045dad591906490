"""Encode frame files into an H.264 MP4 with PyAV (its own bundled ffmpeg/libx264), streaming.

`encode_mp4(files, out, options)` reads each original once and decodes it with Pillow in draft
mode, upright by its EXIF orientation (`decode_frame`, the one decode call here), letterboxes it
into the output size (a frame of another size or aspect, e.g. after a camera was replaced, keeps
its shape between black bars), optionally deflickers it, and encodes it as soon as its
deflicker window is complete. Decoding runs in a few threads ahead of the encoder; at most
`prefetch` decoded frames plus the deflicker lookahead are held, whatever the number of frames,
so a 40,000-frame video needs the memory of a handful of frames (and of libx264's own lookahead).

The output is `width` wide (not given: the first readable frame's own width, at most
`MAX_AUTO_WIDTH`, so small webcam frames are not blown up); its height keeps the aspect of the
first readable frame, at most `MAX_SIDE` (a taller portrait video is narrowed to fit); both are
even (yuv420p needs it). Files that are gone or cannot be decoded are left out and returned with
the reason; the MP4 is written to a temporary name and renamed when complete, so a failed or
interrupted export never leaves a half video under the requested name.

Deflicker (the LRTimelapse idea): each frame's mean Rec.601 luma m_i (of the picture, not the
bars); its centred moving mean s_i over a window of N frames (N//2 before and after; near the
ends as many after as there are before, so the window stays centred); every channel is
multiplied by the gain s_i / m_i, clipped to `GAIN_RANGE`. A steady sequence gets gain 1
(unchanged); a frame brighter or darker than its neighbours is brought to their level while
slow changes (dawn, dusk) pass. Streaming it needs N//2 frames of lookahead.
"""

from __future__ import annotations

import os
import sys
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple, Sequence

import av
import numpy as np
from PIL import Image
from tqdm import tqdm

from pipeline import imagestats
from pipeline.pixels import FrameDecodeError, decode_within, read_image_file

CODEC = "libx264"
PIX_FMT = "yuv420p"
CRF = 20  # x264 constant quality (lower = better, bigger); 18-23 is usual
PRESET = "veryfast"
MAX_AUTO_WIDTH = 1280  # a video width not given: the frames' own, no wider than this
MAX_SIDE = 7680  # no side of the video longer than this (8K UHD; the widest `--width`)
GAIN_RANGE = (0.5, 2.0)  # deflicker never changes a frame's brightness by more than 1 EV
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class VideoOptions:
    fps: int = 24
    width: int | None = None  # None: the first frame's own width, at most `MAX_AUTO_WIDTH`
    deflicker: int = 0  # window in frames; 0 = off
    max_file_bytes: int = 200 * 2**20
    max_image_pixels: int = 200_000_000
    workers: int = 2  # decode threads
    description: str = ""  # stored as the MP4's comment
    progress: bool = True


class LeftOut(NamedTuple):
    """A file the video leaves out: `gone` when it is not there at all."""

    path: str
    reason: str
    gone: bool


@dataclass
class VideoResult:
    out: Path
    n_frames: int
    width: int
    height: int
    fps: int
    deflicker: int
    left_out: list[LeftOut] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return self.n_frames / self.fps


class NoFramesError(Exception):
    """Not one of the frames could be read; `left_out` says why for each."""

    def __init__(self, left_out: list[LeftOut]) -> None:
        self.left_out = left_out
        first = f"{left_out[0].path} ({left_out[0].reason})" if left_out else "none given"
        super().__init__(f"none of the {len(left_out)} frames could be read (first: {first})")


def read_original(path: str, options: VideoOptions) -> bytes:
    """A frame file's bytes, after ingest's cheap checks (size limit, a header of a format read)."""
    return read_image_file(path, os.stat(path).st_size, options.max_file_bytes)


def decode_frame(data: bytes, longest: int, options: VideoOptions) -> Image.Image:
    """The upright RGB picture, its long side at most `longest` px (draft mode where the JPEG
    allows), `info['upright_size']` = the original's upright size."""
    image, _ = decode_within(data, longest, options.max_image_pixels)
    return image


def output_size(width: int, upright: tuple[int, int]) -> tuple[int, int]:
    """(W, H): `width` and the height that keeps the aspect of `upright`, both even; a
    portrait picture whose height would pass `MAX_SIDE` is made `MAX_SIDE` tall instead (the
    width shrinks with it), so `--width 7680` on a phone's upright frames gives a video players
    can open, not a 7680x15360 one."""
    w, h = upright
    out_w = max(2, width - width % 2)
    out_h = max(2, round(out_w * h / w / 2) * 2)
    if out_h > MAX_SIDE:
        out_h = MAX_SIDE
        out_w = max(2, round(MAX_SIDE * w / h / 2) * 2)
    return out_w, out_h


def fit(image: Image.Image, size: tuple[int, int]) -> tuple[np.ndarray, float]:
    """The picture scaled to fit `size` and centred on black (letterboxed), as an (H, W, 3)
    uint8 array, and the picture's mean luma (bars excluded)."""
    w, h = image.size
    scale = min(size[0] / w, size[1] / h)
    inner = (max(1, round(w * scale)), max(1, round(h * scale)))
    if inner != image.size:
        image = image.resize(inner, Image.Resampling.BILINEAR, reducing_gap=2.0)
    pixels = np.asarray(image, dtype=np.uint8)
    luma = float((pixels[::4, ::4].astype(np.float32) @ _LUMA).mean()) if pixels.size else 0.0
    if inner == size:
        return pixels, luma
    canvas = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    x, y = (size[0] - inner[0]) // 2, (size[1] - inner[1]) // 2
    canvas[y : y + inner[1], x : x + inner[0]] = pixels
    return canvas, luma


class Deflicker:
    """Centred moving-mean brightness smoothing, streamed: `push` a frame and its luma, get
    back the frames whose window is complete, each with its gain; `flush` at the end."""

    def __init__(self, window: int, gain_range: tuple[float, float] = GAIN_RANGE) -> None:
        self.half = max(0, int(window) // 2)
        self.gain_range = gain_range
        self._waiting: deque[tuple[np.ndarray, float]] = deque()  # next out, then lookahead
        self._past: deque[float] = deque(maxlen=self.half)  # lumas before the next out

    def push(self, pixels: np.ndarray, luma: float) -> list[tuple[np.ndarray, float]]:
        self._waiting.append((pixels, luma))
        return [self._emit()] if len(self._waiting) > self.half else []

    def flush(self) -> list[tuple[np.ndarray, float]]:
        return [self._emit() for _ in range(len(self._waiting))]

    def _emit(self) -> tuple[np.ndarray, float]:
        # Centred: as many frames after as before (fewer near the ends), so a steady change
        # such as dawn, linear over the window, gets gain 1 right up to the first and last frame.
        k = min(len(self._past), len(self._waiting) - 1)
        after = [luma for _, luma in list(self._waiting)[1 : k + 1]]
        pixels, luma = self._waiting.popleft()
        window = [*list(self._past)[len(self._past) - k :], luma, *after]
        self._past.append(luma)
        smoothed = sum(window) / len(window)
        gain = smoothed / luma if luma > 0.5 else 1.0
        return pixels, float(np.clip(gain, *self.gain_range))


def apply_gain(pixels: np.ndarray, gain: float) -> np.ndarray:
    """Every channel times `gain` (a 256-entry lookup table), clipped to 0..255."""
    if gain == 1.0:
        return pixels
    lut = np.clip(np.rint(np.arange(256, dtype=np.float32) * gain), 0, 255).astype(np.uint8)
    return lut[pixels]


def load_frame(
    path: str, longest: int, size: tuple[int, int], options: VideoOptions
) -> tuple[np.ndarray, float]:
    """One frame file read, decoded (long side at most `longest`) and fitted into `size`:
    what a decode thread does."""
    return fit(decode_frame(read_original(path, options), longest, options), size)


def _left_out(path: str, exc: Exception) -> LeftOut:
    if isinstance(exc, OSError):
        return LeftOut(path, imagestats.describe_os_error(exc), isinstance(exc, FileNotFoundError))
    return LeftOut(path, str(exc), False)


def part_path(out: Path) -> Path:
    """Where an export is written until it is whole (`.NAME.part` beside `out`), then moved to
    `out`: a failed export leaves an earlier file at `out` as it was."""
    return out.with_name(f".{out.name}.part")


def encode_mp4(files: Sequence[str], out: Path, options: VideoOptions) -> VideoResult:
    """Encode the image files (in this order) into an H.264 MP4 at `out`; see the module doc.
    Raises `NoFramesError` when not one file can be read (and writes nothing)."""
    out = Path(out)
    left_out: list[LeftOut] = []
    bar = tqdm(
        total=len(files),
        unit="frame",
        desc="mp4",
        file=sys.stderr,
        mininterval=0.5,
        disable=not options.progress,
        dynamic_ncols=True,
    )
    first, start = None, 0
    for start, path in enumerate(files, start=1):  # the first readable frame sets the height
        try:
            data = read_original(path, options)
            longest = options.width or MAX_AUTO_WIDTH
            image = decode_frame(data, longest, options)
            upright = image.info["upright_size"]
            # not given: the frame's own width (a 256-pixel webcam is not blown up 5x)
            size = output_size(options.width or min(MAX_AUTO_WIDTH, upright[0]), upright)
            if max(size) > longest:  # portrait: decode for the taller side
                image = decode_frame(data, max(size), options)
            first = fit(image, size)
            break
        except (FrameDecodeError, OSError) as exc:
            left_out.append(_left_out(path, exc))
            bar.update(1)
    if first is None:
        bar.close()
        raise NoFramesError(left_out)
    part = part_path(out)
    n_written = 0
    try:
        with av.open(
            str(part), mode="w", format="mp4", options={"movflags": "+faststart"}
        ) as container:
            if options.description:
                container.metadata["comment"] = options.description
            stream = container.add_stream(CODEC, rate=int(options.fps))
            stream.width, stream.height, stream.pix_fmt = size[0], size[1], PIX_FMT
            stream.options = {"crf": str(CRF), "preset": PRESET}
            deflicker = Deflicker(options.deflicker)
            loaded = _prefetched(files[start:], max(size), size, options, left_out, bar)

            def encode(ready: Iterable[tuple[np.ndarray, float]]) -> None:
                nonlocal n_written
                for pixels, gain in ready:
                    frame = av.VideoFrame.from_ndarray(apply_gain(pixels, gain), format="rgb24")
                    container.mux(stream.encode(frame))
                    n_written += 1

            for pixels, luma in _chain(first, loaded):
                if options.deflicker:
                    encode(deflicker.push(pixels, luma))
                else:
                    encode([(pixels, 1.0)])
                bar.update(1)
            encode(deflicker.flush())
            container.mux(stream.encode(None))
        os.replace(part, out)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    finally:
        bar.close()
    return VideoResult(
        out=out,
        n_frames=n_written,
        width=size[0],
        height=size[1],
        fps=int(options.fps),
        deflicker=int(options.deflicker),
        left_out=left_out,
    )


def _chain(first, rest: Iterator) -> Iterator:
    yield first
    yield from rest


def _prefetched(
    files: Sequence[str],
    longest: int,
    size: tuple[int, int],
    options: VideoOptions,
    left_out: list[LeftOut],
    bar: tqdm,
) -> Iterator[tuple[np.ndarray, float]]:
    """The decoded, fitted frames in order, decoded by `options.workers` threads with at most
    `2 * workers` frames in flight; an unreadable file is added to `left_out` and skipped."""
    workers = max(1, int(options.workers))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mp4-decode") as pool:
        pending: deque[tuple[str, Future]] = deque()
        paths = iter(files)
        while True:
            while len(pending) < 2 * workers:
                path = next(paths, None)
                if path is None:
                    break
                pending.append((path, pool.submit(load_frame, path, longest, size, options)))
            if not pending:
                return
            path, future = pending.popleft()
            try:
                yield future.result()
            except (FrameDecodeError, OSError) as exc:
                left_out.append(_left_out(path, exc))
                bar.update(1)
