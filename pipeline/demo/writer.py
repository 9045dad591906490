"""Files the demo writes: JPEGs with a cheap camera's EXIF, and the per-frame CSVs.

JPEGs carry EXIF DateTimeOriginal in camera-local time and no OffsetTimeOriginal (like many
cheap cameras), plus Make/Model; quality is fixed, so the same pixels give the same bytes. Each
file's mtime is set to the frame's moment, so a re-render over an existing folder looks
unchanged to an incremental ingest.
"""

from __future__ import annotations

import csv
import io
import os
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image

JPEG_QUALITY = 88
CAMERA_MAKE = "GardenCam"
CAMERA_MODEL = "GC-1 demo"


def exif_bytes(local: datetime) -> bytes:
    exif = Image.Exif()
    stamp = local.strftime("%Y:%m:%d %H:%M:%S")
    exif[0x010F] = CAMERA_MAKE  # Make
    exif[0x0110] = CAMERA_MODEL  # Model
    exif[0x0132] = stamp  # DateTime
    sub = exif.get_ifd(0x8769)
    sub[0x9003] = stamp  # DateTimeOriginal
    sub[0x9004] = stamp  # DateTimeDigitized
    return exif.tobytes()


def jpeg_bytes(pixels: np.ndarray, local: datetime) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, "JPEG", quality=JPEG_QUALITY, exif=exif_bytes(local))
    return buf.getvalue()


def write_frame(path: Path, data: bytes, utc_seconds: float, keep: float | None = None) -> int:
    """Write the JPEG (cut to `keep` of its bytes for a truncated file); mtime = frame time."""
    if keep is not None:
        data = data[: max(1, int(len(data) * keep))]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)
    os.utime(path, (utc_seconds, utc_seconds))
    return len(data)


def write_csv(path: Path, header: list[str], rows) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh, lineterminator="\n")
        out.writerow(header)
        out.writerows(rows)
