"""Textures, ray-casting renderer and sensor model of :mod:`sceneloc.synth.dataset`.

Rendering is exact ray casting in numpy, one quad at a time inside its screen-space bounding box
(see :class:`Renderer`); the sensor model turns exact colour and depth into Kinect-like frames
(:class:`SensorOptions`, :func:`depth_to_mm`, :func:`finish_image`).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
import skimage.data

from sceneloc.synth.scenes import Scene, vec3

NEAR = 0.01                      # near clipping plane (m): only guards the divisions
TEXTURE_MAX_SIDE = 384           # texels; larger textures only alias more at room distances


# ========================================================================================= textures

#: scikit-image sample images that ship inside the package (no download).
PHOTOS = {"astronaut": "astronaut", "coffee": "coffee", "chelsea": "chelsea", "rocket": "rocket",
          "hubble": "hubble_deep_field", "immunohistochemistry": "immunohistochemistry",
          "ihc": "immunohistochemistry", "retina": "retina", "colorwheel": "colorwheel",
          "brick": "brick", "grass": "grass", "gravel": "gravel", "camera": "camera", "coins": "coins",
          "moon": "moon", "page": "page", "text": "text", "clock": "clock"}


def _fit(img: np.ndarray, max_side: int = TEXTURE_MAX_SIDE) -> np.ndarray:
    s = max_side / max(img.shape[:2])
    if s < 1:
        img = cv2.resize(img, (round(img.shape[1] * s), round(img.shape[0] * s)), interpolation=cv2.INTER_AREA)
    return img


def _photo(name: str) -> np.ndarray:
    """A scikit-image sample as BGR uint8 (grey images replicated, alpha composited on white)."""
    img = np.asarray(getattr(skimage.data, PHOTOS[name])())
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.shape[2] == 4:
        alpha = img[:, :, 3:4].astype(np.float32) / 255
        img = (img[:, :, :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)
    return _fit(np.ascontiguousarray(img[:, :, ::-1]))


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1], tileable: a random grid upsampled with wrap-around."""
    g = rng.random((cells, cells)).astype(np.float32)
    g = np.tile(g, (3, 3))
    big = cv2.resize(g, (shape[1] * 3, shape[0] * 3), interpolation=cv2.INTER_CUBIC)
    return np.clip(big[shape[0]:2 * shape[0], shape[1]:2 * shape[1]], 0, 1)


def _procedural(name: str) -> np.ndarray:
    """Pattern textures (BGR uint8, tileable), each from its own fixed random stream."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    n = 256
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    if name == "plain":      # low texture: faint blotches only
        g = 200 + 10 * _smooth_noise(rng, (n, n), 4) + rng.normal(0, 1.5, (n, n))
        return np.clip(np.repeat(g[:, :, None], 3, 2), 0, 255).astype(np.uint8)
    if name == "wood":       # planks with grain
        img = np.zeros((n, n, 3), np.float32)
        for i in range(4):
            sl = slice(i * n // 4, (i + 1) * n // 4)
            base = np.array([60, 110, 160], np.float32) * rng.uniform(0.75, 1.15)
            grain = 0.85 + 0.15 * np.sin(xx[sl] * rng.uniform(0.08, 0.2) + 3 * _smooth_noise(rng, (n // 4, n), 6))
            img[sl] = base * grain[:, :, None]
            img[i * n // 4] = 30
        return np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
    if name == "tiles":      # 2x2 tiles with grout: strongly repetitive
        img = np.full((n, n, 3), 215, np.float32)
        img[((xx % 128) < 4) | ((yy % 128) < 4)] = 110
        img[(xx >= 128) ^ (yy >= 128)] *= 0.92
        return np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)
    if name == "carpet":
        g = 120 + 60 * _smooth_noise(rng, (n, n), 16) + rng.normal(0, 12, (n, n))
        return np.clip(np.repeat(g[:, :, None], 3, 2), 0, 255).astype(np.uint8)
    if name == "stripes":    # wallpaper
        s = 0.5 + 0.5 * (np.sin(xx * 2 * np.pi / 64) > 0) * 0.3 + 0.2 * (np.sin(xx * 2 * np.pi / 16) > 0.6)
        g = 170 + 60 * s + rng.normal(0, 3, (n, n))
        img = np.stack([g * 0.85, g * 0.95, g], axis=2)
        return np.clip(img, 0, 255).astype(np.uint8)
    if name == "panel":      # a cabinet door: frame, inset, handle
        img = np.full((n, n, 3), 200, np.float32)
        inner = (xx > 20) & (xx < n - 20) & (yy > 20) & (yy < n - 20)
        img[inner] = 180
        img[((xx > 16) & (xx < 22) | (xx > n - 22) & (xx < n - 16)) & (yy > 16) & (yy < n - 16)] = 120
        img[((yy > 16) & (yy < 22) | (yy > n - 22) & (yy < n - 16)) & (xx > 16) & (xx < n - 16)] = 235
        img[(xx > n - 50) & (xx < n - 38) & (yy > 100) & (yy < 156)] = 40
        img[:2] = img[-2:] = img[:, :2] = img[:, -2:] = 60
        return np.clip(img + rng.normal(0, 2, img.shape), 0, 255).astype(np.uint8)
    if name == "books":      # three shelves of coloured book spines
        img = np.full((n, n, 3), 50, np.float32)
        for s in range(3):
            y0, y1 = s * n // 3 + 8, (s + 1) * n // 3 - 2
            x = 4
            while x < n - 4:
                w = int(rng.integers(6, 18))
                h = int(rng.integers(int((y1 - y0) * 0.6), y1 - y0))
                img[y1 - h:y1, x:min(x + w, n - 4)] = rng.integers(30, 230, 3)
                img[y1 - h + 6:y1 - h + 9, x + 1:min(x + w, n - 4) - 1] = 230
                x += w + 1
        return np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)
    if name == "wallpaper":  # scattered motifs of a few colours: texture everywhere, no short period
        return _wallpaper(rng, TEXTURE_MAX_SIDE)
    raise KeyError(name)


def _wallpaper(rng: np.random.Generator, n: int) -> np.ndarray:
    """Tileable ``(n, n, 3)`` wallpaper: a light background with ~70 random ellipses, diamonds and
    leaves in four colours, each drawn at its 9 wrap-around offsets so the tile is seamless."""
    palette = rng.integers(60, 200, (4, 3)).astype(float)
    img = np.full((n, n, 3), 228.0) * rng.uniform(0.92, 1.0, 3)
    for _ in range(70):
        colour = tuple(palette[rng.integers(4)] * rng.uniform(0.8, 1.1))
        cx, cy = rng.integers(0, n, 2)
        size = int(rng.integers(6, 26))
        kind, angle = rng.integers(3), float(rng.uniform(0, 180))
        for dx in (-n, 0, n):
            for dy in (-n, 0, n):
                c = (int(cx + dx), int(cy + dy))
                if kind == 0:
                    cv2.ellipse(img, c, (size, size // 2), angle, 0, 360, colour, -1)
                elif kind == 1:
                    d = np.array([[0, -size], [size // 2, 0], [0, size], [-size // 2, 0]]) + c
                    cv2.fillConvexPoly(img, d.astype(np.int32), colour)
                else:
                    cv2.circle(img, c, size // 2, colour, 2)
    g = 4 * _smooth_noise(rng, (n, n), 6)[:, :, None]
    return np.clip(img + g + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)


def texture_image(name: str) -> np.ndarray:
    """BGR uint8 texture by name: a scikit-image photograph or a procedural pattern."""
    return _photo(name) if name in PHOTOS else _procedural(name)


@dataclass
class Atlas:
    """All textures of a scene packed into one image, so one ``cv2.remap`` textures a frame.
    Each tile has a one-texel wrap-around border: bilinear lookups of repeating textures are seamless.
    ``x0, y0, w, h`` (T,) are each tile's interior in atlas pixels."""
    image: np.ndarray
    x0: np.ndarray
    y0: np.ndarray
    w: np.ndarray
    h: np.ndarray
    index: dict


@lru_cache(maxsize=8)
def _base_texture(name: str) -> np.ndarray:
    return texture_image(name)


def build_atlas(keys: list[tuple[str, tuple[float, ...]]], width: int = 2048) -> Atlas:
    """Pack tinted textures ``(name, tint)`` in rows (shelf packing, in the given order)."""
    tiles = []
    for name, tint in keys:
        tinted = _base_texture(name).astype(np.float32) * np.array(tint, np.float32)
        smoothed = np.clip(cv2.GaussianBlur(tinted, (3, 3), 0.6), 0, 255).astype(np.uint8)  # tames aliasing a little
        tiles.append(cv2.copyMakeBorder(smoothed, 1, 1, 1, 1, cv2.BORDER_WRAP))
    pos, x, y, row_h = [], 0, 0, 0
    for tile in tiles:
        h, w = tile.shape[:2]
        if x + w > width:
            x, y, row_h = 0, y + row_h, 0
        pos.append((x, y))
        x, row_h = x + w, max(row_h, h)
    image = np.zeros((y + row_h, width, 3), np.uint8)
    for (x, y), tile in zip(pos, tiles, strict=True):
        image[y:y + tile.shape[0], x:x + tile.shape[1]] = tile

    def f32(v: list) -> np.ndarray:
        return np.array(v, np.float32)
    return Atlas(image, f32([p[0] + 1 for p in pos]), f32([p[1] + 1 for p in pos]),
                 f32([t.shape[1] - 2 for t in tiles]), f32([t.shape[0] - 2 for t in tiles]),
                 {k: i for i, k in enumerate(keys)})


# ========================================================================================= renderer


@dataclass
class Render:
    """Geometry of one frame: ``depth (H, W)`` float32 metres along z (0 = nothing hit), ``quad
    (H, W)`` int32 index of the visible quad (-1 = none), ``a, b (H, W)`` its quad coordinates."""
    depth: np.ndarray
    quad: np.ndarray
    a: np.ndarray
    b: np.ndarray


@dataclass
class Lighting:
    """Per-frame light: exposure gain, BGR colour cast, strength of the ceiling lamp."""
    gain: float = 1.0
    color: tuple[float, float, float] = (1.0, 1.0, 1.0)
    lamp: float = 0.9


class Renderer:
    """Ray caster for one scene and one camera ``K (3, 3)`` at ``width x height``."""

    AMBIENT = 0.35
    SUN = 0.3                                    # directional light (a window), gives faces different shades
    SUN_DIR = vec3(0.45, 0.3, 0.84) / np.linalg.norm(vec3(0.45, 0.3, 0.84))
    LAMP_RADIUS = 2.5                            # metres at which the lamp's falloff halves

    def __init__(self, scene: Scene, K: np.ndarray, width: int, height: int):
        self.scene, self.K, self.W, self.H = scene, np.asarray(K, np.float64), width, height
        qs = scene.quads
        self.O = np.array([q.origin for q in qs])            # (Q, 3)
        self.E1 = np.array([q.e1 for q in qs])
        self.E2 = np.array([q.e2 for q in qs])
        self.N = np.array([q.normal for q in qs])            # visible-side unit normals
        fx, fy, cx, cy = self.K[0, 0], self.K[1, 1], self.K[0, 2], self.K[1, 2]
        self.xs = ((np.arange(width) - cx) / fx).astype(np.float32)    # ray x / z per column
        self.ys = ((np.arange(height) - cy) / fy).astype(np.float32)   # ray y / z per row
        # texture lookup tables per quad: tile position/size and repetitions of the tile along e1, e2
        keys = list(dict.fromkeys((q.texture, tuple(q.tint)) for q in qs))
        self.atlas = build_atlas(keys)
        t = np.array([self.atlas.index[(q.texture, tuple(q.tint))] for q in qs])
        reps = np.array([(1.0, 1.0) if q.repeat is None else
                         (np.linalg.norm(q.e1) / q.repeat[0], np.linalg.norm(q.e2) / q.repeat[1]) for q in qs])
        sun = self.AMBIENT + self.SUN * np.clip(self.N @ self.SUN_DIR, 0, None)
        shift = np.zeros((len(qs), 2))
        if scene.unique_copies:   # every use of a texture after its first starts at a random point of it
            textures = [q.texture for q in qs]
            copies = np.array([textures.index(name) != i for i, name in enumerate(textures)])
            shift[copies] = np.random.default_rng(0).uniform(0.2, 0.8, (int(copies.sum()), 2))
        # per-quad tables, gathered per pixel: tile repetitions along e1, e2 | tile window in the
        # atlas (remap samples texel i's centre at i, hence -0.5) | ambient + window light | normal |
        # texture shift in tiles. Row 0 stands for "no quad" (zeros), row q + 1 for quad q.
        table = np.column_stack([reps, self.atlas.x0[t] - 0.5, self.atlas.y0[t] - 0.5,
                                 self.atlas.w[t], self.atlas.h[t], sun, self.N, shift]).astype(np.float32)
        table = np.concatenate([np.zeros((1, table.shape[1]), np.float32), table])
        if len(table) <= 256:   # cv2.LUT gathers from 256-entry tables several times faster than np.take
            table = np.concatenate([table, np.zeros((256 - len(table), table.shape[1]), np.float32)])
        self.columns = [np.ascontiguousarray(c) for c in table.T]

    def per_pixel(self, quad: np.ndarray, first: int, stop: int) -> list[np.ndarray]:
        """Columns ``first:stop`` of the per-quad table at every pixel of ``quad (H, W)``, each ``(H, W)``."""
        if len(self.columns[0]) == 256:
            idx = (quad + 1).astype(np.uint8)
            return [cv2.LUT(idx, c) for c in self.columns[first:stop]]
        return [np.take(c, quad + 1) for c in self.columns[first:stop]]

    # ----------------------------------------------------------------------------- geometry

    def render(self, T_wc: np.ndarray) -> Render:
        """Depth and visible quad per pixel for the camera-to-world pose ``T_wc (4, 4)``."""
        H, W = self.H, self.W
        R, C = T_wc[:3, :3], T_wc[:3, 3]
        Oc, E1c, E2c = (self.O - C) @ R, self.E1 @ R, self.E2 @ R     # camera frame (R^T v as rows)
        corners = np.stack([Oc, Oc + E1c, Oc + E1c + E2c, Oc + E2c], axis=1)   # (Q, 4, 3)
        facing = np.einsum("qi,qi->q", self.N, C - self.O) > 1e-9     # back faces are never visible
        in_front = corners[:, :, 2] > NEAR
        zbuf = np.full((H, W), np.inf, np.float32)
        qbuf = np.full((H, W), -1, np.int32)
        abuf = np.zeros((H, W), np.float32)
        bbuf = np.zeros((H, W), np.float32)
        fx, fy, cx, cy = self.K[0, 0], self.K[1, 1], self.K[0, 2], self.K[1, 2]
        for q in np.flatnonzero(facing & in_front.any(1)):
            pts = corners[q] if in_front[q].all() else _clip_near(corners[q])
            u = fx * pts[:, 0] / pts[:, 2] + cx
            v = fy * pts[:, 1] / pts[:, 2] + cy
            u0, u1 = max(math.floor(u.min()), 0), min(math.ceil(u.max()) + 1, W)
            v0, v1 = max(math.floor(v.min()), 0), min(math.ceil(v.max()) + 1, H)
            if u0 >= u1 or v0 >= v1:
                continue
            self._cast(q, Oc[q], E1c[q], E2c[q], u0, u1, v0, v1, zbuf, qbuf, abuf, bbuf)
        zbuf[qbuf < 0] = 0.0
        return Render(zbuf, qbuf, abuf, bbuf)

    def _cast(self, q, o, e1, e2, u0, u1, v0, v1, zbuf, qbuf, abuf, bbuf) -> None:
        """Intersect the rays of the pixel window ``[v0:v1, u0:u1]`` with quad ``q`` (camera frame
        ``o, e1, e2``) and keep the hits nearer than the z-buffer.

        Every quantity is affine in the ray ``r = (x, y, 1)``, so it is an outer sum of a column
        and a row vector: ``z = n.o / n.r`` and ``a = z g1.r - g1.o`` with ``g1 = (e2 x n) / |n|^2``
        (the dual basis: ``g1.e1 = 1``, ``g1.e2 = 0``), likewise ``b`` with ``g2 = (n x e1) / |n|^2``.
        """
        n = np.cross(e1, e2)
        nn = n @ n
        g1, g2 = np.cross(e2, n) / nn, np.cross(n, e1) / nn
        # python floats keep the pixel arrays float32 (numpy scalars would promote them to float64)
        (n0, n1, n2), (a0, a1, a2), (b0, b1, b2) = n.tolist(), g1.tolist(), g2.tolist()
        no, ao, bo = float(n @ o), float(g1 @ o), float(g2 @ o)
        xs, ys = self.xs[u0:u1], self.ys[v0:v1, None]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            z = no / ((n0 * xs) + (n1 * ys + n2))
            a = z * ((a0 * xs) + (a1 * ys + a2)) - ao
            b = z * ((b0 * xs) + (b1 * ys + b2)) - bo
            zb = zbuf[v0:v1, u0:u1]
            hit = (a >= 0) & (a <= 1) & (b >= 0) & (b <= 1) & (z > NEAR) & (z < zb)
        np.copyto(zb, z, where=hit)
        np.copyto(qbuf[v0:v1, u0:u1], q, where=hit)
        np.copyto(abuf[v0:v1, u0:u1], a, where=hit)
        np.copyto(bbuf[v0:v1, u0:u1], b, where=hit)

    def world_rays(self, T_wc: np.ndarray) -> list[np.ndarray]:
        """World-frame ray directions ``r_w = R (x, y, 1)`` per pixel, three ``(H, W)`` arrays,
        so the surface point is ``C + z r_w``."""
        R = T_wc[:3, :3].tolist()
        return [(R[k][0] * self.xs) + (R[k][1] * self.ys[:, None] + R[k][2]) for k in range(3)]

    # ----------------------------------------------------------------------------- appearance

    def shade(self, r: Render, T_wc: np.ndarray, light: Lighting) -> np.ndarray:
        """Colour ``(H, W, 3)`` float32 BGR in 0..255 (not clipped): texture x Lambert lighting.

        Lighting is view independent (diffuse only), so a surface point looks the same from every
        frame of a sequence; it has an ambient term, a directional "window" term constant per quad
        and a ceiling lamp with a distance falloff, which shades walls gradually and gives shape cues.
        """
        rep_a, rep_b, x0, y0, tw, th, sun, nx, ny, nz = self.per_pixel(r.quad, 0, 10)
        # texture coordinates: fraction of a tile along each axis, then the tile's atlas window
        ta, tb = r.a * rep_a, r.b * rep_b
        if self.scene.unique_copies:   # only scenes that shift their texture copies pay for the lookup
            sa, sb = self.per_pixel(r.quad, 10, 12)
            ta, tb = ta + sa, tb + sb
        map_x = x0 + (ta - np.floor(ta)) * tw
        map_y = y0 + (tb - np.floor(tb)) * th
        albedo = cv2.remap(self.atlas.image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        # lamp: vector from the surface point P = C + z r_w to the lamp L
        C = T_wc[:3, 3]
        lc = (np.asarray(self.scene.light) - C).tolist()
        rw = self.world_rays(T_wc)
        lx, ly, lz = (lc[k] - r.depth * rw[k] for k in range(3))
        d2 = lx * lx + ly * ly + lz * lz
        ndl = nx * lx + ny * ly + nz * lz
        np.maximum(ndl, 0, out=ndl)
        lamp = ndl / np.sqrt(d2) / (1 + d2 * (1 / self.LAMP_RADIUS ** 2))
        intensity = sun + float(light.lamp) * lamp           # 0 where no quad: sun = ndl = 0 there
        out = cv2.multiply(albedo, cv2.cvtColor(intensity, cv2.COLOR_GRAY2BGR), dtype=cv2.CV_32F)
        # OpenCV's type stubs omit the per-channel Scalar form of src2 that the call uses
        return cv2.multiply(out, tuple(c * light.gain for c in light.color) + (0.0,))  # type: ignore[call-overload]

    def view_cosine(self, r: Render, T_wc: np.ndarray) -> np.ndarray:
        """``|cos|`` of the angle between each pixel's ray and the surface normal ``(H, W)``
        (small at grazing incidence, where depth sensors lose the surface)."""
        nx, ny, nz = self.per_pixel(r.quad, 7, 10)
        rx, ry, rz = self.world_rays(T_wc)
        dot = nx * rx + ny * ry + nz * rz
        return np.abs(dot) / np.sqrt(rx * rx + ry * ry + rz * rz)


def _clip_near(pts: np.ndarray) -> np.ndarray:
    """Clip a convex polygon ``(N, 3)`` (camera frame) to ``z > NEAR`` (Sutherland-Hodgman)."""
    out = []
    for i in range(len(pts)):
        p, q = pts[i], pts[(i + 1) % len(pts)]
        if p[2] > NEAR:
            out.append(p)
        if (p[2] > NEAR) != (q[2] > NEAR):
            s = (NEAR * 1.0001 - p[2]) / (q[2] - p[2])
            out.append(p + s * (q - p))
    return np.array(out)


# ===================================================================================== sensor model


@dataclass(frozen=True)
class SensorOptions:
    """Which sensor imperfections to simulate. All off (:meth:`clean`) gives exact depth and poses."""
    depth_noise: bool = True        # Kinect-like axial noise, sigma growing with distance
    holes: bool = True              # missing depth: out of range, object edges, grazing angles, blobs
    image_noise: bool = True        # signal-dependent photon + read noise
    lighting_change: bool = True    # exposure / colour cast / lamp per sequence, slow auto-exposure drift
    blur: bool = True               # mild motion blur along the image motion

    @classmethod
    def clean(cls) -> SensorOptions:
        return cls(False, False, False, False, False)


DEPTH_RANGE = (0.45, 4.5)           # metres: what a Kinect-like sensor returns


def _gaussian(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal float32 noise of ``shape``, seeded from ``rng``. OpenCV's generator is used
    because it is several times faster than numpy's for the ~1M values a frame needs."""
    out = np.empty(shape, np.float32)
    cv2.setRNGSeed(int(rng.integers(1, 2 ** 31)))
    # flat view: one channel, so mean/std apply to all values (the stubs omit scalar mean/std)
    cv2.randn(out.reshape(-1), 0.0, 1.0)  # type: ignore[call-overload]
    return out


def _blobs(rng: np.random.Generator, shape: tuple[int, int], cells: int = 10) -> np.ndarray:
    """Smooth random field ``shape`` in about [0, 1]: a coarse random grid, bicubically upsampled."""
    g = rng.random((cells * shape[0] // shape[1] + 2, cells + 2)).astype(np.float32)
    return cv2.resize(g, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def depth_to_mm(depth: np.ndarray, T_wc: np.ndarray, r: Render, renderer: Renderer,
                opts: SensorOptions, rng: np.random.Generator) -> np.ndarray:
    """Stored depth ``(H, W)`` uint16 millimetres (0 = none) from rendered ``depth (H, W)`` metres."""
    z = depth.copy()
    valid = r.quad >= 0
    if opts.depth_noise:
        # Nguyen et al. 2012, Kinect axial noise: 1.2 mm + 1.9 mm (z - 0.4)^2
        sigma = 0.0012 + 0.0019 * (z - 0.4) ** 2
        z += sigma * _gaussian(rng, z.shape)
    if opts.holes:
        H, W = z.shape
        valid &= (depth > DEPTH_RANGE[0]) & (depth < DEPTH_RANGE[1])
        valid &= renderer.view_cosine(r, T_wc) > 0.12
        # object edges: neighbourhoods whose depth jumps (the projector/camera baseline shadows them)
        k = np.ones((3, 3), np.uint8)
        jump = cv2.dilate(depth, k) - cv2.erode(depth, k)
        valid &= jump < 0.03 + 0.02 * depth
        # blobs (dark or specular patches) and speckle
        valid &= _blobs(rng, (H, W)) < rng.uniform(0.9, 0.97)
        valid &= rng.random((H, W), dtype=np.float32) > 0.005
    mm = np.rint(z * 1000.0)
    valid &= (mm > 0) & (mm < 65535)
    return np.where(valid, mm, 0).astype(np.uint16)


def motion_blur_kernel(flow: np.ndarray) -> np.ndarray | None:
    """Normalised line kernel along the image motion ``flow (2,)`` pixels, or None when < 0.5 px."""
    length = float(np.linalg.norm(flow))
    if length < 0.5:
        return None
    half = int(math.ceil(length / 2)) + 1
    k = np.zeros((2 * half + 1, 2 * half + 1), np.float32)
    for t in np.linspace(-0.5, 0.5, 4 * half + 1):
        x, y = half + t * flow[0], half + t * flow[1]
        x0, y0 = int(math.floor(x)), int(math.floor(y))
        fx, fy = x - x0, y - y0       # bilinear splat keeps sub-pixel lengths and angles
        k[y0, x0] += (1 - fx) * (1 - fy)
        k[y0, x0 + 1] += fx * (1 - fy)
        k[y0 + 1, x0] += (1 - fx) * fy
        k[y0 + 1, x0 + 1] += fx * fy
    return k / k.sum()


def finish_image(color: np.ndarray, opts: SensorOptions, rng: np.random.Generator,
                 blur_flow: np.ndarray | None) -> np.ndarray:
    """Camera effects on the shaded ``color (H, W, 3)`` float32: optics, motion blur, noise -> uint8."""
    img = cv2.GaussianBlur(color, (3, 3), 0.5)        # lens softness, and hides the raster's jaggies
    if opts.blur and blur_flow is not None:
        k = motion_blur_kernel(blur_flow)
        if k is not None:
            img = cv2.filter2D(img, -1, k, borderType=cv2.BORDER_REFLECT)
    if opts.image_noise:
        # read noise 1.5 DN plus photon noise with variance 0.04 DN per DN of signal
        sigma = np.sqrt(np.maximum(img, 0) * np.float32(0.04) + np.float32(2.25))
        img += sigma * _gaussian(rng, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)
