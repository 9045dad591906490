"""Export file formats for a list of frame files (pure functions, no Streamlit)."""

from __future__ import annotations

from typing import Iterable


def _quote(path: str) -> str:
    """A path in ffconcat's single quotes (a quote inside becomes '\\'')."""
    return "'" + str(path).replace("'", "'\\''") + "'"


def export_concat(paths: Iterable[str], fps: int, description: str = "") -> str:
    """An ffmpeg concat file that plays the frames at `fps` frames per second:
    `ffmpeg -f concat -safe 0 -i frames.ffconcat -vf fps=FPS -pix_fmt yuv420p out.mp4`."""
    paths = [str(p) for p in paths]
    if fps < 1:
        raise ValueError("fps must be at least 1")
    lines = ["ffconcat version 1.0", f"# {len(paths)} frames at {fps} fps"
             + (f"; {description}" if description else ""),
             f"# ffmpeg -f concat -safe 0 -i frames.ffconcat -vf fps={fps} -pix_fmt yuv420p "
             "timelapse.mp4"]
    duration = 1.0 / fps
    for path in paths:
        lines += [f"file {_quote(path)}", f"duration {duration:.6f}"]
    if paths:  # the concat demuxer needs the last file repeated for its duration to count
        lines.append(f"file {_quote(paths[-1])}")
    return "\n".join(lines) + "\n"
