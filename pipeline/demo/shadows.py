"""Shadows on the lawn for a sun position, from the scene's casters in metres.

Computed on a quarter-resolution ground grid (soft edges come free with the upsampling) and
cached per rounded sun position, since the sun retraces nearly the same path every day.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image

from pipeline.demo.scene import Scene

AZIMUTH_STEP = 1.5  # degrees
ELEVATION_STEP = 1.0
MIN_ELEVATION = 2.0  # below this shadows are too long and faint to matter


def _sat(x):
    return np.clip(x, 0.0, 1.0)


def light_fraction(
    gx: np.ndarray, gz: np.ndarray, casters, elevation: float, azimuth: float, soft: float = 0.12
) -> np.ndarray:
    """1 where the ground at (gx, gz) sees the sun, towards 0 in shadow."""
    e = np.radians(max(elevation, MIN_ELEVATION))
    a = np.radians(azimuth)
    dx, dz = -np.sin(a), -np.cos(a)  # shadows point away from the sun
    reach = 1.0 / np.tan(e)
    lit = np.ones_like(gx)
    for X, Z, r, h in casters.cylinders:
        px, pz = gx - X, gz - Z
        t = px * dx + pz * dz
        perp = np.abs(px * dz - pz * dx)
        length = h * reach
        occ = _sat((r - perp) / soft + 0.5) * _sat(t / soft + 0.5) * _sat((length - t) / soft + 0.5)
        lit *= 1 - occ
    for X, Z, hc, R, density in casters.spheres:
        cx, cz = X + dx * hc * reach, Z + dz * hc * reach
        px, pz = gx - cx, gz - cz
        along = (px * dx + pz * dz) * np.sin(e)
        perp = px * dz - pz * dx
        q = np.sqrt(along * along + perp * perp)
        lit *= 1 - density * _sat((R - q) / (soft * 2) + 0.5)
    for x0, x1, z0, z1, h in casters.boxes:
        length = h * reach
        t_lo = np.zeros_like(gx)
        t_hi = np.full_like(gx, length)
        for p, d, lo, hi in ((gx, dx, x0, x1), (gz, dz, z0, z1)):
            if abs(d) < 1e-9:
                inside = (p >= lo) & (p <= hi)
                t_hi = np.where(inside, t_hi, -1.0)
                continue
            ta, tb = (p - lo) / d, (p - hi) / d
            t_lo = np.maximum(t_lo, np.minimum(ta, tb))
            t_hi = np.minimum(t_hi, np.maximum(ta, tb))
        lit *= 1 - _sat((t_hi - t_lo) / soft)
    return lit


class ShadowMaps:
    """Cached full-size shadow maps for one scene (1 = sunlit; 1 off the lawn)."""

    def __init__(self, scene: Scene, factor: int = 4):
        self.scene = scene
        self.factor = factor
        self.row0 = int(np.argmax(scene.is_ground.max(axis=1) > 0))
        gx = scene.ground_x[self.row0 :: factor, ::factor]
        gz = scene.ground_z[self.row0 :: factor, ::factor]
        self.gx, self.gz = gx, gz
        self._cached = lru_cache(maxsize=1024)(self._compute)

    def _compute(self, az_key: int, el_key: int) -> np.ndarray:
        return light_fraction(
            self.gx, self.gz, self.scene.casters, el_key * ELEVATION_STEP, az_key * AZIMUTH_STEP
        ).astype(np.float32)

    def small(self, elevation: float, azimuth: float) -> np.ndarray:
        return self._cached(
            int(round(azimuth / AZIMUTH_STEP)),
            int(round(max(elevation, MIN_ELEVATION) / ELEVATION_STEP)),
        )

    def full(self, small: np.ndarray) -> np.ndarray:
        """Upsample a ground-grid map to the image; 1 above the lawn rows."""
        sc = self.scene
        rows = sc.height - self.row0
        big = np.asarray(
            Image.fromarray(small, "F").resize((sc.width, rows), Image.BILINEAR), np.float32
        )
        out = np.ones((sc.height, sc.width), np.float32)
        out[self.row0 :] = big
        return out
