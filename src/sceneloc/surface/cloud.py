"""The scene's surface from the mapping frames' depth, and a query's depth aligned to it (ICP).

Scene coordinates place an RGB-D query within a few centimetres, but their errors are shared by
neighbouring cells (a bias the rigid fit cannot average out), so a few frames in ten miss 5 cm / 5 deg.
The mapping frames' own depth, fused at their ground-truth poses, is a far more exact model of the
surfaces: point-to-plane ICP of the query's depth against it, started at the scene-coordinate pose,
removes most of that bias (docs/decisions/scene-surface.md). Kinect depth can read a few
centimetres long against its image, so the alignment also fits an offset of the query depth along
its rays, under a Gaussian prior, as ``pose.fit.refit_depth_offset`` does for Kabsch.

>>> cloud = SceneCloud.build(frames)                                   # doctest: +SKIP
>>> fit = align_depth(depth_points(depth, K), T_wc, cloud)              # doctest: +SKIP
>>> fit.pose, fit.offset_m                                             # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np
from scipy.spatial import cKDTree

from sceneloc.errors import SceneLocError
from sceneloc.geometry import backproject, make_pose, pose_errors, transform_points
from sceneloc.progress import progress as progress_bar

SCENE_CLOUD_FILE = "scene_cloud.npz"
#: voxel of the fused surface (``MappingConfig.cloud_voxel_m``; docs/decisions/scene-surface.md)
VOXEL_M = 0.02
#: strides at a 640-pixel-wide depth map, scaled with the width (``scaled_stride``):
MAPPING_STRIDE_PX = 8    # every 8th pixel of each mapping depth map is fused (scene-surface.md: 4 is no better)
#: every 12th pixel of the query depth takes part in ICP (~2000 points at 640 x 480); every 16th is
#: faster and less exact on misregistered depth (docs/decisions/scene-surface.md)
QUERY_STRIDE_PX = 12
REFERENCE_WIDTH_PX = 640
MIN_MATCHES = 50         # fewer query points near the surface: the alignment is not trusted
#: an ICP that moved the camera further than twice its first matching distance, or turned it further
#: than this, slid along the surface rather than converged: the alignment is not trusted
MAX_TURN_DEG = 15.0
#: ICP defaults (``PoseConfig.icp_distances_m``, ``icp_offset_sigma_m``; docs/decisions/scene-surface.md):
#: one Gauss-Newton step per matching distance, and the prior width of the depth offset
ICP_DISTANCES_M = (0.1, 0.05, 0.03, 0.02, 0.02, 0.02)
ICP_OFFSET_SIGMA_M = 0.003
#: a depth step larger than this share of the depth between neighbouring samples is an occlusion edge,
#: not a surface: no normal there
EDGE_RATIO = 0.2


def depth_grid(depth: np.ndarray, K: np.ndarray, stride: int) -> np.ndarray:
    """Camera-frame points ``(h, w, 3)`` of every ``stride``-th pixel of ``depth (H, W)`` (metres,
    0 = none; z = 0 there), starting at ``stride // 2``."""
    rows, cols = depth.shape
    v, u = np.mgrid[stride // 2:rows:stride, stride // 2:cols:stride]
    return backproject(np.stack([u, v], axis=-1).astype(np.float64), depth[v, u].astype(np.float64), K)


def scaled_stride(width: int, stride_at_reference: int) -> int:
    """A sampling stride for a ``width``-pixel-wide image that takes as many samples per image as
    ``stride_at_reference`` does at ``REFERENCE_WIDTH_PX`` (at least 1)."""
    return max(1, round(stride_at_reference * width / REFERENCE_WIDTH_PX))


def depth_points(depth: np.ndarray, K: np.ndarray, stride: int | None = None) -> np.ndarray:
    """Camera-frame points ``(N, 3)`` of the valid pixels of ``depth (H, W)`` on a ``stride`` grid
    (None: ``QUERY_STRIDE_PX`` scaled to the width)."""
    stride = scaled_stride(depth.shape[1], QUERY_STRIDE_PX) if stride is None else stride
    grid = depth_grid(depth, K, stride).reshape(-1, 3)
    return grid[grid[:, 2] > 0]


def grid_normals(grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Surface points ``(N, 3)`` and unit normals ``(N, 3)`` (facing the camera) of the inner cells of
    a camera-frame point grid ``(h, w, 3)``, from central differences; cells next to missing depth or
    an occlusion edge are dropped."""
    centre = grid[1:-1, 1:-1]
    dx = grid[1:-1, 2:] - grid[1:-1, :-2]
    dy = grid[2:, 1:-1] - grid[:-2, 1:-1]
    z = grid[..., 2]
    valid = (z[1:-1, 1:-1] > 0) & (z[1:-1, 2:] > 0) & (z[1:-1, :-2] > 0) & (z[2:, 1:-1] > 0) & (z[:-2, 1:-1] > 0)
    valid &= (np.abs(dx[..., 2]) < EDGE_RATIO * centre[..., 2]) & (np.abs(dy[..., 2]) < EDGE_RATIO * centre[..., 2])
    normal = np.cross(dx, dy)
    length = np.linalg.norm(normal, axis=-1)
    valid &= length > 1e-12
    normal = normal[valid] / length[valid, None]
    points = centre[valid]
    facing = np.sign(-(normal * points).sum(-1, keepdims=True))   # towards the camera at the origin
    return points, normal * np.where(facing == 0, 1.0, facing)


def depth_surfels(depth: np.ndarray | None, K: np.ndarray, T_wc: np.ndarray, stride: int | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """World points ``(N, 3)`` and normals ``(N, 3)`` (float32) of ``depth (H, W)`` seen from the
    camera-to-world pose ``T_wc`` with intrinsics ``K``, on a ``stride`` grid (None: ``MAPPING_STRIDE_PX``
    scaled to the width); empty without a depth map."""
    if depth is None:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32)
    step = scaled_stride(depth.shape[1], MAPPING_STRIDE_PX) if stride is None else stride
    p, n = grid_normals(depth_grid(depth, K, step))
    # float32: hundreds of frames' samples are held at once (1 mm steps at 10 m)
    return transform_points(T_wc, p).astype(np.float32), (n @ T_wc[:3, :3].T).astype(np.float32)


def fuse(points: Sequence[np.ndarray], normals: Sequence[np.ndarray], voxel: float = VOXEL_M
         ) -> tuple[np.ndarray, np.ndarray]:
    """World points ``(N_i, 3)`` and normals of several frames -> one point ``(M, 3)`` and unit normal
    per ``voxel``-sized cell: the means of the cell's samples. Cells seen once, or whose normals
    disagree (mean normal shorter than 0.5), are dropped: noise and edges."""
    P, N = np.concatenate(points).astype(np.float64), np.concatenate(normals).astype(np.float64)
    if not len(P):
        return np.zeros((0, 3)), np.zeros((0, 3))
    _, cell, count = np.unique(np.floor(P / voxel).astype(np.int64), axis=0, return_inverse=True,
                               return_counts=True)
    cell = cell.ravel()
    mean_p, mean_n = np.zeros((len(count), 3)), np.zeros((len(count), 3))
    np.add.at(mean_p, cell, P)
    np.add.at(mean_n, cell, N)
    length = np.linalg.norm(mean_n, axis=1)
    keep = (count >= 2) & (length > 0.5 * count)
    return mean_p[keep] / count[keep, None], mean_n[keep] / length[keep, None]


@dataclass
class SceneCloud:
    """The scene's surface: ``points (M, 3)`` (world, metres) and unit ``normals (M, 3)``."""
    points: np.ndarray
    normals: np.ndarray
    voxel_m: float = VOXEL_M

    @cached_property
    def tree(self) -> cKDTree:
        """Nearest-neighbour index of ``points`` (built on first use, ~0.1 s for 130 k points)."""
        return cKDTree(self.points)

    @staticmethod
    def frame_surfels(frames: Iterable, stride: int | None = None, desc: str = "scene surface"
                      ) -> list[tuple[np.ndarray, np.ndarray]]:
        """``depth_surfels`` of each frame's depth at its pose (frames without depth: empty)."""
        return [depth_surfels(None if f.depth_path is None else f.load_depth(), f.K, f.pose, stride)
                for f in progress_bar(list(frames), desc=desc, unit="frame", mininterval=1.0, dynamic_ncols=True)]

    @classmethod
    def from_surfels(cls, surfels: Sequence[tuple[np.ndarray, np.ndarray]], voxel: float = VOXEL_M
                     ) -> SceneCloud | None:
        """The fused cloud of ``frame_surfels`` output, or None when it has no surface."""
        points, normals = fuse([p for p, _ in surfels], [n for _, n in surfels], voxel)
        return cls(points, normals, voxel) if len(points) >= MIN_MATCHES else None

    @classmethod
    def build(cls, frames: Iterable, voxel: float = VOXEL_M, stride: int | None = None) -> SceneCloud | None:
        """Fuse the depth of ``frames`` (each with ``pose``, ``K``, ``load_depth``); None without depth."""
        return cls.from_surfels(cls.frame_surfels(frames, stride), voxel)

    def save(self, map_dir: Path) -> None:
        """Points as float16 offsets from their centre (1-2 mm steps within 4 m: far below the voxel),
        normals as int8: 9 bytes a point."""
        centre = self.points.mean(axis=0)
        np.savez_compressed(Path(map_dir) / SCENE_CLOUD_FILE, centre=centre,
                            offsets=(self.points - centre).astype(np.float16),
                            normals=np.round(self.normals * 127).astype(np.int8), voxel_m=self.voxel_m)

    @classmethod
    def load(cls, map_dir: Path) -> SceneCloud | None:
        """The map's scene surface, or None for a map without one."""
        path = Path(map_dir) / SCENE_CLOUD_FILE
        if not path.exists():
            return None
        try:
            with np.load(path) as z:
                points = z["centre"].astype(np.float64) + z["offsets"].astype(np.float64)
                normals = z["normals"].astype(np.float64)
                voxel = float(z["voxel_m"])
        except (OSError, ValueError, KeyError) as e:
            raise SceneLocError(f"{path}: not a scene surface file ({e})") from None
        if points.ndim != 2 or points.shape[1] != 3 or normals.shape != points.shape:
            raise SceneLocError(f"{path}: not a scene surface file (points {points.shape}, normals {normals.shape})")
        return cls(points, normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-9), voxel)


#: ``align_depth`` keeps a fitted depth scale only this many standard deviations away from 0
SCALE_MIN_SIGMAS = 3.0


@dataclass
class DepthAlignment:
    """Result of ``align_depth``: camera-to-world ``pose (4, 4)``, the fitted offset of the query depth
    along its rays (metres, positive: the depth reads long), the share of query points matched in
    the last round and the fitted relative scale error of the depth (positive: it reads long)."""
    pose: np.ndarray
    offset_m: float
    matched: float
    scale_error: float = 0.0


def align_depth(camera: np.ndarray, T_wc: np.ndarray, cloud: SceneCloud,
                distances: Sequence[float] = ICP_DISTANCES_M, offset_sigma_m: float = ICP_OFFSET_SIGMA_M,
                offset_m: float = 0.0, scale_sigma: float = 0.0,
                scale_min_sigmas: float = SCALE_MIN_SIGMAS) -> DepthAlignment | None:
    """Point-to-plane ICP of query points ``camera (N, 3)`` (camera frame, from its depth) against
    ``cloud``, from the camera-to-world pose ``T_wc (4, 4)``: one Gauss-Newton step per entry of
    ``distances``, each matching the points to their nearest surface point within that distance.
    With ``offset_sigma_m > 0`` it also fits an offset ``d`` of the depth along the rays (a point at
    depth z moves to depth z - d) under a Gaussian prior of that width, residuals weighted by their
    robust spread; 0 fits no offset. ``offset_m`` is the offset to start from (kept as it is when no
    offset is fitted). With ``scale_sigma > 0`` it also fits a relative scale error ``k`` of the depth
    (a point x moves to x (1 - k)) under a Gaussian prior of that width: a depth camera whose scale is
    off by 2 % moves far points by centimetres, which no rigid motion or constant offset explains.
    The scale is kept only where the matches measure it: a fitted scale within ``scale_min_sigmas``
    standard deviations of 0 (from the last round's normal equations) is a scale the scene does not
    constrain, traded for translation, and the fit is made again without it.
    None when fewer than ``MIN_MATCHES`` points match in a round,
    or when it moved the camera more than twice the first distance or turned it more than
    ``MAX_TURN_DEG``: then the starting pose stands."""
    rays = camera / camera[:, 2:3]
    T = np.asarray(T_wc, dtype=np.float64).copy()
    fitted, matched = {"offset": float(offset_m), "scale": 0.0}, 0.0
    # the unknowns beside the rigid motion: (name, prior width, the camera-frame direction each point
    # moves along as it grows)
    extras = [(name, sigma, direction) for name, sigma, direction in
              (("offset", offset_sigma_m, rays), ("scale", scale_sigma, camera)) if sigma > 0]
    for distance in distances:
        moved = transform_points(T, (camera - fitted["offset"] * rays) * (1.0 - fitted["scale"]))
        gap, nearest = cloud.tree.query(moved, distance_upper_bound=distance, workers=1)
        found = np.isfinite(gap)
        if found.sum() < MIN_MATCHES:
            return None
        matched = float(found.mean())
        q, p, n = moved[found], cloud.points[nearest[found]], cloud.normals[nearest[found]]
        residual = ((q - p) * n).sum(axis=1)
        # d(residual) / d(rotation w, translation t) of a world-frame update exp(w) q + t
        A = np.concatenate([np.cross(q, n), n], axis=1)
        b = -residual
        if extras:
            columns = [-((direction[found] @ T[:3, :3].T) * n).sum(axis=1, keepdims=True) for _, _, direction in extras]
            spread = max(1.4826 * float(np.median(np.abs(residual))), 0.003)
            prior = np.zeros((len(extras), 6 + len(extras)))
            prior[:, 6:] = np.diag([1.0 / sigma for _, sigma, _ in extras])
            A = np.concatenate([np.concatenate([A, *columns], axis=1) / spread, prior])
            b = np.concatenate([b / spread, [-fitted[name] / sigma for name, sigma, _ in extras]])
        step = np.linalg.lstsq(A, b, rcond=None)[0]
        T = make_pose(cv2.Rodrigues(step[:3])[0], step[3:6]) @ T
        for k, (name, _, _) in enumerate(extras):
            fitted[name] += float(step[6 + k])
    if scale_sigma > 0 and scale_min_sigmas > 0:
        try:   # the last round's normal equations; the scale is the last unknown; singular: not measured
            scale_sd = float(np.sqrt(np.linalg.inv(A.T @ A)[-1, -1]))
        except np.linalg.LinAlgError:
            scale_sd = math.inf
        if not abs(fitted["scale"]) >= scale_min_sigmas * scale_sd:   # NaN counts as not measured
            return align_depth(camera, T_wc, cloud, distances, offset_sigma_m, offset_m)
    turned_deg, moved_m = pose_errors(T, T_wc)
    if moved_m > 2 * max(distances) or turned_deg > MAX_TURN_DEG:
        return None
    return DepthAlignment(T, fitted["offset"], matched, fitted["scale"])
