"""Does a frame still line up with its daylight class's scene? (a knocked camera)

A knocked camera shows every edge of the scene a little off, all over the frame, so it does
not stand out locally. `Alignment` asks instead whether the frame still lines up with the
scene: the phase correlation (Kuglin & Hines 1975) of the frame's edge map with the class's
median edge map peaks at no shift for a fixed camera, whatever the light, the weather or an
object in front, and elsewhere when the camera moved. That is the displacement test of camera
tampering detection (Ribnick et al. 2006); its score is how much better the frame lines up
shifted than in place.
"""

from __future__ import annotations

import numpy as np
import scipy.fft

from pipeline.versioned import Versioned


def _fft_crop(edges: np.ndarray) -> np.ndarray:
    """The centre of edge maps cut to multiples of 8 pixels (70 x 126 -> 64 x 120): sizes the
    FFT factors well, at half the time."""
    height, width = edges.shape[1:]
    top, left = (height % 8) // 2, (width % 8) // 2
    return edges[:, top : top + height - height % 8, left : left + width - width % 8]


class Alignment(Versioned):
    """Whether frames line up with one daylight class's scene, by phase correlation of their
    edge maps with the class's median edge map.

    `gain` is 0 for a frame whose correlation peaks at no shift (the camera where it was), and
    otherwise how far the peak stands above the correlation at no shift, in standard deviations
    of the correlation surface: a knocked camera scores high, a noisy night frame whose peak
    wanders by chance scores low. A frame with under a quarter of the class's typical edge
    strength (black, a covered lens) has no structure to line up: NaN.
    """

    def __init__(self, edges: np.ndarray):
        edges = _fft_crop(edges)
        height, width = edges.shape[1:]
        self.window_ = np.outer(np.hanning(height), np.hanning(width)).astype(np.float32)
        scene = np.median(edges, axis=0)
        self.spectrum_ = np.conj(scipy.fft.rfft2((scene - scene.mean()) * self.window_))
        self.energy_ = float(np.median(edges.mean(axis=(1, 2))))

    def gain(self, edges: np.ndarray) -> np.ndarray:
        edges = _fft_crop(edges)
        n = len(edges)
        height, width = self.window_.shape
        energy = edges.mean(axis=(1, 2))
        centred = edges - energy[:, None, None]
        centred *= self.window_
        cross = scipy.fft.rfft2(centred)
        cross *= self.spectrum_
        cross /= np.abs(cross) + 1e-9
        surface = scipy.fft.irfft2(cross, s=(height, width)).reshape(n, -1)
        peak = surface.max(axis=1)
        at_zero = surface[:, 0]
        spread = surface.std(axis=1) + 1e-9
        out = np.where(peak > at_zero, (peak - at_zero) / spread, 0.0)
        out[energy < 0.25 * self.energy_] = np.nan
        return out
