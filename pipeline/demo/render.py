"""One frame: light the static garden for its moment and weather, add the anomaly, expose.

Per frame only cheap numpy blends run: light = ambient * occlusion + sun * material factor *
shadow; sky gradient and drifting clouds over the top rows; fog by depth; swaying canopies;
rain streaks or snow; the camera's auto-exposure, sensor noise and gamma through a lookup table.
Every random choice comes from a generator seeded by (seed, frame index), so a frame renders the
same whichever worker draws it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
from PIL import Image

from pipeline.demo import anomalies
from pipeline.demo.lighting import Light, direct_factors, light_at
from pipeline.demo.scene import Casters, Scene
from pipeline.demo.shadows import ShadowMaps, light_fraction

LUT_SIZE = 4096
LUT_RANGE = 1.6  # linear level mapped to the top of the table
EXPOSURE_TARGET = 0.23  # mean linear level the auto-exposure aims for
MAX_GAIN = 10.0  # how far the camera can brighten a dark scene (night stays dark)


# Anomalies that happen at the lens or to the camera, after the scene is exposed.
_AFTER_CAMERA = {"knocked": anomalies.knock, "bird": anomalies.bird, "drops": anomalies.drops}


@dataclass(frozen=True)
class FrameSpec:
    """Everything that decides how one frame looks (picklable, sent to workers)."""

    index: int
    rel_path: str
    local: datetime
    utc_seconds: float
    sun_elevation: float
    sun_azimuth: float
    condition: str
    cloud_cover: float
    precipitation: float
    wind_kmh: float
    wetness: float
    snow_cover: float
    event: anomalies.Event | None


def _tone_lut() -> np.ndarray:
    """Linear 0..LUT_RANGE -> 8-bit: a soft shoulder above 0.8, then gamma 2.2."""
    x = np.linspace(0, LUT_RANGE, LUT_SIZE, dtype=np.float64)
    shoulder = np.where(x < 0.8, x, 0.8 + (1 - np.exp(-(x - 0.8) * 2.5)) * 0.2 / 1.0)
    return np.clip(255 * np.clip(shoulder, 0, 1) ** (1 / 2.2) + 0.5, 0, 255).astype(np.uint8)


class Renderer:
    def __init__(self, scene: Scene, seed: int):
        self.scene = scene
        self.seed = seed
        self.shadows = ShadowMaps(scene)
        self.lut = _tone_lut()
        sr = scene.sky_rows
        self.sky_t = (np.linspace(0, 1, sr, dtype=np.float32) ** 0.8)[:, None, None]
        self.sky_u = ((np.arange(scene.width, dtype=np.float32) + 0.5) / scene.width)[None, :]
        self.sky_cover = scene.cover[:sr, :, None]

    def render(self, spec: FrameSpec) -> np.ndarray:
        """The frame as (H, W, 3) uint8, anomaly included (truncation happens when writing)."""
        sc = self.scene
        rng = np.random.default_rng([self.seed, spec.index, 11])
        H, W = sc.height, sc.width
        event = spec.event
        kind = event.kind if event else None

        drift = spec.utc_seconds * (2.0 + spec.wind_kmh) * 0.004 * W / 360
        clouds, blocked = self._clouds(spec, drift)
        light = light_at(
            spec.sun_elevation, spec.sun_azimuth, spec.cloud_cover, spec.condition, blocked
        )

        # Surfaces: albedo x (ambient x occlusion + sun x facing x shadow).
        albedo = sc.albedo
        if spec.snow_cover > 0.01:
            albedo = albedo + (sc.snow_albedo - albedo) * spec.snow_cover
        elif spec.wetness > 0.01:
            albedo = albedo + (sc.wet_albedo - albedo) * spec.wetness
        img = sc.ao * light.ambient
        if light.sun.max() > 1e-4 and spec.sun_elevation > 0:
            direct = np.take(direct_factors(spec.sun_elevation, spec.sun_azimuth), sc.material)
            lit = self.shadows.small(spec.sun_elevation, spec.sun_azimuth)
            if kind in ("person", "fox"):
                lit = lit * self._sprite_shadow(spec, event)
            shadow = self.shadows.full(lit)
            direct *= 1 - sc.is_ground * (1 - shadow)
            img += direct[..., None] * light.sun
        img *= albedo

        # Sky and clouds over the top rows, behind the garden.
        sr = sc.sky_rows
        sky = light.zenith * (1 - self.sky_t) + light.horizon * self.sky_t
        glow = (0.35 + np.exp(-(((self.sky_u - light.glow_u) / 0.9) ** 2)))[..., None]
        sky = sky + light.glow * glow * self.sky_t**2
        cloud = light.cloud + light.glow * glow * 0.7  # dawn and dusk light the clouds warm
        sky = sky * (1 - clouds[..., None]) + cloud * clouds[..., None]
        img[:sr] = img[:sr] * self.sky_cover + sky * (1 - self.sky_cover)

        # Fog by depth: weather fog, rain haze, or the dense fog event.
        density = self._fog_density(spec, rng)
        if density > 0:
            fog = 1 - np.exp(-density * sc.depth)[..., None]
            img = img * (1 - fog) + light.fog * fog

        # Canopies sway in the wind; anomaly figures stand on the lawn.
        for sprite in sc.sprites:
            self._canopy(img, sprite, spec, light, density, rng)
        if kind == "person":
            self._figure(
                img,
                *anomalies.person_sprite(sc.camera, event.params),
                light,
                density,
                event.params["Z"],
            )
        elif kind == "fox":
            self._figure(
                img,
                *anomalies.fox_sprite(sc.camera, event.params),
                light,
                density,
                event.params["Z"],
            )

        # Falling rain or snow.
        bright = float(light.ambient.mean() * 2 + light.sun.mean() * 0.3)
        if spec.condition == "rain":
            layer = sc.streaks[int(rng.integers(0, len(sc.streaks)))]
            strength = min(1.0, 0.35 + spec.precipitation / 3.0) * bright * 0.9
            img += layer[..., None] * strength
        elif spec.condition == "snow":
            layer = sc.flakes[int(rng.integers(0, len(sc.flakes)))]
            img += layer[..., None] * bright * 1.2

        # Camera: auto-exposure, vignette, sensor noise, gamma (through a lookup table).
        mean = float(img[::4, ::4].mean())
        gain = float(np.clip(EXPOSURE_TARGET / max(mean, 1e-6), 0.3, MAX_GAIN))
        scale = (LUT_SIZE - 1) / LUT_RANGE
        img *= sc.vignette * (gain * scale)
        sigma = (0.004 + 0.0009 * gain) * scale
        oy, ox = int(rng.integers(0, 32)), int(rng.integers(0, 32))
        img += sc.noise[oy : oy + H, ox : ox + W] * np.float32(sigma)
        np.clip(img, 0, LUT_SIZE - 1, out=img)
        pixels = np.take(self.lut, img.astype(np.uint16))

        if kind in _AFTER_CAMERA:
            image = _AFTER_CAMERA[kind](Image.fromarray(pixels, "RGB"), event.params)
            pixels = np.asarray(image)
        elif kind == "black":
            pixels = anomalies.black(pixels, event.params, rng)
        elif kind == "washed_out":
            pixels = anomalies.washed_out(pixels, event.params)
        return pixels

    # --- pieces --------------------------------------------------------------------------------

    def _clouds(self, spec: FrameSpec, drift: float) -> tuple[np.ndarray, float]:
        sc = self.scene
        tex = sc.clouds
        period = tex.shape[1]
        start = int(drift) % period
        cols = (np.arange(sc.width) + start) % period
        noise = tex[:, cols]
        cover = float(np.clip(spec.cloud_cover, 0, 100))
        if spec.condition in ("rain", "snow", "fog"):
            cover = max(cover, 97.0)
        threshold = float(np.interp(1 - cover / 100, np.linspace(0, 1, 101), sc.cloud_levels))
        soft = 0.06
        alpha = np.clip((noise - threshold) / soft + 0.5, 0, 1)
        if cover >= 99.5:
            alpha = np.maximum(alpha, 0.97)
        # Is the sun behind a cloud? Sample the texture where the sun would be.
        sun_col = (start + period // 2) % period
        blocked = float(np.clip((tex[sc.sky_rows // 3, sun_col] - threshold) / soft + 0.5, 0, 1))
        if cover >= 99.5:
            blocked = 1.0
        return alpha.astype(np.float32), blocked

    def _fog_density(self, spec: FrameSpec, rng: np.random.Generator) -> float:
        """Fog extinction per metre."""
        if spec.event is not None and spec.event.kind == "fog":
            return spec.event.params["density"]
        if spec.condition == "fog":
            return float(rng.uniform(0.035, 0.07))
        if spec.condition == "rain":
            return 0.012
        if spec.condition == "snow":
            return 0.02
        return 0.0

    def _canopy(self, img, sprite, spec, light: Light, density, rng) -> None:
        """Light a crown and paste it in horizontal bands shifted by the wind (top moves most)."""
        h = sprite.alpha.shape[0]
        wind = min(1.0, spec.wind_kmh / 35.0)
        amp = sprite.sway * wind * float(rng.uniform(-1, 1))
        direct = 0.35 + 0.45 * np.sin(np.radians(max(spec.sun_elevation, 0)))
        colour = light.ambient + light.sun * direct
        fog = 1 - np.exp(-density * sprite.depth) if density > 0 else 0.0
        bands = 6
        for b in range(bands):
            r0, r1 = b * h // bands, (b + 1) * h // bands
            shift = int(round(amp * (1 - 0.85 * (r0 + r1) / (2 * h))))
            lit = sprite.rgb[r0:r1] * colour
            if fog:
                lit = lit * (1 - fog) + light.fog * fog
            self._paste(img, sprite.top + r0, sprite.left + shift, lit, sprite.alpha[r0:r1])

    def _figure(self, img, top, left, rgb, alpha, light: Light, density, depth) -> None:
        lit = rgb * (light.ambient * 0.9 + light.sun * 0.45)  # upright: about half the sun
        if density > 0:
            f = 1 - np.exp(-density * depth)
            lit = lit * (1 - f) + light.fog * f
        self._paste(img, top, left, lit, alpha)

    @staticmethod
    def _paste(img, top, left, rgb, alpha) -> None:
        H, W = img.shape[:2]
        h, w = alpha.shape
        y0, x0 = max(0, top), max(0, left)
        y1, x1 = min(H, top + h), min(W, left + w)
        if y1 <= y0 or x1 <= x0:
            return
        a = alpha[y0 - top : y1 - top, x0 - left : x1 - left, None]
        region = img[y0:y1, x0:x1]
        region *= 1 - a
        region += rgb[y0 - top : y1 - top, x0 - left : x1 - left] * a

    def _sprite_shadow(self, spec: FrameSpec, event) -> np.ndarray:
        """Ground-grid light fraction under a person or fox standing on the lawn."""
        p = event.params
        if event.kind == "person":
            casters = Casters(cylinders=[(p["X"], p["Z"], 0.2, 1.72)])
        else:
            casters = Casters(spheres=[(p["X"], p["Z"], 0.32, 0.35, 0.9)])
        return light_fraction(
            self.shadows.gx, self.shadows.gz, casters, spec.sun_elevation, spec.sun_azimuth
        )
