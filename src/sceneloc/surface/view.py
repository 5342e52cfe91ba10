"""An RGB pose aligned to its image: the scene's surface, in grey, rendered at the pose and matched to
the query by dense optical flow.

Scene coordinates place an RGB query within several centimetres, with errors shared by whole regions
of the image, which PnP cannot average out. The mapping frames saw the scene from known poses: their
depth, fused with their grey values into a 1 cm point cloud (``SceneView``), can be rendered at the
estimated pose (``render_view``). That rendering and the query then differ by a small image motion
that dense optical flow (OpenCV's DIS) measures to a fraction of a pixel; each rendered pixel's
surface point and the flow's end point in the query are a 2D-3D correspondence, and a robust re-fit
on them moves the pose towards the truth. Rounds of render, flow and re-fit (``align_image``) lifted
redkitchen's RGB poses within 5 cm / 5 deg from 67.5 to 89 % on the dev split and from 39 to 60 % on
split 2 (docs/history/2026-11-30-scene-view.md), the way ICP of the query depth does for RGB-D poses.

>>> samples = [grey_samples(f.load_image(), f.load_depth(), f.K, f.pose) for f in frames]  # doctest: +SKIP
>>> view = SceneView.from_samples(samples)                              # doctest: +SKIP
>>> fit = align_image(image, K, T_wc, view)                             # doctest: +SKIP
>>> fit.pose, fit.inliers                                              # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np
import torch

from sceneloc.errors import SceneLocError
from sceneloc.geometry import (
    invert_pose,
    make_pose,
    pose_errors,
    reprojection_errors,
    scale_intrinsics,
    transform_points,
)
from sceneloc.surface.cloud import depth_grid, scaled_stride

SCENE_VIEW_FILE = "scene_view.npz"
#: voxel of the grey surface: 1 cm placed split 2's RGB 60.5 % against 56.5 % at 1.5 cm and 50.0 % at 2 cm
#: (about one point per pixel of a half-resolution rendering at 2 m); ~700 k points, ~1.1 MB in the map
VOXEL_M = 0.01
#: every 4th pixel of each 640-pixel-wide mapping frame is fused (scaled with the width)
MAPPING_STRIDE_PX = 4
#: the rendering and the flow run at this width (half of 640: quarter resolution lost 10-20 points)
RENDER_WIDTH_PX = 320
#: rounds of render, flow and re-fit (``PoseConfig.view_rounds``): the second added 2.5-5 points, the
#: third 0-4.5 after the cheaper RANSAC that precedes it (``PoseConfig.ransac_local_optimisation``)
ROUNDS = 3
#: every 4th rendered pixel (each way) is a correspondence (every 2nd: as exact, 4x the re-fit's time)
SAMPLE_STEP = 4
#: a flow vector whose backward flow does not return within this many rendering pixels is dropped:
#: without the check, split 2 gained 3 points instead of 20
FLOW_CHECK_PX = 1.0
#: the re-fit's inlier thresholds in pixels at a 525 px focal length (scaled with it), loosest first:
#: the first round's flow can be tens of pixels long
REFIT_THRESHOLDS_PX = (20.0, 8.0, 4.0, 3.0)
GAUSS_NEWTON_STEPS = 2   # per threshold: the flow starts the pose close (3: the same poses)
#: a rendering must cover this share of the image, and this many correspondences must stay inliers
MIN_COVERAGE = 0.2
MIN_INLIERS = 30
#: an alignment that moved the camera further or turned it further than this slid off: not trusted
MAX_MOVE_M = 0.5
MAX_TURN_DEG = 15.0
#: a rendered point much further than the nearest one within 2 pixels is a far surface seen through
#: a gap of the near one: hidden
HIDDEN_RATIO, HIDDEN_MARGIN_M = 1.1, 0.05
DEPTH_STEPS_PER_M = 1e4   # the z-buffer's depth resolution (0.1 mm)
BLOCK_M = 0.16   # points are grouped in blocks of this size, so a rendering transforms only visible ones


def grey_samples(image: np.ndarray | None, depth: np.ndarray | None, K: np.ndarray, T_wc: np.ndarray,
                 stride: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """World points ``(N, 3)`` float32 and grey values ``(N,)`` uint8 of the valid pixels of ``depth (H, W)``
    and ``image (H, W, 3)`` seen from the camera-to-world pose ``T_wc`` with intrinsics ``K``, on a
    ``stride`` grid (None: ``MAPPING_STRIDE_PX`` scaled to the width); empty without a depth map."""
    if image is None or depth is None:
        return np.zeros((0, 3), np.float32), np.zeros(0, np.uint8)
    step = scaled_stride(depth.shape[1], MAPPING_STRIDE_PX) if stride is None else stride
    grid = depth_grid(depth, K, step)
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[step // 2::step, step // 2::step][:grid.shape[0], :grid.shape[1]]
    ok = grid[..., 2] > 0
    return transform_points(T_wc, grid[ok]).astype(np.float32), grey[ok]


@dataclass
class SceneView:
    """The scene's surface with its grey values: ``points (M, 3)`` world metres at voxel centres, ``grey
    (M,)`` uint8, and the ``voxel_m`` they were fused at."""
    points: np.ndarray
    grey: np.ndarray
    voxel_m: float = VOXEL_M

    @classmethod
    def from_samples(cls, samples: Sequence[tuple[np.ndarray, np.ndarray]], voxel: float = VOXEL_M
                     ) -> SceneView | None:
        """One point per ``voxel`` cell seen at least twice (once: noise), at the cell's centre, with
        the mean grey value of its samples; None when no cell is."""
        if not samples or not sum(len(p) for p, _ in samples):
            return None
        P = np.concatenate([p for p, _ in samples])
        g = np.concatenate([g for _, g in samples]).astype(np.float64)
        cells = np.floor(P / voxel).astype(np.int64)
        lo = cells.min(axis=0)
        dims = cells.max(axis=0) - lo + 1
        index = np.ravel_multi_index((cells - lo).T, dims)
        unique, which, count = np.unique(index, return_inverse=True, return_counts=True)
        grey = np.bincount(which.ravel(), weights=g, minlength=len(unique)) / count
        keep = count >= 2
        if not keep.any():
            return None
        centres = (np.stack(np.unravel_index(unique[keep], dims), axis=1) + lo + 0.5) * voxel
        return cls(centres.astype(np.float32), np.round(grey[keep]).astype(np.uint8), voxel)

    def __post_init__(self) -> None:
        # points in blocks of BLOCK_M, block after block: a rendering reads the visible ones as slices
        block = np.floor(self.points / BLOCK_M).astype(np.int64)
        if len(block):
            block -= block.min(axis=0)
            key = np.asarray(np.ravel_multi_index(block.T, block.max(axis=0) + 1), dtype=np.int64)
            order = np.argsort(key, kind="stable")
            self.points, self.grey, key = self.points[order], self.grey[order], key[order]
            self.block_starts = np.flatnonzero(np.diff(key, prepend=-1, append=key[-1] + 1))
        else:
            self.block_starts = np.zeros(1, np.int64)

    @cached_property
    def homogeneous(self) -> np.ndarray:
        """``points`` with a fourth coordinate 1, ``(M, 4)`` float32: one product projects them."""
        return np.concatenate([self.points, np.ones((len(self.points), 1), np.float32)], axis=1)

    @cached_property
    def block_centres(self) -> np.ndarray:
        """``(B, 3)`` the mean point of each block (``block_starts``)."""
        sums = np.add.reduceat(self.points.astype(np.float64), self.block_starts[:-1], axis=0)
        return sums / np.diff(self.block_starts)[:, None]

    def visible(self, T_cw: np.ndarray, K: np.ndarray, hw: tuple[int, int]) -> list[slice]:
        """Slices of ``points`` (runs of blocks) that a camera ``T_cw (4, 4)`` (world to camera) with
        intrinsics ``K`` and image size ``hw`` may see: each block is tested as a sphere around its mean
        point that holds the whole block."""
        if len(self.block_starts) < 2:
            return []
        c = transform_points(T_cw, self.block_centres)
        r = BLOCK_M * np.sqrt(3.0)
        z = np.maximum(c[:, 2], 1e-6)
        u = K[0, 0] * c[:, 0] / z + K[0, 2]
        v = K[1, 1] * c[:, 1] / z + K[1, 2]
        margin = r * K[0, 0] / z   # the sphere's radius in pixels at its centre's depth
        seen = (c[:, 2] > -r) & ((c[:, 2] < r) | ((u > -margin) & (u < hw[1] + margin) &
                                                 (v > -margin) & (v < hw[0] + margin)))
        # runs of seen blocks: one slice each
        edges = np.flatnonzero(np.diff(np.concatenate([[0], seen.astype(np.int8), [0]])))
        return [slice(int(self.block_starts[a]), int(self.block_starts[b]))
                for a, b in zip(edges[::2], edges[1::2], strict=True)]

    def save(self, map_dir: Path) -> None:
        """Voxel indices, sorted and stored as differences (small numbers that compress well), and grey
        values: ~1.5 bytes a point."""
        cells = np.floor(self.points / self.voxel_m).astype(np.int64)
        lo = cells.min(axis=0) if len(cells) else np.zeros(3, np.int64)
        dims = cells.max(axis=0) - lo + 1 if len(cells) else np.ones(3, np.int64)
        index = np.asarray(np.ravel_multi_index((cells - lo).T, dims), dtype=np.int64)
        order = np.argsort(index)
        np.savez_compressed(Path(map_dir) / SCENE_VIEW_FILE, origin=lo, dims=dims,
                            steps=np.diff(index[order], prepend=0), grey=self.grey[order], voxel_m=self.voxel_m)

    @classmethod
    def load(cls, map_dir: Path) -> SceneView | None:
        """The map's scene view, or None for a map without one."""
        path = Path(map_dir) / SCENE_VIEW_FILE
        if not path.exists():
            return None
        try:
            with np.load(path) as z:
                index, grey = np.cumsum(z["steps"]), z["grey"]
                origin, dims, voxel = z["origin"], z["dims"], float(z["voxel_m"])
                cells = np.stack(np.unravel_index(index, tuple(int(d) for d in dims)), axis=1) + origin
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise SceneLocError(f"{path}: not a scene view file ({e})") from None
        if grey.shape != (len(cells),) or not voxel > 0:
            raise SceneLocError(f"{path}: not a scene view file ({len(cells)} points, {grey.shape} grey values)")
        return cls(((cells + 0.5) * voxel).astype(np.float32), grey.astype(np.uint8), voxel)


@dataclass
class Rendering:
    """``render_view``'s output at ``(h, w)``: ``grey`` float32 (0 where nothing is seen), ``valid (h, w)``,
    and which of the rendered ``candidates (N, 4)`` (homogeneous world points, grey values
    ``candidate_grey (N,)``) each pixel shows (``source (h, w)``, 0 where not valid)."""
    grey: np.ndarray
    valid: np.ndarray
    source: np.ndarray
    candidates: np.ndarray
    candidate_grey: np.ndarray

    def points_at(self, v: np.ndarray, u: np.ndarray) -> np.ndarray:
        """World points ``(N, 3)`` float64 seen at pixels ``(v, u)`` (rows, columns)."""
        return np.take(self.candidates, self.source[v, u], axis=0)[:, :3].astype(np.float64)

    @property
    def points(self) -> np.ndarray:
        """World points ``(h, w, 3)`` float32 seen at each pixel (0 where not valid)."""
        h, w = self.valid.shape
        return np.take(self.candidates, self.source.ravel(), axis=0)[:, :3].reshape(h, w, 3) * self.valid[..., None]


def render_view(view: SceneView, T_wc: np.ndarray, K: np.ndarray, hw: tuple[int, int],
                reuse: Rendering | None = None) -> Rendering:
    """Render ``view`` from a camera-to-world pose ``T_wc (4, 4)`` with intrinsics ``K (3, 3)`` into an
    ``hw`` image: each point lands on its nearest pixel, the nearest point of a pixel wins, and points
    far behind the nearest surface around them (seen through its gaps) are hidden. ``reuse``: render
    the candidate points of that rendering (from a pose a few centimetres away) instead of finding the
    visible ones again."""
    h, w = hw
    T_cw = invert_pose(np.asarray(T_wc, dtype=np.float64))
    if reuse is not None:
        homogeneous, grey_seen = reuse.candidates, reuse.candidate_grey
    else:
        seen = view.visible(T_cw, K, hw)
        if not seen:
            nothing = np.zeros(hw, bool)
            return Rendering(np.zeros(hw, np.float32), nothing, np.zeros(hw, np.int64), np.zeros((1, 4), np.float32),
                             np.zeros(1, np.uint8))
        homogeneous = np.concatenate([view.homogeneous[s] for s in seen])
        grey_seen = np.concatenate([view.grey[s] for s in seen])
    # one product gives (u z, v z, z) of every point
    uvz = homogeneous @ (np.asarray(K, dtype=np.float64) @ T_cw[:3]).T.astype(np.float32)
    z = uvz[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        inverse = np.float32(1.0) / z
        u, v = uvz[:, 0] * inverse, uvz[:, 1] * inverse
        ahead = np.flatnonzero((z > 0.05) & (u > -0.5) & (u < w - 0.5) & (v > -0.5) & (v < h - 0.5))
    pixel = (v[ahead] + 0.5).astype(np.int64) * w + (u[ahead] + 0.5).astype(np.int64)   # nearest (centres at integers)
    # depth (0.1 mm steps) above the point's index in one integer: the smallest per pixel is the nearest point
    key = ((z[ahead] * DEPTH_STEPS_PER_M).astype(np.int64) << 32) | ahead
    best = torch.full((h * w,), torch.iinfo(torch.int64).max).scatter_reduce_(
        0, torch.from_numpy(pixel), torch.from_numpy(key), "amin").numpy().reshape(h, w)
    valid = best < np.iinfo(np.int64).max
    source = np.where(valid, best & 0xFFFFFFFF, 0)
    depth = np.where(valid, (best >> 32) / DEPTH_STEPS_PER_M, 1e3).astype(np.float32)
    near = cv2.erode(depth, np.ones((5, 5), np.uint8))
    valid &= depth < near * HIDDEN_RATIO + HIDDEN_MARGIN_M
    grey = grey_seen[source].astype(np.float32) * valid
    return Rendering(grey, valid, source, homogeneous, grey_seen)


def fill_holes(image: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``image (h, w)`` float32 with the pixels outside ``valid`` filled from ever coarser averages of
    the valid ones (push-pull): smooth, so the flow finds no edges at holes."""
    levels = []
    value: np.ndarray = (image * valid).astype(np.float32)
    weight: np.ndarray = valid.astype(np.float32)
    while min(value.shape) > 4:
        levels.append((value, weight))
        size = (value.shape[1] // 2, value.shape[0] // 2)
        value = cv2.resize(value, size, interpolation=cv2.INTER_AREA)
        weight = cv2.resize(weight, size, interpolation=cv2.INTER_AREA)
    filled = np.where(weight > 0, value / np.maximum(weight, 1e-6), value.sum() / max(float(weight.sum()), 1e-6))
    for value, weight in reversed(levels):
        coarse = cv2.resize(filled, (value.shape[1], value.shape[0]), interpolation=cv2.INTER_LINEAR)
        alpha = np.minimum(weight, 1.0)
        filled = value / np.maximum(weight, 1e-6) * (weight > 0) * alpha + coarse * (1 - alpha)
    return filled


def match_rendering(rendering: Rendering, query: np.ndarray, step: int = SAMPLE_STEP,
                    check_px: float = FLOW_CHECK_PX) -> tuple[np.ndarray, np.ndarray]:
    """Pixels ``(N, 2)`` in the grey ``query (h, w)`` uint8 and their world points ``(N, 3)``: the flow from
    the rendering (holes filled, brightness matched to the query) to the query at every ``step``-th
    rendered pixel whose backward flow returns within ``check_px``."""
    valid = rendering.valid
    target, source = query[valid].astype(np.float32), rendering.grey[valid]
    filled = fill_holes(rendering.grey, valid)
    # exposure differs between recordings: match the rendering's mean and spread to the query's
    filled = (filled - source.mean()) / (source.std() + 1e-6) * target.std() + target.mean()
    filled = np.clip(filled, 0, 255).astype(np.uint8)
    dis = cv2.DISOpticalFlow.create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
    h, w = query.shape
    # None, not an array: DIS reads a given array as its first guess (split 2 lost 4.5 points with zeros)
    forward = np.asarray(dis.calc(filled, query, None))  # type: ignore[call-overload]
    backward = np.asarray(dis.calc(query, filled, None))  # type: ignore[call-overload]
    v, u = np.mgrid[0:h:step, 0:w:step]
    keep = valid[v, u]
    v, u = v[keep], u[keep]
    flow = forward[v, u]
    tu, tv = u + flow[:, 0], v + flow[:, 1]
    inside = (tu > -0.5) & (tu < w - 0.5) & (tv > -0.5) & (tv < h - 0.5)
    back = backward[np.clip(np.round(tv), 0, h - 1).astype(int), np.clip(np.round(tu), 0, w - 1).astype(int)]
    ok = inside & (np.linalg.norm(flow + back, axis=1) < check_px)
    return np.stack([tu[ok], tv[ok]], axis=1), rendering.points_at(v[ok], u[ok])


def gauss_newton_pnp(pixels: np.ndarray, points: np.ndarray, K: np.ndarray, T_cw: np.ndarray,
                     steps: int = GAUSS_NEWTON_STEPS) -> np.ndarray:
    """World-to-camera pose ``T_cw (4, 4)`` moved by ``steps`` Gauss-Newton steps on the squared
    reprojection error of ``points (N, 3)`` (world) at ``pixels (N, 2)`` with intrinsics ``K (3, 3)``;
    each step a rotation and translation in the camera frame."""
    T = np.asarray(T_cw, dtype=np.float64).copy()
    fx, fy = float(K[0, 0]), float(K[1, 1])
    n = len(points)
    J = np.empty((2 * n, 6))
    for _ in range(steps):
        x = transform_points(T, points)
        X, Y, iz = x[:, 0], x[:, 1], 1.0 / np.maximum(x[:, 2], 1e-6)
        a, b = X * iz, Y * iz   # normalised image coordinates
        r = np.concatenate([fx * a + K[0, 2] - pixels[:, 0], fy * b + K[1, 2] - pixels[:, 1]])
        # d(u, v) / d(rotation w, translation t) of the camera-frame update x -> x + w x x + t
        J[:n, 0], J[:n, 1], J[:n, 2] = -fx * a * b, fx * (1 + a * a), -fx * b
        J[:n, 3], J[:n, 4], J[:n, 5] = fx * iz, 0.0, -fx * a * iz
        J[n:, 0], J[n:, 1], J[n:, 2] = -fy * (1 + b * b), fy * a * b, fy * a
        J[n:, 3], J[n:, 4], J[n:, 5] = 0.0, fy * iz, -fy * b * iz
        step = np.linalg.solve(J.T @ J + 1e-9 * np.eye(6), -J.T @ r)
        T = make_pose(cv2.Rodrigues(step[:3])[0], step[3:]) @ T
    return T


def refit_robust(pixels: np.ndarray, points: np.ndarray, K: np.ndarray, T_wc: np.ndarray,
                 thresholds_px: Sequence[float] = REFIT_THRESHOLDS_PX) -> tuple[np.ndarray, int] | None:
    """Camera-to-world pose re-fitted from ``T_wc`` to 2D-3D correspondences ``pixels (N, 2)``, ``points
    (N, 3)``: Gauss-Newton on all of them, then on the inliers of each threshold in turn (pixels at a
    525 px focal length, scaled with ``K``'s); and its inlier count at the last. None with fewer than
    ``MIN_INLIERS``."""
    T_cw = invert_pose(np.asarray(T_wc, dtype=np.float64))
    scale = float(K[0, 0]) / 525.0
    inliers = np.ones(len(pixels), bool)
    for threshold in thresholds_px:
        if inliers.sum() < MIN_INLIERS:
            return None
        T_cw = gauss_newton_pnp(pixels[inliers], points[inliers], K, T_cw)
        inliers = reprojection_errors(invert_pose(T_cw), points, pixels, K) < threshold * scale
    if inliers.sum() < MIN_INLIERS:
        return None
    return invert_pose(T_cw), int(inliers.sum())


@dataclass
class ImageAlignment:
    """Result of ``align_image``: camera-to-world ``pose (4, 4)`` and the last round's inlier count."""
    pose: np.ndarray
    inliers: int


def query_at_render_size(image: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """The grey query ``(h, w)`` uint8 at ``RENDER_WIDTH_PX`` (or its own size when smaller), its
    intrinsics ``(3, 3)`` (``scale_intrinsics``: pixel centres stay exact) and the factor ``W / w``."""
    H, W = image.shape[:2]
    factor = W / RENDER_WIDTH_PX if W > RENDER_WIDTH_PX else 1.0
    w, h = round(W / factor), round(H / factor)
    query = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if factor != 1.0:
        query = cv2.resize(query, (w, h), interpolation=cv2.INTER_AREA)
    return query, scale_intrinsics(K, 1.0 / factor), factor


def align_image(image: np.ndarray, K: np.ndarray, T_wc: np.ndarray, view: SceneView, rounds: int = ROUNDS
                ) -> ImageAlignment | None:
    """Align the camera-to-world pose ``T_wc (4, 4)`` of an RGB ``image (H, W, 3)`` uint8 with intrinsics
    ``K (3, 3)`` to ``view``: ``rounds`` times, render the view at the pose at ``RENDER_WIDTH_PX``, match
    the rendering to the image (``match_rendering``) and re-fit the pose (``refit_robust``). None when the
    rendering covers too little of the image, too few correspondences hold, or the pose moved further
    than ``MAX_MOVE_M`` / turned more than ``MAX_TURN_DEG``: then the starting pose stands."""
    query, K_small, factor = query_at_render_size(image, K)
    K = np.asarray(K, dtype=np.float64)
    T = np.asarray(T_wc, dtype=np.float64)
    result, rendering = None, None
    for _ in range(rounds):
        # later rounds move the pose by centimetres: the points the first round found visible still are
        rendering = render_view(view, T, K_small, query.shape, reuse=rendering)
        if rendering.valid.mean() < MIN_COVERAGE:
            return None
        pixels, points = match_rendering(rendering, query)
        fit = refit_robust((pixels + 0.5) * factor - 0.5, points, K, T)
        if fit is None:
            return None
        T = fit[0]
        result = ImageAlignment(T, fit[1])
    if result is None:
        return None
    turned_deg, moved_m = pose_errors(T, T_wc)
    if moved_m > MAX_MOVE_M or turned_deg > MAX_TURN_DEG:
        return None
    return result
