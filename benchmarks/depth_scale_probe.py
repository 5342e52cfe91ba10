"""Which scale of the depth do a dataset's poses agree with? A probe for a mapping-time depth-scale estimate.

For pairs of mapping frames (evenly spaced firsts, each with the frame within ``--max-rotation-deg``
whose baseline is at the 75th percentile of those), every sampled depth point of one frame, scaled by
``s`` (pose units per depth metre), is carried by the two poses into the other frame and compared with
that frame's depth along its normal (point-to-plane, both depths scaled by ``s``). ``s`` is fitted by
least squares over all pairs (matches within 5 cm, then 2 cm, re-associated each round). A scale that
makes the mapping depth agree with the poses from every view is what a map built from them needs, if
that agreement were all that mattered: ``docs/accuracy.md`` ("The depth's scale against the poses")
shows it is not.

Usage:
    python benchmarks/depth_scale_probe.py runs/folds/data/sfm_f1 runs/folds/data/dslam_f1
"""

from __future__ import annotations

import argparse
import sys
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sceneloc.data.dataset import Frame, evenly_spaced, load_scene
from sceneloc.geometry import backproject, invert_pose, pixel_grid, project, rotation_error_deg

ROUNDS_M = (0.05, 0.05, 0.02, 0.02, 0.02, 0.02)   # match distance of each least-squares round


def pair_partners(poses_wc: np.ndarray, firsts: np.ndarray, max_rotation_deg: float) -> list[tuple[int, int]]:
    """A partner for each index of ``firsts`` among ``poses_wc (N, 4, 4)``: within ``max_rotation_deg``,
    at the 75th percentile of those frames' baselines (no length unit enters the choice)."""
    pairs = []
    for i in firsts:
        rot = np.array([float(rotation_error_deg(p[:3, :3], poses_wc[i, :3, :3])) for p in poses_wc])
        near = np.flatnonzero(rot < max_rotation_deg)
        near = near[near != i]
        if len(near):
            base = np.linalg.norm(poses_wc[near, :3, 3] - poses_wc[i, :3, 3], axis=1)
            pairs.append((int(i), int(near[np.argsort(base)[int(0.75 * (len(near) - 1))]])))
    return pairs


class DepthView:
    """A frame's depth as rays ``(H, W, 3)`` (z = 1), depth ``(H, W)`` metres, normals where smooth, and
    (read on first use) its grey image."""

    def __init__(self, frame: Frame):
        self.frame, self.K = frame, frame.K
        self.depth = frame.load_depth().astype(np.float64)
        self.rays = backproject(pixel_grid(*self.depth.shape), np.ones(self.depth.shape), self.K)
        P = self.rays * self.depth[..., None]
        n = np.cross(P[1:-1, 2:] - P[1:-1, :-2], P[2:, 1:-1] - P[:-2, 1:-1])
        self.normals = np.zeros(P.shape)
        self.normals[1:-1, 1:-1] = n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
        d = self.depth
        near = np.stack([d[1:-1, 2:], d[1:-1, :-2], d[2:, 1:-1], d[:-2, 1:-1], d[1:-1, 1:-1]], -1)
        self.valid = np.zeros(d.shape, bool)
        self.valid[1:-1, 1:-1] = (near.min(-1) > 0) & (near.max(-1) <= 1.03 * near.min(-1))

    @cached_property
    def grey(self) -> np.ndarray:
        """``(H, W)`` float32 grey values of the frame's image (each image is read once per probe)."""
        return cv2.cvtColor(self.frame.load_image(), cv2.COLOR_RGB2GRAY).astype(np.float32)


def carried(points: np.ndarray, a: DepthView, b: DepthView) -> tuple[np.ndarray, np.ndarray]:
    """``a``'s camera-frame ``points (N, 3)`` in ``b``'s image: pixels ``(N, 2)`` (``geometry.project``)
    and ``(N,)`` bool, in front of ``b``."""
    T = invert_pose(b.frame.pose) @ a.frame.pose
    Y = points @ T[:3, :3].T + T[:3, 3]
    front = Y[:, 2] > 1e-6
    Y[~front, 2] = 1.0   # behind b: projected anyway (masked by ``front``), without dividing by ~0
    return project(Y, b.K), front


def scale_terms(a: DepthView, b: DepthView, s: float, distance_m: float, stride: int = 4
                ) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``(M,)`` of the linear model ``coefficient * s = target`` for ``a``'s depth points carried
    into ``b`` at scale ``s``: residual ``n . (R s z_a r_a + t - s z_b r_b)`` along ``b``'s normal ``n``."""
    H, W = a.depth.shape
    z = a.depth[stride // 2::stride, stride // 2::stride].ravel()
    r = a.rays[stride // 2::stride, stride // 2::stride].reshape(-1, 3)
    r, z = r[z > 0], z[z > 0]
    T = invert_pose(b.frame.pose) @ a.frame.pose
    R, t = T[:3, :3], T[:3, 3]
    uv, front = carried(s * z[:, None] * r, a, b)
    u, v = np.round(uv).astype(int).T
    idx = np.flatnonzero(front & (u >= 0) & (u < W) & (v >= 0) & (v < H))
    idx = idx[b.valid[v[idx], u[idx]]]
    n = b.normals[v[idx], u[idx]]
    coefficient = np.einsum("ij,ij->i", n, z[idx, None] * (r[idx] @ R.T) - b.depth[v[idx], u[idx], None]
                            * b.rays[v[idx], u[idx]])
    target = -n @ t
    keep = np.abs(coefficient * s - target) < distance_m
    return coefficient[keep], target[keep]


SCALES = np.arange(0.94, 1.08 + 1e-9, 0.004)   # the photometric probe's grid of scales


def photometric_costs(a: DepthView, b: DepthView, stride: int = 2, min_gradient: float = 8.0) -> np.ndarray:
    """Mean absolute grey difference ``(len(SCALES),)`` between ``a``'s textured pixels (grey gradient
    above ``min_gradient`` per pixel) and where their depth, scaled by each of ``SCALES`` and carried by
    the two poses, lands in ``b``'s image (bilinear; differences capped at 30 grey levels)."""
    grey_a, grey_b = a.grey, b.grey
    gx, gy = cv2.Sobel(grey_a, cv2.CV_32F, 1, 0) / 8, cv2.Sobel(grey_a, cv2.CV_32F, 0, 1) / 8
    pick = np.zeros(a.depth.shape, bool)
    pick[::stride, ::stride] = True
    pick &= (np.hypot(gx, gy) > min_gradient) & (a.depth > 0)
    z, r, seen = a.depth[pick], a.rays[pick], grey_a[pick]
    H, W = grey_b.shape
    costs = []
    for s in SCALES:
        uv, front = carried(s * z[:, None] * r, a, b)
        u, v = np.ascontiguousarray(uv.T, dtype=np.float32)
        inside = front & (u > 1) & (u < W - 2) & (v > 1) & (v < H - 2)
        there = cv2.remap(grey_b, u[None], v[None], cv2.INTER_LINEAR)[0]
        costs.append(np.minimum(np.abs(there - seen), 30.0)[inside].mean() if inside.mean() > 0.3 else np.nan)
    return np.array(costs)


def paired_views(frames: list[Frame], pairs: int, max_rotation_deg: float
                 ) -> tuple[dict[int, DepthView], list[tuple[int, int]]]:
    """Each frame of up to ``pairs`` pairs (``pair_partners`` of evenly spaced firsts) as a ``DepthView``,
    and every pair in both directions ``(from, to)``."""
    poses = np.stack([f.pose for f in frames])
    chosen = pair_partners(poses, evenly_spaced(len(frames), pairs), max_rotation_deg)
    views = {k: DepthView(frames[k]) for pair in chosen for k in pair}
    return views, [(a, b) for i, j in chosen for a, b in ((i, j), (j, i))]


def photometric_probe(frames: list[Frame], pairs: int, max_rotation_deg: float) -> tuple[float, int, int]:
    """The scale (of ``SCALES``, refined by a parabola) at which each mapping image's textured pixels,
    carried by their depth and the poses, look most alike in their partner image, summed over pairs."""
    views, directions = paired_views(frames, pairs, max_rotation_deg)
    curves = [photometric_costs(views[a], views[b]) for a, b in directions]
    curves = [c for c in curves if np.isfinite(c).all()]
    total = np.sum(curves, axis=0)
    k = int(np.clip(np.argmin(total), 1, len(SCALES) - 2))
    left, mid, right = total[k - 1:k + 2]
    shift = 0.5 * (left - right) / max(left - 2 * mid + right, 1e-12)
    return float(SCALES[k] + shift * (SCALES[1] - SCALES[0])), len(directions) // 2, len(curves)


def probe(frames: list[Frame], pairs: int, max_rotation_deg: float) -> tuple[float, int, int]:
    """The fitted scale, the pairs used and the matched points of the last round."""
    views, directions = paired_views(frames, pairs, max_rotation_deg)
    s, count = 1.0, 0
    for distance in ROUNDS_M:
        rows = [scale_terms(views[a], views[b], s, distance) for a, b in directions]
        c = np.concatenate([r[0] for r in rows])
        y = np.concatenate([r[1] for r in rows])
        s, count = float(c @ y / (c @ c)), len(c)
    return s, len(directions) // 2, count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("datasets", nargs="+", help="dataset roots (their train split is probed, recording by recording)")
    ap.add_argument("--pairs", type=int, default=30, help="pairs of frames per recording")
    ap.add_argument("--method", choices=("depth", "photometric"), default="depth",
                    help="depth: depth against depth along normals; photometric: grey values through depth")
    ap.add_argument("--max-rotation-deg", type=float, nargs="+", default=[6.0, 20.0],
                    help="largest rotation within a pair, degrees (one probe each)")
    args = ap.parse_args()
    print(f"method: {args.method}")
    print("| dataset | recording | pairs within | scale (pose units per depth metre) | pairs "
          "| points (photometric: directions) |")
    print("|---|---|---|---:|---:|---:|")
    for root in args.datasets:
        frames = [f for f in load_scene(root).frames("train") if f.depth_path is not None]
        for name in sorted({Path(f.name).parts[0] for f in frames}):
            group = [f for f in frames if Path(f.name).parts[0] == name]
            for max_rot in args.max_rotation_deg:
                measure = probe if args.method == "depth" else photometric_probe
                s, n_pairs, points = measure(group, args.pairs, max_rot)
                print(f"| {Path(root).name} | {name} | {max_rot:g} deg | {s:.4f} | {n_pairs} | {points} |", flush=True)


if __name__ == "__main__":
    main()
