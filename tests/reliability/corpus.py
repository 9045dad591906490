"""The shared bad-input corpus: one folder with every kind of odd and broken frame file.

Every entry point that reads frame files (`run`/`ingest`, and each new one as it lands) is
tested against the whole corpus at once: `build_corpus(folder)` writes the files and returns
what must become of each. Odd but valid images must be frames; broken files exactly one clear
error whose message starts as `broken[name]` says; files with no usable date must be frames
with a timestamp warning. Add a case here and every entry point is tested against it.
"""

from __future__ import annotations

import os
import shutil
import struct
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import write_jpeg
from tests.reliability.conftest import make_frames

NON_UTF8 = b"caf\xe9_20240410_150000.jpg"
MARKDOWN_NAME = "**bold** $x^2$ :red[alert]_20240410_133000.jpg"
SPARSE_BYTES = 2 * 2**30  # a 2 GiB file with a JPEG header and nothing else: refused by size


@dataclass
class Corpus:
    folder: Path
    good: set[str]  # stored paths of files that must become frames
    broken: dict[str, str]  # stored path -> how its error message starts
    warned: dict[str, tuple[str, str]]  # stored path -> (time source, text in its warning)
    n_plain: int  # of `good`: ordinary frames f_000.jpg...


def _exif_jpeg(
    path: Path,
    exif_date: str | None = None,
    orientation: int | None = None,
    size=(80, 40),
    seed: int = 0,
) -> Path:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    pixels[:, : size[0] // 4] = (250, 20, 20)  # a red band on the left: shows the orientation
    exif = Image.Exif()
    if exif_date is not None:
        exif.get_ifd(0x8769)[0x9003] = exif_date
    if orientation is not None:
        exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, "JPEG", quality=90, exif=exif)
    return path


def _date_exif(text: str) -> Image.Exif:
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9003] = text
    return exif


def _huge_jpeg(path: Path, source: Path) -> Path:
    """A small JPEG whose frame header claims 60000 x 60000 pixels (3.6 gigapixels)."""
    data = bytearray(source.read_bytes())
    at = data.index(b"\xff\xc0")  # SOF0: marker, length (2), precision (1), height, width
    struct.pack_into(">HH", data, at + 5, 60000, 60000)
    path.write_bytes(bytes(data))
    return path


def build_corpus(folder: Path, n_plain: int = 12) -> Corpus:
    """Write the corpus into `folder` (created) and say what must become of each file."""
    make_frames(folder, n_plain)
    # odd but valid images
    cmyk = Image.new("CMYK", (64, 48), (0, 200, 255, 30))
    cmyk.save(folder / "cmyk_20240410_120000.jpg", "JPEG", exif=_date_exif("2024:04:10 12:00:00"))
    deep = (np.linspace(0, 65535, 64 * 48).reshape(48, 64)).astype(np.uint16)
    Image.fromarray(deep).save(folder / "sixteen_bit_20240410_121000.png")
    Image.fromarray(deep).save(folder / "png_named_as_20240410_122000.jpg", "PNG")
    _exif_jpeg(folder / "rotated.jpg", "2024:04:10 12:30:00", orientation=6)
    write_jpeg(folder / "copy_a.jpg", when=datetime(2024, 4, 10, 12, 40), seed=99)
    shutil.copy(folder / "copy_a.jpg", folder / "copy_b.jpg")
    write_jpeg(Path(os.fsdecode(os.path.join(os.fsencode(folder), NON_UTF8))), seed=98)
    write_jpeg(folder / MARKDOWN_NAME, seed=97)
    _exif_jpeg(folder / "garbage_date_20240410_130000.jpg", "yesterday-ish at noon", seed=2)
    _exif_jpeg(folder / "future_date.jpg", "2999:12:31 23:59:59", seed=3)
    for name, when in (
        ("restored_backup.jpg", datetime(1970, 1, 1)),
        ("ancient_mtime.jpg", datetime(1910, 6, 1)),
        ("far_future_mtime.jpg", datetime(2446, 5, 1)),
    ):
        path = write_jpeg(folder / name, seed=len(name))
        stamp = int((when - datetime(1970, 1, 1)).total_seconds() * 1e9)
        os.utime(path, ns=(stamp, stamp))
    # broken files
    (folder / "zero.jpg").write_bytes(b"")
    whole = (folder / "f_000.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (folder / "text.jpg").write_text("a text file that only looks like a JPEG\n")
    _huge_jpeg(folder / "huge.jpg", folder / "f_001.jpg")
    with open(folder / "sparse_2gb.jpg", "wb") as fh:  # sparse: no disk used
        fh.write(b"\xff\xd8\xff\xe0")
        fh.truncate(SPARSE_BYTES)
    Image.new("RGB", (8, 8)).save(folder / "really_a_gif.jpg", "GIF")
    os.symlink("loop_b.jpg", folder / "loop_a.jpg")
    os.symlink("loop_a.jpg", folder / "loop_b.jpg")
    os.symlink("no_such_file.jpg", folder / "dangling.jpg")
    os.mkfifo(folder / "fifo.jpg")
    good = {f"f_{i:03d}.jpg" for i in range(n_plain)} | {
        "cmyk_20240410_120000.jpg",
        "sixteen_bit_20240410_121000.png",
        "png_named_as_20240410_122000.jpg",
        "rotated.jpg",
        "copy_a.jpg",
        "copy_b.jpg",
        "caf\\xe9_20240410_150000.jpg",
        MARKDOWN_NAME,
        "garbage_date_20240410_130000.jpg",
        "future_date.jpg",
        "restored_backup.jpg",
        "ancient_mtime.jpg",
        "far_future_mtime.jpg",
    }
    broken = {
        "zero.jpg": "empty file (0 bytes)",
        "truncated.jpg": "truncated image",
        "text.jpg": "not an image",
        "huge.jpg": "refused as a decompression bomb",
        "sparse_2gb.jpg": "file too big: 2048 MiB",
        "really_a_gif.jpg": "unsupported image format GIF",
        "loop_a.jpg": "symlink loop",
        "loop_b.jpg": "symlink loop",
        "dangling.jpg": "the file disappeared or is a broken link",
        "fifo.jpg": "not a regular file",
    }
    warned = {
        "garbage_date_20240410_130000.jpg": ("filename", "yesterday-ish"),
        "future_date.jpg": ("mtime", "future"),
        "restored_backup.jpg": ("none", "1970-01-01 00:00:00' is before 1980"),
        "ancient_mtime.jpg": ("none", "1910-06-01 00:00:00' is before 1980"),
        "far_future_mtime.jpg": ("none", "is in the future"),
    }
    return Corpus(folder, good, broken, warned, n_plain)
