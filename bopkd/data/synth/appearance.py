"""Appearance of synthetic images: procedural backgrounds, sensor noise tiles and a random light."""

from __future__ import annotations

import math

import cv2
import numpy as np


def random_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """(H, W, 3) float32 RGB in [0, 255]: smooth noise, stripes or a checker, two random colours and an
    illumination gradient. Made at half resolution and upsampled; no image files are needed."""
    w2, h2 = (width + 1) // 2, (height + 1) // 2
    c0, c1 = rng.uniform(20, 235, size=3), rng.uniform(20, 235, size=3)
    kind = int(rng.integers(3))
    ys, xs = np.mgrid[0:h2, 0:w2].astype(np.float32)
    if kind == 0:  # multi-octave value noise
        a = np.zeros((h2, w2), np.float32)
        amp = 1.0
        for cells in (4, 9, 20):
            g = rng.uniform(-1, 1, size=(cells, cells)).astype(np.float32)
            a += amp * cv2.resize(g, (w2, h2), interpolation=cv2.INTER_CUBIC)
            amp *= 0.5
        a = (a - a.min()) / max(float(np.ptp(a)), 1e-6)
    elif kind == 1:  # stripes
        ang = rng.uniform(0, math.pi)
        period = rng.uniform(6, 40)
        a = 0.5 + 0.5 * np.sin((xs * math.cos(ang) + ys * math.sin(ang)) * (2 * math.pi / period))
    else:  # rotated checker
        ang = rng.uniform(0, math.pi)
        cell = rng.uniform(8, 40)
        u = xs * math.cos(ang) + ys * math.sin(ang)
        v = -xs * math.sin(ang) + ys * math.cos(ang)
        a = ((np.floor(u / cell) + np.floor(v / cell)) % 2).astype(np.float32)
    img = c0[None, None, :].astype(np.float32) + a[..., None] * (c1 - c0)[None, None, :].astype(np.float32)
    gx, gy = rng.uniform(-0.4, 0.4, size=2)
    img *= (1.0 + gx * (xs / w2 - 0.5) + gy * (ys / h2 - 0.5))[..., None]
    return cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)


class TextureBank:
    """Backgrounds and sensor-noise tiles, made lazily from ``(seed, kind, index)``.

    Making a full-size texture per image costs more than rendering it; an image instead takes one of
    ``n_backgrounds`` textures (1.25x the image size) at a random offset, flipped and tinted at random,
    and a window of one of ``n_noise`` unit Gaussian tiles. Each entry depends only on the seed and its
    index, so an image's look does not depend on which images were made before it.
    """

    def __init__(self, seed: int, width: int, height: int, n_backgrounds: int = 32, n_noise: int = 4):
        self.seed, self.width, self.height = int(seed), int(width), int(height)
        self.n_backgrounds, self.n_noise = n_backgrounds, n_noise
        self.bw, self.bh = int(round(width * 1.25)), int(round(height * 1.25))
        self._bg: dict[int, np.ndarray] = {}
        self._noise: dict[int, np.ndarray] = {}

    def _entry_rng(self, kind: int, k: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.seed, 100 + kind, k]))

    def background(self, rng: np.random.Generator) -> np.ndarray:
        """(H, W, 3) float32 background for one image (a new array)."""
        k = int(rng.integers(self.n_backgrounds))
        if k not in self._bg:
            bg = random_background(self._entry_rng(0, k), self.bw, self.bh)
            self._bg[k] = np.clip(bg + 0.5, 0, 255).astype(np.uint8)  # 8 bits: 1/4 of the memory
        ox = int(rng.integers(self.bw - self.width + 1))
        oy = int(rng.integers(self.bh - self.height + 1))
        img = self._bg[k][oy : oy + self.height, ox : ox + self.width]
        flip = int(rng.integers(4))  # none, vertical, horizontal, both
        if flip:
            img = cv2.flip(img, (None, 0, 1, -1)[flip])
        gain = rng.uniform(0.7, 1.3, size=3)
        return cv2.multiply(img, tuple(float(g) for g in gain) + (0.0,), dtype=cv2.CV_32F)

    def add_noise(self, rng: np.random.Generator, img: np.ndarray, sigma: float) -> np.ndarray:
        """``img + sigma * N(0, 1)`` per pixel and channel, from a window of a noise tile."""
        k = int(rng.integers(self.n_noise))
        if k not in self._noise:
            self._noise[k] = self._entry_rng(1, k).standard_normal(
                (self.height + 32, self.width + 32, 3), dtype=np.float32
            )
        ox, oy = int(rng.integers(33)), int(rng.integers(33))
        return cv2.scaleAdd(self._noise[k][oy : oy + self.height, ox : ox + self.width], float(sigma), img)


def random_light(rng: np.random.Generator) -> tuple[np.ndarray, float, float]:
    """A random light: unit direction towards it (camera frame, from the camera's side), ambient, diffuse."""
    d = np.array([rng.uniform(-1, 1), rng.uniform(-1, 1), -rng.uniform(0.5, 1.5)])
    return d / np.linalg.norm(d), float(rng.uniform(0.25, 0.5)), float(rng.uniform(0.5, 0.85))
