"""The static garden, built once per size: albedo, materials, depth, ground geometry, textures.

A fixed camera 1.9 m up looks north over a back garden: lawn with mowing stripes, stepping
stones, a bird bath, flower beds, a wooden fence, a shed on the right, a big tree on the left, a
blossom tree, and a neighbour's roof and trees beyond. Everything is laid out in metres on the
ground plane and projected with a pin-hole camera, so shadows (see `shadows`) and fog (by depth)
follow the real geometry. Colours are linear RGB albedo (sRGB values ** 2.2). The layout is the
same for every seed: it is one camera in one garden.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from scipy.ndimage import gaussian_filter

V_HORIZON = 0.30  # horizon height as a fraction of the image height (from the top)
CAM_HEIGHT = 1.9  # metres
FOCAL = 1.0  # focal length in image heights
SKY_DEPTH = 400.0  # metres, for fog on the sky
SCENE_SEED = 20240402

# Materials: how a pixel takes direct sunlight (see lighting.direct_factors).
GROUND, FACING, WEST, FOLIAGE, FAR, SKY = range(6)


def srgb(*rgb: float) -> np.ndarray:
    """Linear albedo from 0..255 sRGB-ish values."""
    return (np.asarray(rgb, dtype=np.float32) / 255.0) ** 2.2


@dataclass
class Camera:
    """Pin-hole projection between ground metres (X east, Z north, h up) and pixels."""

    width: int
    height: int

    @property
    def aspect(self) -> float:
        return self.width / self.height

    def x(self, X, Z):
        return (0.5 + np.asarray(X) * FOCAL / (np.asarray(Z) * self.aspect)) * self.width

    def y(self, Z, h=0.0):
        return (V_HORIZON + (CAM_HEIGHT - np.asarray(h)) * FOCAL / np.asarray(Z)) * self.height

    def px_per_m(self, Z) -> float:
        return FOCAL * self.height / Z


@dataclass
class Sprite:
    """A layer drawn over the base each frame (canopies that sway): RGB albedo + alpha in a box."""

    top: int
    left: int
    rgb: np.ndarray  # (h, w, 3) linear albedo
    alpha: np.ndarray  # (h, w)
    depth: float  # metres, for fog
    sway: float  # how much the top moves in wind, in pixels at full wind


@dataclass
class Casters:
    """Shadow casters on the lawn, in metres."""

    cylinders: list = field(default_factory=list)  # (X, Z, radius, height)
    spheres: list = field(default_factory=list)  # (X, Z, centre height, radius, density)
    boxes: list = field(default_factory=list)  # (x0, x1, z0, z1, height)


@dataclass
class Scene:
    width: int
    height: int
    albedo: np.ndarray  # (H, W, 3) float32 linear
    material: np.ndarray  # (H, W) uint8
    cover: np.ndarray  # (H, W) float32: 1 = garden, 0 = sky
    ao: np.ndarray  # (H, W, 1) float32 ambient occlusion
    depth: np.ndarray  # (H, W) float32 metres
    is_ground: np.ndarray  # (H, W) float32 1 on lawn/beds/stones
    ground_x: np.ndarray  # (H, W) float32 metres (0 above the horizon)
    ground_z: np.ndarray  # (H, W) float32 metres (large above the horizon)
    sky_rows: int
    sprites: list
    casters: Casters
    clouds: np.ndarray  # (sky_rows, 3W) float32 noise, periodic in x
    cloud_levels: np.ndarray  # 101 quantiles of `clouds`
    streaks: list  # rain streak layers (H, W) float32
    flakes: list  # snow flake layers (H, W) float32
    noise: np.ndarray  # (H + 32, W + 32, 3) float32 standard normal bank
    vignette: np.ndarray  # (H, W, 1) float32
    wet_albedo: np.ndarray  # albedo with the ground wet
    snow_albedo: np.ndarray  # albedo with the ground under light snow

    @property
    def camera(self) -> Camera:
        return Camera(self.width, self.height)


# --- textures -----------------------------------------------------------------------------------


def value_noise(
    shape: tuple[int, int], cell: float, rng: np.random.Generator, wrap_x: bool = False
) -> np.ndarray:
    """Smooth noise in [0, 1] with features about `cell` pixels across (bicubic-upsampled grid)."""
    h, w = shape
    gh, gw = max(2, int(np.ceil(h / cell)) + 3), max(2, int(np.ceil(w / cell)) + 3)
    grid = rng.random((gh, gw)).astype(np.float32)
    if wrap_x:
        gw = max(2, int(round(w / cell)))
        grid = rng.random((gh, gw)).astype(np.float32)
        grid = np.concatenate([grid[:, -2:], grid, grid[:, :3]], axis=1)
        big = Image.fromarray(grid, "F").resize(
            (int(round(cell * grid.shape[1])), int(round(cell * gh))), Image.BICUBIC
        )
        arr = np.asarray(big, dtype=np.float32)
        start = int(round(2 * cell))
        period = arr[:h, start : start + int(round(cell * gw))]
        reps = int(np.ceil(w / period.shape[1])) + 1
        return np.tile(period, (1, reps))[:, :w]
    big = Image.fromarray(grid, "F").resize(
        (int(round(cell * gw)), int(round(cell * gh))), Image.BICUBIC
    )
    return np.asarray(big, dtype=np.float32)[:h, :w]


def fractal(shape, cell, rng, octaves=4, wrap_x=False) -> np.ndarray:
    total = np.zeros(shape, np.float32)
    amp, norm = 1.0, 0.0
    for _ in range(octaves):
        total += amp * value_noise(shape, max(cell, 1.5), rng, wrap_x=wrap_x)
        norm += amp
        amp *= 0.5
        cell /= 2
    return total / norm


def _smooth(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


class _Canvas:
    """Anti-aliased polygon/ellipse masks drawn at 2x and reduced."""

    def __init__(self, width: int, height: int, ss: int = 2):
        self.w, self.h, self.ss = width, height, ss

    def new(self):
        img = Image.new("L", (self.w * self.ss, self.h * self.ss), 0)
        return img, ImageDraw.Draw(img)

    def done(self, img) -> np.ndarray:
        small = img.resize((self.w, self.h), Image.BOX)
        return np.asarray(small, dtype=np.float32) / 255.0

    def poly(self, points, blur: float = 0.0) -> np.ndarray:
        img, draw = self.new()
        draw.polygon([(x * self.ss, y * self.ss) for x, y in points], fill=255)
        if blur:
            img = img.filter(ImageFilter.GaussianBlur(blur * self.ss))
        return self.done(img)

    def ellipses(self, boxes, blur: float = 0.0) -> np.ndarray:
        img, draw = self.new()
        for x0, y0, x1, y1 in boxes:
            draw.ellipse([x0 * self.ss, y0 * self.ss, x1 * self.ss, y1 * self.ss], fill=255)
        if blur:
            img = img.filter(ImageFilter.GaussianBlur(blur * self.ss))
        return self.done(img)


def _paint(albedo, material, cover, depth, mask, colour, mat, dist):
    """Painter's algorithm: `colour` (H,W,3 or 3) where `mask` says, in front of what is there."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    m = mask[box]
    colour = np.asarray(colour, np.float32)
    if colour.ndim == 3:
        colour = colour[box]
    a = albedo[box]
    a *= 1 - m[..., None]
    a += m[..., None] * colour
    sel = m > 0.5
    material[box][sel] = mat
    depth[box][sel] = dist
    np.maximum(cover[box], m, out=cover[box])


# --- the garden ---------------------------------------------------------------------------------


def build_scene(size: tuple[int, int]) -> Scene:
    """Everything that does not change between frames, for an image of `size` (width, height)."""
    W, H = int(size[0]), int(size[1])
    if W < 32 or H < 24:
        raise ValueError(f"demo frames must be at least 32x24 pixels, got {W}x{H}")
    rng = np.random.default_rng(SCENE_SEED)
    cam = Camera(W, H)
    canvas = _Canvas(W, H)
    s = H / 360.0  # feature scale relative to the default size

    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    u = (xx + 0.5) / W
    v = (yy + 0.5) / H
    below = v > V_HORIZON + 0.004
    dv = np.where(below, v - V_HORIZON, 1.0)
    gz = np.where(below, CAM_HEIGHT * FOCAL / dv, 1e4).astype(np.float32)
    gx = np.where(below, (u - 0.5) * cam.aspect * gz / FOCAL, 0.0).astype(np.float32)

    albedo = np.zeros((H, W, 3), np.float32)
    material = np.full((H, W), SKY, np.uint8)
    cover = np.zeros((H, W), np.float32)
    depth = np.full((H, W), SKY_DEPTH, np.float32)

    # Distant tree line and a neighbour's roof beyond the fence.
    cols = np.arange(W)
    line = fractal((1, W), 60 * s, rng, octaves=4)[0]
    tops = (0.19 + 0.09 * line) * H
    bump = np.abs(np.sin(cols / (9.0 * s) + 3 * line)) * 6 * s
    tops = tops - bump
    far_mask = _smooth((yy - tops[None, :]) / 1.5 + 0.5) * (v < V_HORIZON + 0.05)
    leaf = fractal((H, W), 6 * s, rng, octaves=3)
    far_col = srgb(58, 84, 56)[None, None, :] * (0.65 + 0.7 * leaf[..., None])
    far_col = far_col * 0.85 + srgb(120, 140, 160) * 0.15  # aerial perspective
    _paint(albedo, material, cover, depth, far_mask, far_col, FAR, 35.0)

    roof_l, roof_r = 0.34 * W, 0.58 * W
    eave, ridge = 0.262 * H, 0.200 * H
    roof = canvas.poly(
        [
            (roof_l, eave),
            (roof_l + 0.04 * W, ridge),
            (roof_r - 0.04 * W, ridge),
            (roof_r, eave),
            (roof_r, 0.33 * H),
            (roof_l, 0.33 * H),
        ]
    )
    tiles = 0.8 + 0.25 * (np.sin(yy / (2.2 * s)) > 0.6) + 0.15 * fractal((H, W), 4 * s, rng, 2)
    roof_col = srgb(96, 84, 88)[None, None, :] * tiles[..., None]
    wall = canvas.poly(
        [
            (roof_l + 0.01 * W, eave),
            (roof_r - 0.01 * W, eave),
            (roof_r - 0.01 * W, 0.33 * H),
            (roof_l + 0.01 * W, 0.33 * H),
        ]
    )
    _paint(albedo, material, cover, depth, roof, roof_col, FAR, 30.0)
    _paint(albedo, material, cover, depth, wall, srgb(170, 150, 130), FAR, 30.0)
    chimney = canvas.poly(
        [
            (0.50 * W, ridge + 0.01 * H),
            (0.50 * W, 0.17 * H),
            (0.525 * W, 0.17 * H),
            (0.525 * W, ridge + 0.01 * H),
        ]
    )
    _paint(albedo, material, cover, depth, chimney, srgb(140, 80, 60), FAR, 30.0)

    # Ground: lawn with mowing stripes, beds, stepping stones.
    grass = fractal((H, W), 3 * s, rng, octaves=2)
    stripe = (np.floor(gx / 0.7) % 2).astype(np.float32)
    lawn = srgb(88, 124, 58)[None, None, :] * (
        0.78 + 0.45 * grass[..., None] + 0.12 * stripe[..., None]
    )
    patch = fractal((H, W), 50 * s, rng, octaves=3)
    lawn = lawn * (0.85 + 0.3 * patch[..., None]) + srgb(130, 120, 60) * 0.12 * patch[..., None]
    # The fence hides the ground beyond it: lawn starts below the fence top.
    fz, fh = 11.0, 1.8
    f_top, f_base = float(cam.y(fz, fh)), float(cam.y(fz, 0.0))
    visible = below & (yy >= np.floor(f_top))
    ground = visible.astype(np.float32)
    _paint(albedo, material, cover, depth, ground, lawn, GROUND, 0.0)
    ground_w = ground.copy()  # how much of each pixel is still visible ground

    def paint(mask, colour, mat, dist):
        _paint(albedo, material, cover, depth, mask, colour, mat, dist)
        ground_w[:] *= 1 - mask

    depth[visible] = np.sqrt(gx[visible] ** 2 + gz[visible] ** 2 + CAM_HEIGHT**2)

    soil_tex = fractal((H, W), 2 * s, rng, octaves=2)
    soil = srgb(88, 62, 44)[None, None, :] * (0.7 + 0.6 * soil_tex[..., None])
    back_bed = _smooth((gz - 9.2) / 0.1) * ground
    left_edge = -3.3 + 0.35 * np.sin(gz * 0.8)
    left_bed = _smooth((left_edge - gx) / 0.08) * ground * (gz > 2.0)
    beds = np.maximum(back_bed, left_bed)
    albedo[:] = albedo * (1 - beds[..., None]) + soil * beds[..., None]

    stones = np.zeros((H, W), np.float32)
    for i in range(7):
        t = i / 6
        sx, sz = 0.2 + 3.0 * t, 3.0 + 4.1 * t
        q = ((gx - sx) / 0.26) ** 2 + ((gz - sz) / 0.2) ** 2
        stones = np.maximum(stones, _smooth((1 - q) * 6))
    stone_tex = fractal((H, W), 3 * s, rng, octaves=2)
    stone_col = srgb(158, 150, 138)[None, None, :] * (0.8 + 0.35 * stone_tex[..., None])
    albedo[:] = albedo * (1 - stones[..., None]) + stone_col * stones[..., None]

    # Fence at Z = 11 m: vertical boards, two rails.
    fence = canvas.poly([(0, f_top), (W, f_top), (W, f_base), (0, f_base)])
    board_w = cam.px_per_m(fz) * 0.15
    board = np.floor(xx / board_w)
    board_shade = (np.sin(board * 12.9898) * 43758.5453) % 1.0
    grain = fractal((H, W), 2 * s, rng, octaves=2)
    fence_col = srgb(150, 104, 68)[None, None, :] * (
        0.75 + 0.3 * board_shade[..., None] + 0.25 * grain[..., None]
    )
    gap = (xx % board_w) < max(1.0, 0.08 * board_w)
    fence_col[gap] *= 0.35
    for rail_h in (0.35, 1.45):
        ry = float(cam.y(fz, rail_h))
        rail = np.abs(yy - ry) < max(1.0, 1.3 * s)
        fence_col[rail] *= 0.7
    paint(fence, fence_col, FACING, fz)

    # Shrubs and flowers in the back bed, in front of the fence.
    shrub_boxes = []
    for X in np.linspace(-9, 7.5, 15) + rng.normal(0, 0.4, 15):
        Z = 10.2 + rng.uniform(-0.4, 0.4)
        r = rng.uniform(0.35, 0.7)
        hgt = rng.uniform(0.5, 1.0)
        cx, cy = float(cam.x(X, Z)), float(cam.y(Z, hgt * 0.5))
        rx, ry = r * cam.px_per_m(Z), hgt * 0.6 * cam.px_per_m(Z)
        shrub_boxes.append((cx - rx, cy - ry, cx + rx, cy + ry))
    shrubs = canvas.ellipses(shrub_boxes)
    shrub_tex = fractal((H, W), 3 * s, rng, octaves=3)
    shrub_col = srgb(62, 104, 46)[None, None, :] * (0.55 + 0.8 * shrub_tex[..., None])
    paint(shrubs * (v > V_HORIZON), shrub_col, FOLIAGE, 10.2)

    flower_palette = [
        srgb(220, 40, 50),
        srgb(245, 200, 40),
        srgb(150, 70, 180),
        srgb(240, 240, 235),
        srgb(250, 130, 40),
    ]
    for bed_pts in (_bed_points(rng, 160, back=True), _bed_points(rng, 140, back=False)):
        for (X, Z, hgt), ci in zip(bed_pts, rng.integers(0, len(flower_palette), len(bed_pts))):
            cx, cy = float(cam.x(X, Z)), float(cam.y(Z, hgt))
            if not (0 <= cx < W and 0 <= cy < H):
                continue
            r = max(0.6, 0.07 * cam.px_per_m(Z))
            x0, x1 = int(max(0, cx - r)), int(min(W, cx + r + 1))
            y0, y1 = int(max(0, cy - r)), int(min(H, cy + r + 1))
            if x1 <= x0 or y1 <= y0:
                continue
            dd = np.hypot(xx[y0:y1, x0:x1] - cx, yy[y0:y1, x0:x1] - cy)
            m = np.clip(r + 0.5 - dd, 0, 1)[..., None]
            albedo[y0:y1, x0:x1] = albedo[y0:y1, x0:x1] * (1 - m) + flower_palette[ci] * m

    # Bird bath on the lawn.
    bx, bz = -1.3, 6.2
    ppm = cam.px_per_m(bz)
    cxb = float(cam.x(bx, bz))
    ped = canvas.poly(
        [
            (cxb - 0.07 * ppm, float(cam.y(bz, 0.0))),
            (cxb - 0.05 * ppm, float(cam.y(bz, 0.72))),
            (cxb + 0.05 * ppm, float(cam.y(bz, 0.72))),
            (cxb + 0.07 * ppm, float(cam.y(bz, 0.0))),
        ]
    )
    bowl = canvas.ellipses(
        [(cxb - 0.32 * ppm, float(cam.y(bz, 0.82)), cxb + 0.32 * ppm, float(cam.y(bz, 0.68)))]
    )
    bath_col = srgb(175, 168, 155)
    paint(ped, bath_col, FACING, bz)
    paint(bowl, bath_col * 1.05, FACING, bz)

    # Shed on the right: west side, front, door, window, pent roof.
    x0s, x1s, z0s, z1s, hf, hb = 3.0, 5.6, 7.0, 9.0, 2.2, 2.45
    p = lambda X, Z, h: (float(cam.x(X, Z)), float(cam.y(Z, h)))  # noqa: E731
    side = canvas.poly([p(x0s, z0s, 0), p(x0s, z1s, 0), p(x0s, z1s, hb), p(x0s, z0s, hf)])
    front = canvas.poly([p(x0s, z0s, 0), p(x1s, z0s, 0), p(x1s, z0s, hf), p(x0s, z0s, hf)])
    plank = (np.sin(yy / (1.6 * s)) > 0.75).astype(np.float32)
    shed_tex = 0.85 + 0.2 * fractal((H, W), 4 * s, rng, octaves=2) - 0.12 * plank
    shed_col = srgb(112, 140, 118)[None, None, :] * shed_tex[..., None]
    paint(side, shed_col, WEST, 8.0)
    paint(front, shed_col, FACING, z0s)
    window = canvas.poly(
        [p(x0s, 7.5, 1.05), p(x0s, 8.5, 1.05), p(x0s, 8.5, 1.75), p(x0s, 7.5, 1.75)]
    )
    paint(window, srgb(235, 235, 225), WEST, 8.0)
    glass = canvas.poly(
        [p(x0s, 7.56, 1.1), p(x0s, 8.44, 1.1), p(x0s, 8.44, 1.7), p(x0s, 7.56, 1.7)]
    )
    paint(glass, srgb(60, 70, 85), WEST, 8.0)
    door = canvas.poly([p(3.35, z0s, 0), p(4.15, z0s, 0), p(4.15, z0s, 1.9), p(3.35, z0s, 1.9)])
    paint(door, shed_col * 0.8, FACING, z0s)
    xl, xr, zf, zb = x0s - 0.15, x1s + 0.15, z0s - 0.15, z1s + 0.15  # roof overhangs the walls
    roof_s = canvas.poly(
        [
            p(xl, zf, hf + 0.02),
            p(xr, zf, hf + 0.02),
            p(xr, zf, hf + 0.14),
            p(xl, zf, hf + 0.14),
            p(xl, zb, hb + 0.14),
            p(xl, zb, hb + 0.02),
        ]
    )
    paint(roof_s, srgb(52, 50, 52), FACING, z0s)

    # Tree trunks (the canopies are sprites so they can sway).
    trees = [(-4.0, 8.5, 0.22, 3.4), (1.8, 9.6, 0.09, 1.9)]
    bark = fractal((H, W), 2 * s, rng, octaves=2)
    for X, Z, r, h in trees:
        cx = float(cam.x(X, Z))
        ppm = cam.px_per_m(Z)
        trunk = canvas.poly(
            [
                (cx - r * 1.3 * ppm, float(cam.y(Z, 0))),
                (cx - r * 0.7 * ppm, float(cam.y(Z, h))),
                (cx + r * 0.7 * ppm, float(cam.y(Z, h))),
                (cx + r * 1.3 * ppm, float(cam.y(Z, 0))),
            ]
        )
        trunk_col = srgb(92, 80, 70)[None, None, :] * (0.7 + 0.5 * bark[..., None])
        paint(trunk, trunk_col, FACING, Z)

    # Shadows fall only where the ground is still what the camera sees.
    is_ground = ground_w.astype(np.float32)

    # Ambient occlusion: darker near the ground under things and at the fence foot.
    ao = np.ones((H, W), np.float32)
    ao -= 0.35 * np.exp(-(((v - f_base / H) * H / (10 * s)) ** 2)) * (v > f_base / H)
    ao -= 0.3 * _smooth(1 - np.hypot((gx - (-4.0)) / 3.0, (gz - 8.5) / 2.0)) * ground
    ao = np.clip(ao, 0.45, 1.0)
    ao = gaussian_filter(ao, 3 * s).astype(np.float32)

    sprites = [
        _canopy(cam, rng, -4.0, 8.5, 4.3, 2.35, srgb(58, 98, 42), sway=7 * s),
        _canopy(cam, rng, 1.8, 9.6, 2.45, 1.05, srgb(236, 178, 196), sway=4 * s, leaf_cell=1.6 * s),
    ]

    casters = Casters(
        cylinders=[
            (-4.0, 8.5, 0.22, 3.4),
            (1.8, 9.6, 0.09, 1.9),
            (-1.3, 6.2, 0.08, 0.72),
            (-1.3, 6.2, 0.3, 0.82),
            (5.8, 1.2, 0.28, 3.2),
        ],
        spheres=[
            (-4.0, 8.5, 4.3, 2.35, 0.85),
            (1.8, 9.6, 2.45, 1.05, 0.7),
            (5.8, 1.2, 5.2, 2.6, 0.85),
            (-6.5, 1.0, 4.0, 2.0, 0.8),
        ],
        boxes=[(x0s, x1s, z0s, z1s, 2.3)],
    )

    sky_rows = int(np.ceil((V_HORIZON + 0.06) * H))
    clouds = fractal((sky_rows, 3 * W), 90 * s, rng, octaves=5, wrap_x=True)
    stretch = np.linspace(1.0, 0.6, sky_rows, dtype=np.float32)[:, None]  # flatter near horizon
    clouds = clouds * 0.8 + 0.2 * clouds * stretch
    levels = np.quantile(clouds, np.linspace(0, 1, 101)).astype(np.float32)

    streaks = [_streaks(W, H, rng, s) for _ in range(3)]
    flakes = [_flakes(W, H, rng, s) for _ in range(2)]
    noise = rng.standard_normal((H + 32, W + 32, 3)).astype(np.float32)
    r2 = ((u - 0.5) * cam.aspect) ** 2 + (v - 0.5) ** 2
    vignette = (1.0 - 0.35 * r2).astype(np.float32)[..., None]

    wet = albedo.copy()
    g = is_ground[..., None]
    wet = albedo * (1 - g) + (albedo**1.15) * 0.62 * g
    snow_tex = 0.7 * fractal((H, W), 40 * s, rng, octaves=3) + 0.3 * grass
    snow_cover = _smooth((snow_tex - 0.3) * 5)[..., None] * g
    snow = albedo * (1 - snow_cover) + srgb(235, 238, 245) * snow_cover

    return Scene(
        W,
        H,
        albedo,
        material,
        cover,
        ao[..., None],
        depth,
        is_ground,
        gx.astype(np.float32),
        gz.astype(np.float32),
        sky_rows,
        sprites,
        casters,
        clouds.astype(np.float32),
        levels,
        streaks,
        flakes,
        noise,
        vignette,
        wet.astype(np.float32),
        snow.astype(np.float32),
    )


def _bed_points(rng, n, back: bool):
    if back:
        X = rng.uniform(-10, 9, n)
        Z = rng.uniform(9.3, 10.8, n)
    else:
        Z = rng.uniform(2.5, 9.0, n)
        X = -3.4 + 0.35 * np.sin(Z * 0.8) - rng.uniform(0.1, 2.0, n)
    h = rng.uniform(0.15, 0.5, n)
    return list(zip(X, Z, h))


def _canopy(cam: Camera, rng, X, Z, hc, R, colour, sway, leaf_cell=None) -> Sprite:
    """A tree crown: many overlapping blobs, leafy edges, lighter on top."""
    ppm = cam.px_per_m(Z)
    cx, cy = float(cam.x(X, Z)), float(cam.y(Z, hc))
    rx, ry = R * ppm * 1.25, R * ppm * 1.05
    left, top = int(np.floor(cx - rx - 4)), int(np.floor(cy - ry - 4))
    w, h = int(np.ceil(2 * rx + 8)), int(np.ceil(2 * ry + 8))
    ss = 2
    img = Image.new("L", (w * ss, h * ss), 0)
    draw = ImageDraw.Draw(img)
    for _ in range(40):
        a, d = rng.uniform(0, 2 * np.pi), np.sqrt(rng.uniform(0, 1))
        bx = (cx - left) + np.cos(a) * d * rx * 0.7
        by = (cy - top) + np.sin(a) * d * ry * 0.7
        br = rng.uniform(0.25, 0.45) * min(rx, ry)
        draw.ellipse([(bx - br) * ss, (by - br) * ss, (bx + br) * ss, (by + br) * ss], fill=255)
    mask = np.asarray(img.resize((w, h), Image.BOX), np.float32) / 255.0
    cell = leaf_cell or 2.2 * cam.height / 360.0
    leaf = fractal((h, w), cell, rng, octaves=2)
    soft = gaussian_filter(mask, 2.5 * cell)
    alpha = np.clip(soft * 1.8 - 0.9 * leaf, 0.0, 1.0) * (mask > 0.02)
    shade = fractal((h, w), 10 * cam.height / 360.0, rng, octaves=3)
    yy = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    tone = (0.55 + 0.55 * leaf + 0.4 * shade - 0.3 * yy)[..., None]
    rgb = (colour[None, None, :] * tone).astype(np.float32)
    return Sprite(top, left, rgb, alpha.astype(np.float32), float(Z), float(sway))


def _streaks(W, H, rng, s) -> np.ndarray:
    """Falling rain: thin bright slanted lines with motion blur."""
    img = Image.new("L", (W, H), 0)
    draw = ImageDraw.Draw(img)
    n = int(700 * (W * H) / (640 * 360))
    slant = rng.uniform(0.12, 0.25)
    for _ in range(n):
        x, y = rng.uniform(-0.1 * W, W), rng.uniform(-0.1 * H, H)
        length = rng.uniform(8, 22) * s
        draw.line(
            [(x, y), (x + slant * length, y + length)],
            fill=int(rng.integers(60, 200)),
            width=max(1, int(round(s))),
        )
    img = img.filter(ImageFilter.GaussianBlur(0.6 * s))
    return np.asarray(img, np.float32) / 255.0


def _flakes(W, H, rng, s) -> np.ndarray:
    img = Image.new("L", (W, H), 0)
    draw = ImageDraw.Draw(img)
    for _ in range(int(500 * (W * H) / (640 * 360))):
        x, y, r = rng.uniform(0, W), rng.uniform(0, H), rng.uniform(0.6, 2.2) * s
        draw.ellipse([x - r, y - r, x + r, y + r], fill=int(rng.integers(120, 255)))
    img = img.filter(ImageFilter.GaussianBlur(0.7 * s))
    return np.asarray(img, np.float32) / 255.0
