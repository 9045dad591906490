"""Light for one moment: sun and sky colours from the real sun elevation, cloud and weather.

All values are linear RGB. The sun warms and dims towards the horizon; the sky goes from blue to
a dawn/dusk glow on the sun's side to a dark night with a faint orange town glow under cloud.
Shadows on the lawn come from `shadows`; the camera's auto-exposure is applied in `render`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.demo.scene import FACING, FAR, FOLIAGE, GROUND, SKY, WEST

CAMERA_HEADING = 0.0  # degrees: the camera looks north
H_FOV = 83.0  # degrees across the image at the default 16:9


def _interp(x: float, xs, ys) -> float:
    return float(np.interp(x, xs, ys))


@dataclass(frozen=True)
class Light:
    ambient: np.ndarray  # (3,) sky light on everything
    sun: np.ndarray  # (3,) direct sunlight on a surface facing the sun
    zenith: np.ndarray  # (3,) sky colour overhead
    horizon: np.ndarray  # (3,) sky colour at the horizon
    glow: np.ndarray  # (3,) dawn/dusk glow colour
    glow_u: float  # where the glow is centred, as a fraction of the width
    cloud: np.ndarray  # (3,) lit cloud colour
    fog: np.ndarray  # (3,) colour of fog / haze
    sky_level: float


def sky_level(elevation: float) -> float:
    return _interp(
        elevation,
        [-18, -12, -8, -4, 0, 5, 15, 40],
        [0.0006, 0.002, 0.012, 0.05, 0.16, 0.38, 0.75, 1.0],
    )


def light_at(
    elevation: float, azimuth: float, cloud_cover: float, condition: str, sun_blocked: float
) -> Light:
    """Light for a sun position; `sun_blocked` (0..1) is how much cloud is in front of the sun."""
    cover = float(np.clip(cloud_cover / 100.0, 0, 1))
    level = sky_level(elevation)
    ambient_level = _interp(
        elevation,
        [-18, -12, -6, -3, 0, 5, 15, 30, 60],
        [0.0004, 0.0012, 0.008, 0.025, 0.06, 0.12, 0.22, 0.30, 0.36],
    )
    weather_dim = {"rain": 0.55, "snow": 0.7, "fog": 0.85}.get(condition, 1.0)
    clear_tint = np.array([0.55, 0.66, 0.88], np.float32)
    grey_tint = np.array([0.74, 0.76, 0.80], np.float32)
    tint = clear_tint * (1 - cover) + grey_tint * cover
    ambient = tint * ambient_level * (1 - 0.25 * cover) * weather_dim
    town = np.array([0.0010, 0.0006, 0.0003], np.float32) * (0.3 + cover)
    ambient = ambient + town * 0.5

    sun_level = _interp(elevation, [0, 1, 4, 10, 20, 40, 60], [0, 0.04, 0.22, 0.55, 0.8, 0.95, 1.0])
    sun_level *= 1 - 0.93 * float(np.clip(sun_blocked, 0, 1))
    if condition in ("rain", "snow"):
        sun_level = 0.0
    elif condition == "fog":
        sun_level *= 0.25
    sun_rgb = np.array(
        [
            1.0,
            _interp(elevation, [0, 3, 8, 15, 30], [0.45, 0.62, 0.78, 0.88, 0.95]),
            _interp(elevation, [0, 3, 8, 15, 30], [0.18, 0.35, 0.58, 0.75, 0.88]),
        ],
        np.float32,
    )
    sun = sun_rgb * sun_level * 1.7

    twilight = np.array([0.02, 0.035, 0.10], np.float32)
    day_zenith = np.array([0.07, 0.20, 0.60], np.float32)
    day_horizon = np.array([0.42, 0.58, 0.80], np.float32)
    mix = float(np.clip((elevation + 4) / 14, 0, 1))
    zenith = (twilight * (1 - mix) + day_zenith * mix) * level
    horizon = (twilight * 1.6 * (1 - mix) + day_horizon * mix) * level
    glow_strength = np.exp(-(((elevation - 1.0) / 4.0) ** 2)) * (1 - 0.7 * cover)
    glow = np.array([1.0, 0.40, 0.16], np.float32) * 0.9 * glow_strength * max(level, 0.02)
    rel = ((azimuth - CAMERA_HEADING + 180) % 360) - 180
    glow_u = 0.5 + rel / H_FOV

    cloud_lum = level * (0.95 - 0.45 * cover) * weather_dim
    cloud = np.array([0.86, 0.88, 0.92], np.float32) * cloud_lum + sun * 0.12 + town * 4
    fog = (
        np.array([0.80, 0.82, 0.85], np.float32) * (ambient_level * 1.5 + 0.15 * sun_level)
        + town * 2
    )
    return Light(
        ambient.astype(np.float32),
        sun.astype(np.float32),
        zenith.astype(np.float32),
        horizon.astype(np.float32),
        glow.astype(np.float32),
        float(glow_u),
        cloud.astype(np.float32),
        fog.astype(np.float32),
        level,
    )


def direct_factors(elevation: float, azimuth: float) -> np.ndarray:
    """Per material (index = material id): share of direct sunlight a surface receives."""
    e = np.radians(max(elevation, 0.0))
    a = np.radians(azimuth)
    out = np.zeros(SKY + 1, np.float32)
    out[GROUND] = np.sin(e)
    out[FACING] = np.cos(e) * max(0.0, -np.cos(a))  # faces south, towards the camera
    out[WEST] = np.cos(e) * max(0.0, -np.sin(a))  # faces west
    out[FOLIAGE] = 0.3 + 0.45 * np.sin(e)
    out[FAR] = 0.25 + 0.4 * np.sin(e)
    out[SKY] = 0.0
    return out
