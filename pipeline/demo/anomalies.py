"""Labelled anomalies: where they go in the sequence (`plan_anomalies`) and how they look.

Kinds (the `kind` column of ground_truth.csv): person, fox, bird (close to the lens), knocked
(camera view shifted and rotated for a stretch), drops (water on the lens), black, washed_out,
fog (a dense fog event inside a foggy spell) and truncated (file cut short). All visual kinds
are placed in daylight (sun above 3 degrees); truncated files may fall at any time. They are rare
(about 3-6 % of frames at the default 1,200). `hard=True` makes them smaller, fainter and
shorter.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from pipeline.demo.scene import Camera

KINDS = ("person", "fox", "bird", "knocked", "drops", "black", "washed_out", "fog", "truncated")

# Events per 1,000 frames, and frames per event (normal, hard).
_RATE = {
    "person": 4.0,
    "fox": 3.0,
    "bird": 3.0,
    "knocked": 1.0,
    "drops": 1.5,
    "black": 3.0,
    "washed_out": 3.0,
    "fog": 1.5,
    "truncated": 3.0,
}
_LENGTH = {
    "person": ((1, 3), (1, 2)),
    "fox": ((1, 2), (1, 1)),
    "bird": ((1, 1), (1, 1)),
    "knocked": ((6, 12), (2, 4)),
    "drops": ((3, 6), (2, 3)),
    "black": ((1, 1), (1, 1)),
    "washed_out": ((1, 1), (1, 1)),
    "fog": ((3, 5), (2, 3)),
    "truncated": ((1, 1), (1, 1)),
}
DAYLIGHT = 3.0  # degrees of sun elevation an anomaly needs (except truncated)


@dataclass
class Event:
    """One anomaly on one frame; `params` says exactly how to draw it."""

    kind: str
    params: dict = field(default_factory=dict)


def plan_anomalies(clocks, weather, rng: np.random.Generator, hard: bool = False) -> list:
    """A list with an `Event` or None per frame. May force fog hours for the dense-fog event."""
    n = len(clocks)
    events: list = [None] * n
    taken = np.zeros(n, bool)
    day = np.array([c.sun_elevation > DAYLIGHT for c in clocks])
    hour_of = [weather.index_of(c.utc) for c in clocks]
    small = n < 400
    order = ["knocked", "fog", "drops", "person", "fox", "bird", "black", "washed_out", "truncated"]
    for kind in order:
        count = max(1, int(round(_RATE[kind] * n / 1000)))
        lo, hi = _LENGTH[kind][1 if hard else 0]
        for _ in range(count):
            length = int(rng.integers(lo, hi + 1))
            if small:  # a short render still gets every kind: shorter events, closer together
                length = max(1, min(length, max(2, n // 40)))
            start = _find_slot(kind, length, clocks, weather, hour_of, day, taken, rng)
            if start is None:
                continue
            if kind == "fog":
                hours = sorted({hour_of[i] for i in range(start, start + length)})
                if any(weather.condition[h] != "fog" for h in hours):
                    weather.force(hours, "fog", rng)
            shared = _event_params(kind, rng, hard)
            for i in range(start, start + length):
                params = dict(shared)
                params.update(_frame_params(kind, rng, hard))
                events[i] = Event(kind, params)
            gap = 1 if small else 2
            lo_gap, hi_gap = max(0, start - gap), min(n, start + length + gap)
            taken[lo_gap:hi_gap] = True
    return events


def _find_slot(kind, length, clocks, weather, hour_of, day, taken, rng):
    n = len(clocks)
    candidates = []
    for s in range(0, n - length + 1):
        if taken[s : s + length].any():
            continue
        if kind != "truncated" and not day[s : s + length].all():
            continue
        candidates.append(s)
    if not candidates:
        return None

    def prefer(test):
        good = [s for s in candidates if all(test(i) for i in range(s, s + length))]
        return good or None

    if kind == "fog":
        pool = prefer(lambda i: weather.condition[hour_of[i]] == "fog")
        if pool is None:  # no foggy daylight: make the earliest morning slot foggy
            mornings = [s for s in candidates if 5 <= clocks[s].local.hour < 10]
            pool = mornings[:1] or candidates[:1]
    elif kind == "drops":
        pool = prefer(lambda i: weather.wetness(hour_of[i]) > 0.2) or candidates
    elif kind == "fox":
        pool = prefer(lambda i: clocks[i].sun_elevation < 20) or candidates
    else:
        pool = candidates
    return int(pool[int(rng.integers(0, len(pool)))])


def _event_params(kind: str, rng: np.random.Generator, hard: bool) -> dict:
    """What stays the same through a multi-frame event."""
    if kind == "knocked":
        angle = rng.uniform(0.8, 2.0) if hard else rng.uniform(2.5, 6.0)
        shift = (0.012, 0.03) if hard else (0.04, 0.08)
        return {
            "angle": float(angle * rng.choice([-1, 1])),
            "dx": float(rng.uniform(*shift) * rng.choice([-1, 1])),
            "dy": float(rng.uniform(*shift) * rng.choice([-1, 1])),
        }
    if kind == "person":
        palette = [(200, 40, 40), (40, 70, 160), (230, 190, 40), (90, 90, 95), (60, 120, 70)]
        if hard:
            palette = [(90, 100, 75), (110, 95, 80), (85, 90, 95)]
        skin = [(230, 190, 160), (190, 140, 110), (120, 85, 60)][int(rng.integers(0, 3))]
        return {
            "top_colour": palette[int(rng.integers(0, len(palette)))],
            "leg_colour": (50, 55, 80) if rng.random() < 0.6 else (110, 100, 80),
            "skin": skin,
        }
    if kind == "drops":
        seed = int(rng.integers(0, 2**31))
        return {
            "drop_seed": seed,
            "n_drops": int(rng.integers(2, 5) if hard else rng.integers(6, 14)),
        }
    if kind == "fog":
        return {"density": float(rng.uniform(0.11, 0.15) if hard else rng.uniform(0.2, 0.28))}
    if kind == "truncated":
        return {"keep": float(rng.uniform(0.55, 0.9) if hard else rng.uniform(0.25, 0.6))}
    return {}


def _frame_params(kind: str, rng: np.random.Generator, hard: bool) -> dict:
    """What changes frame to frame inside an event."""
    if kind == "person":
        z = rng.uniform(7.0, 9.0) if hard else rng.uniform(2.8, 4.6)
        return {
            "X": float(rng.uniform(-2.5, 2.5)),
            "Z": float(z),
            "stride": float(rng.uniform(0, 0.35)),
            "facing": float(rng.choice([-1, 1])),
        }
    if kind == "fox":
        z = rng.uniform(6.5, 8.5) if hard else rng.uniform(2.6, 4.0)
        return {
            "X": float(rng.uniform(-2.5, 2.5)),
            "Z": float(z),
            "facing": float(rng.choice([-1, 1])),
        }
    if kind == "bird":
        colours = [(120, 118, 125), (70, 60, 55), (150, 110, 80), (40, 40, 45)]  # pigeon, ...
        return {
            "size": float(rng.uniform(0.14, 0.22) if hard else rng.uniform(0.26, 0.42)),
            "x": float(rng.uniform(0.05, 0.95) if hard else rng.uniform(0.2, 0.8)),
            "y": float(rng.uniform(0.1, 0.9) if hard else rng.uniform(0.15, 0.55)),
            "facing": float(rng.choice([-1, 1])),
            "wing": float(rng.uniform(0, 1)),
            "colour": colours[int(rng.integers(0, len(colours)))],
            "blur": float(rng.uniform(0.02, 0.035) if hard else rng.uniform(0.008, 0.015)),
            "opacity": float(rng.uniform(0.6, 0.8) if hard else rng.uniform(0.95, 1.0)),
        }
    if kind == "black":
        return {"level": float(rng.uniform(0.1, 0.16) if hard else rng.uniform(0.0, 0.02))}
    if kind == "washed_out":
        return {"keep": float(rng.uniform(0.4, 0.5) if hard else rng.uniform(0.08, 0.2))}
    return {}


# --- drawing -------------------------------------------------------------------------------------


def person_sprite(cam: Camera, params: dict):
    """(top, left, rgb albedo, alpha) of a person standing at (X, Z) on the lawn."""
    Z, X = params["Z"], params["X"]
    ppm = cam.px_per_m(Z)
    hgt = 1.72 * ppm
    w, h = int(np.ceil(0.8 * ppm)) + 4, int(np.ceil(hgt)) + 4
    ss = 3
    rgba = Image.new("RGBA", (w * ss, h * ss), (0, 0, 0, 0))
    d = ImageDraw.Draw(rgba)
    m = lambda v: v * ppm * ss  # noqa: E731  metres -> supersampled pixels
    cx = w * ss / 2
    base = (h - 2) * ss
    stride = params["stride"]
    legs = tuple(params["leg_colour"]) + (255,)
    top = tuple(params["top_colour"]) + (255,)
    skin = tuple(params["skin"]) + (255,)
    for sgn in (-1, 1):
        foot = cx + sgn * m(0.08 + stride * 0.5)
        d.polygon(
            [
                (cx + sgn * m(0.03), base - m(0.85)),
                (cx + sgn * m(0.17), base - m(0.85)),
                (foot + sgn * m(0.06), base),
                (foot - sgn * m(0.06), base),
            ],
            fill=legs,
        )
    d.rounded_rectangle(
        [cx - m(0.2), base - m(1.45), cx + m(0.2), base - m(0.8)], radius=m(0.07), fill=top
    )
    for sgn in (-1, 1):
        d.polygon(
            [
                (cx + sgn * m(0.17), base - m(1.42)),
                (cx + sgn * m(0.25), base - m(1.40)),
                (cx + sgn * m(0.27), base - m(0.92)),
                (cx + sgn * m(0.19), base - m(0.92)),
            ],
            fill=top,
        )
    d.ellipse([cx - m(0.1), base - m(1.72), cx + m(0.1), base - m(1.47)], fill=skin)
    d.chord(
        [cx - m(0.105), base - m(1.73), cx + m(0.105), base - m(1.55)],
        180,
        360,
        fill=(60, 45, 35, 255),
    )
    small = rgba.resize((w, h), Image.BOX)
    arr = np.asarray(small, np.float32) / 255.0
    rgb = arr[..., :3] ** 2.2
    shade = np.linspace(1.1, 0.8, w, dtype=np.float32)[None, :, None]
    if params["facing"] < 0:
        shade = shade[:, ::-1]
    top_px = int(round(float(cam.y(Z, 0.0)) - h + 2))
    left_px = int(round(float(cam.x(X, Z)) - w / 2))
    return top_px, left_px, rgb * shade, arr[..., 3]


def fox_sprite(cam: Camera, params: dict):
    """(top, left, rgb albedo, alpha) of a red fox on the lawn, side on."""
    Z, X = params["Z"], params["X"]
    ppm = cam.px_per_m(Z)
    w, h = int(np.ceil(1.35 * ppm)) + 4, int(np.ceil(0.62 * ppm)) + 4
    ss = 3
    rgba = Image.new("RGBA", (w * ss, h * ss), (0, 0, 0, 0))
    d = ImageDraw.Draw(rgba)
    m = lambda v: v * ppm * ss  # noqa: E731
    base = (h - 2) * ss
    x0 = 2 * ss + m(0.45)  # body starts after the tail
    fur = (196, 92, 36, 255)
    dark = (50, 35, 30, 255)
    d.ellipse([x0, base - m(0.45), x0 + m(0.62), base - m(0.2)], fill=fur)  # body
    d.ellipse([2 * ss, base - m(0.36), x0 + m(0.1), base - m(0.2)], fill=fur)  # tail
    d.ellipse(
        [2 * ss, base - m(0.33), 2 * ss + m(0.12), base - m(0.23)], fill=(240, 235, 225, 255)
    )  # tail tip
    hx = x0 + m(0.55)
    d.polygon(
        [(hx, base - m(0.47)), (hx + m(0.26), base - m(0.36)), (hx + m(0.05), base - m(0.28))],
        fill=fur,
    )  # head
    d.polygon(
        [
            (hx + m(0.02), base - m(0.47)),
            (hx + m(0.05), base - m(0.58)),
            (hx + m(0.1), base - m(0.45)),
        ],
        fill=dark,
    )  # ear
    d.ellipse(
        [hx + m(0.02), base - m(0.36), hx + m(0.16), base - m(0.27)], fill=(235, 230, 220, 255)
    )  # chest
    for lx in (x0 + m(0.06), x0 + m(0.16), x0 + m(0.44), x0 + m(0.54)):
        d.rectangle([lx, base - m(0.25), lx + m(0.045), base], fill=dark)  # legs
    small = rgba.resize((w, h), Image.BOX)
    arr = np.asarray(small, np.float32) / 255.0
    if params["facing"] < 0:
        arr = arr[:, ::-1]
    top_px = int(round(float(cam.y(Z, 0.0)) - h + 2))
    left_px = int(round(float(cam.x(X, Z)) - w / 2))
    return top_px, left_px, arr[..., :3] ** 2.2, arr[..., 3]


def knock(image: Image.Image, params: dict) -> Image.Image:
    """The camera knocked: the view rotated and shifted, zoomed just enough to fill the frame."""
    W, H = image.size
    angle = np.radians(params["angle"])
    dx, dy = params["dx"] * W, params["dy"] * H
    zoom = (
        1.0
        + 2 * max(abs(params["dx"]), abs(params["dy"]))
        + abs(np.sin(angle)) * (W / H + H / W) * 0.5
        + 0.01
    )
    cos, sin = np.cos(angle) / zoom, np.sin(angle) / zoom
    cx, cy = W / 2, H / 2
    # Inverse map: output (x, y) -> input (a x + b y + c, d x + e y + f).
    a, b, d, e = cos, -sin, sin, cos
    c = cx - a * (cx + dx) - b * (cy + dy)
    f = cy - d * (cx + dx) - e * (cy + dy)
    return image.transform((W, H), Image.AFFINE, (a, b, c, d, e, f), resample=Image.BILINEAR)


def bird(image: Image.Image, params: dict) -> Image.Image:
    """A bird flying right past the lens: big, out of focus, wings spread, lit from the sky."""
    W, H = image.size
    size = params["size"] * W
    cx, cy = params["x"] * W, params["y"] * H
    flip = -1 if params["facing"] < 0 else 1
    body = Image.new("L", (W, H), 0)
    wings = Image.new("L", (W, H), 0)
    db, dw = ImageDraw.Draw(body), ImageDraw.Draw(wings)
    fx = lambda dx: cx + flip * dx * size  # noqa: E731  body-relative x, mirrored by `facing`

    def box(x0, x1, y0, y1):
        return [min(fx(x0), fx(x1)), cy + y0 * size, max(fx(x0), fx(x1)), cy + y1 * size]

    db.ellipse(box(-0.45, 0.4, -0.14, 0.16), fill=255)  # body
    db.ellipse(box(0.3, 0.58, -0.2, 0.06), fill=255)  # head
    db.polygon(
        [(fx(-0.4), cy), (fx(-0.8), cy - size * 0.08), (fx(-0.78), cy + size * 0.12)], fill=255
    )  # tail
    up = 0.35 + 0.65 * params["wing"]  # wing beat: how high the wings are raised
    for reach, sweep in ((1.0, 1.0), (0.7, -0.6)):  # far wing up and back; near wing lower
        tip_y = -sweep * up * 0.75 * reach
        dw.polygon(
            [
                (fx(0.12), cy - size * 0.06),
                (fx(-0.05), cy + size * (tip_y * 0.5)),
                (fx(-0.42 * reach), cy + size * tip_y),
                (fx(-0.3 * reach), cy + size * (tip_y * 0.55)),
                (fx(-0.2), cy + size * 0.02),
            ],
            fill=255,
        )
    blur = ImageFilter.GaussianBlur(params["blur"] * W)
    body, wings = body.filter(blur), wings.filter(blur)
    alpha = lambda m: m.point(lambda p: int(p * params["opacity"]))  # noqa: E731
    sky = np.asarray(image.reduce(8), np.float32)[: max(1, H // 24)].mean(axis=(0, 1))
    base = np.array(params["colour"], np.float32) * (0.25 + 0.6 * sky.mean() / 255)
    out = Image.composite(Image.new("RGB", (W, H), tuple(int(c) for c in base)), image, alpha(body))
    dark = tuple(int(c) for c in base * 0.55)
    return Image.composite(Image.new("RGB", (W, H), dark), out, alpha(wings))


def drops(image: Image.Image, params: dict) -> Image.Image:
    """Water drops on the lens: blurred, slightly brighter discs with darker rims."""
    W, H = image.size
    rng = np.random.default_rng(params["drop_seed"])
    small = params["n_drops"] <= 4  # the hard variant: few small, faint drops
    gain, lift = (1.06, 4) if small else (1.12, 10)
    blurred = image.filter(ImageFilter.GaussianBlur(0.018 * W)).point(
        lambda p: min(255, int(p * gain + lift))
    )
    mask = Image.new("L", (W, H), 0)
    rim = Image.new("L", (W, H), 0)
    dm, dr = ImageDraw.Draw(mask), ImageDraw.Draw(rim)
    for _ in range(params["n_drops"]):
        r = H * (rng.uniform(0.03, 0.06) if small else rng.uniform(0.05, 0.11))
        x, y = rng.uniform(0.05, 0.95) * W, rng.uniform(0.05, 0.95) * H
        ry = r * rng.uniform(0.85, 1.25)
        dm.ellipse([x - r, y - ry, x + r, y + ry], fill=255)
        dr.ellipse([x - r, y - ry, x + r, y + ry], outline=150, width=max(1, int(r * 0.15)))
    mask = mask.filter(ImageFilter.GaussianBlur(0.004 * W + 0.5))
    rim = rim.filter(ImageFilter.GaussianBlur(0.004 * W + 0.5))
    out = Image.composite(blurred, image, mask)
    return Image.composite(
        Image.new("RGB", (W, H), (20, 20, 22)),
        out,
        rim.point(lambda p: p // 2 if small else p * 7 // 10),
    )


def black(pixels: np.ndarray, params: dict, rng: np.random.Generator) -> np.ndarray:
    """A dropped exposure: almost nothing left of the picture."""
    out = pixels.astype(np.float32) * params["level"] + rng.normal(2.0, 1.2, pixels.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


def washed_out(pixels: np.ndarray, params: dict) -> np.ndarray:
    """Blown exposure: everything pushed towards white."""
    keep = params["keep"]
    out = 255.0 - (255.0 - pixels.astype(np.float32)) * keep
    return np.clip(out, 0, 255).astype(np.uint8)
