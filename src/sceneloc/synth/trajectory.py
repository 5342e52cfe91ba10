"""Camera trajectories of synthetic scenes: free space, waypoints looking at textured structure
(optionally anchored near earlier walks: test walks inside the mapped space), smooth splines with
hand-held wobble."""

from __future__ import annotations

import math

import cv2
import numpy as np

from sceneloc.synth.scenes import Scene, vec3

# ===================================================================================== trajectories


def _box_distance(p: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Distance from points ``p (..., 3)`` to an axis-aligned box (0 inside)."""
    return np.linalg.norm(np.maximum(np.maximum(lo - p, p - hi), 0), axis=-1)


def free_space(scene: Scene, p: np.ndarray, slack: float = 0.0) -> np.ndarray:
    """Whether camera centres ``p (..., 3)`` lie in the camera region (``slack`` metres of tolerance)
    and at least ``clearance - slack`` from every obstacle."""
    lo, hi = scene.camera_region
    ok = np.all((p >= lo - slack) & (p <= hi + slack), axis=-1)
    for blo, bhi in scene.obstacles:
        ok &= _box_distance(p, blo, bhi) >= scene.clearance - slack
    return ok


def sample_scene_points(scene: Scene, rng: np.random.Generator, n: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    """Random points on the scene's surfaces worth looking at (weighted by area and interest, no
    ceiling), within the scene's ``look_halfspace`` if it has one: ``points (n, 3)`` and their
    ``normals (n, 3)``."""
    quads = [q for q in scene.quads if q.normal[2] > -0.5]
    weight = np.array([np.linalg.norm(np.cross(q.e1, q.e2)) * q.interest for q in quads])
    # a half-space keeps part of the draws: draw more (rejection sampling keeps the weights' proportions)
    draws = n if scene.look_halfspace is None else 4 * n
    idx = rng.choice(len(quads), draws, p=weight / weight.sum())
    ab = rng.random((draws, 2))
    origins = np.array([q.origin for q in quads])[idx]
    pts = origins + ab[:, :1] * np.array([q.e1 for q in quads])[idx] + ab[:, 1:] * np.array([q.e2 for q in quads])[idx]
    normals = np.array([q.normal for q in quads])[idx]
    if scene.look_halfspace is not None:
        direction, offset = scene.look_halfspace
        keep = np.flatnonzero(pts @ np.asarray(direction, np.float64) < offset)[:n]
        pts, normals = pts[keep], normals[keep]
    return pts, normals


#: A test walk's waypoints lie within this distance (m) and view angle (deg) of a training frame.
ANCHOR_M, ANCHOR_DEG = 0.4, 25.0
ANCHORED_ATTEMPTS = 5            # anchored walks tried before a free one


def _anchored_views(c: np.ndarray, d: np.ndarray, dist: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Which viewing directions ``d (n, 3)`` (lengths ``dist (n,)``) from camera centre ``c (3,)``
    some training frame of ``anchors (N, 4, 4)`` (camera-to-world) within ``ANCHOR_M`` of ``c``
    looks along to within ``ANCHOR_DEG``: ``(n,)`` bool (all False when no frame is that close)."""
    near = np.linalg.norm(anchors[:, :3, 3] - c, axis=1) < ANCHOR_M
    if not near.any():
        return np.zeros(len(d), bool)
    forward = anchors[near, :3, 2]                                 # optical axes (k, 3)
    return ((d / dist[:, None]) @ forward.T).max(axis=1) > math.cos(math.radians(ANCHOR_DEG))


def _waypoints(scene: Scene, rng: np.random.Generator,
               anchors: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """Camera waypoints ``(K, 3)`` in free space, 0.5-1.6 m apart, each with a look-at point
    ``(K, 3)`` on a surface facing it, within the scene's view range and not too steep.

    The view turns at most 60 degrees between waypoints (a hand-held camera pans smoothly); in a
    ``sweep`` scene it turns 15-75 degrees each time, always the same way round, so that a
    sequence scans the whole room as people do when they film one. With ``anchors`` (training
    poses ``(N, 4, 4)``) every waypoint is a view near a training frame (:func:`_anchored_views`):
    a separate walk, but through the space the training walks mapped; None when no such walk is
    found (too few training frames).
    """
    pts, normals = sample_scene_points(scene, rng)
    lo, hi = scene.camera_region
    sense = rng.choice([-1.0, 1.0])
    cams: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    while len(cams) < scene.waypoints:
        for _ in range(10000 if anchors is None else 2000):
            if anchors is None:
                c = lo + rng.random(3) * (hi - lo)
            else:  # near a training camera: far likelier to pass _anchored_views than anywhere
                c = anchors[rng.integers(len(anchors)), :3, 3] + (2 * rng.random(3) - 1) * ANCHOR_M
            if not free_space(scene, c):
                continue
            if cams and not 0.5 <= np.linalg.norm(c - cams[-1]) <= 1.6:
                continue
            d = pts - c
            dist = np.linalg.norm(d, axis=1)
            ok = (dist > scene.view_range[0]) & (dist < scene.view_range[1])
            if anchors is not None:
                ok &= _anchored_views(c, d, dist, anchors)
            ok &= -np.einsum("ij,ij->i", d, normals) > 0.35 * dist      # seen at most ~70 deg off-normal
            ok &= (d[:, 2] / dist > -0.7) & (d[:, 2] / dist < 0.25)      # at most 45 deg down, 15 deg up
            if targets:
                prev = targets[-1] - cams[-1]
                if scene.sweep:
                    turn = sense * (np.arctan2(d[:, 1], d[:, 0]) - math.atan2(prev[1], prev[0]))
                    turn = (turn + np.pi) % (2 * np.pi) - np.pi
                    ok &= (turn > math.radians(15)) & (turn < math.radians(75))
                else:
                    ok &= d @ prev > 0.5 * dist * np.linalg.norm(prev)
            if ok.any():
                cams.append(c)
                targets.append(pts[rng.choice(np.flatnonzero(ok))])
                break
        else:
            if anchors is not None:
                return None
            raise RuntimeError(f"preset {scene.name}: no camera waypoint found (scene description bug)")
    return np.array(cams), np.array(targets)


def _catmull_rom(points: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Uniform Catmull-Rom spline through ``points (K, D)`` at parameters ``t (M,)`` in ``[0, K-1]``."""
    P = np.concatenate([2 * points[:1] - points[1:2], points, 2 * points[-1:] - points[-2:-1]])
    i = np.clip(np.floor(t).astype(int), 0, len(points) - 2)
    s = (t - i)[:, None]
    p0, p1, p2, p3 = P[i], P[i + 1], P[i + 2], P[i + 3]
    return 0.5 * ((2 * p1) + (-p0 + p2) * s + (2 * p0 - 5 * p1 + 4 * p2 - p3) * s ** 2
                  + (-p0 + 3 * p1 - 3 * p2 + p3) * s ** 3)


def smooth_wobble(rng: np.random.Generator, s: np.ndarray, dims: int, amplitude: float) -> np.ndarray:
    """Hand tremor: a sum of three random sinusoids per dimension of arc length ``s (M,)``,
    1-5 cycles per metre, ``(M, dims)`` with about ``amplitude`` RMS."""
    freq = rng.uniform(1.0, 5.0, (3, dims)) * 2 * np.pi
    phase = rng.uniform(0, 2 * np.pi, (3, dims))
    return amplitude * np.sin(s[:, None, None] * freq + phase).sum(1) * math.sqrt(2 / 3)


def look_at(center: np.ndarray, target: np.ndarray, roll: float = 0.0) -> np.ndarray:
    """Camera-to-world rotation ``(3, 3)`` looking from ``center`` at ``target`` (z up), OpenCV axes,
    rolled by ``roll`` radians about the optical axis."""
    z = target - center
    z = z / np.linalg.norm(z)
    x = np.cross(z, vec3(0, 0, 1))
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    c, s = math.cos(roll), math.sin(roll)
    return np.stack([c * x + s * y, -s * x + c * y, z], axis=1)


def _rotvec(w: np.ndarray) -> np.ndarray:
    return cv2.Rodrigues(np.asarray(w, np.float64).reshape(3, 1))[0]


def sample_trajectory(scene: Scene, n_frames: int, rng: np.random.Generator,
                      anchors: np.ndarray | None = None) -> np.ndarray:
    """A hand-held-like walk: ``(n_frames, 4, 4)`` camera-to-world poses.

    Camera centres follow a Catmull-Rom spline through random waypoints; the
    viewing direction follows its own spline through the directions from each waypoint to a
    surface point (:func:`_waypoints`); frames are evenly spaced in walking plus turning; roll
    drifts a few degrees and a
    small tremor shakes position (1 cm) and orientation (0.5 deg). Trajectories that leave free
    space (the spline can swing out) are redrawn from the same stream. ``anchors`` (training
    poses ``(N, 4, 4)``) keep the waypoints near training views (:func:`_waypoints`); when they
    are too few for that (a handful of training frames), the walk goes anywhere.
    """
    for attempt in range(200):
        found = _waypoints(scene, rng, anchors if attempt < ANCHORED_ATTEMPTS else None)
        if found is None:
            continue
        cams, targets = found
        dense_t = np.linspace(0, len(cams) - 1, 64 * len(cams))
        dense = _catmull_rom(cams, dense_t)
        if not free_space(scene, dense, slack=0.1).all():
            continue
        # spline the viewing directions, not the look-at points: an interpolated look-at point
        # can pass close to the camera and whip the view round
        dirs = targets - cams
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        dense_views = _catmull_rom(dirs, dense_t)
        dense_views /= np.linalg.norm(dense_views, axis=1, keepdims=True)
        # frames evenly spaced in walking + turning (1 radian counts as half a metre): people slow
        # down while they pan, so neither the camera centre nor the view jumps between frames
        turned = np.arccos(np.clip(np.sum(dense_views[1:] * dense_views[:-1], axis=1), -1, 1))
        walked = np.linalg.norm(np.diff(dense, axis=0), axis=1)
        arc = np.concatenate([[0], np.cumsum(walked + 0.5 * turned)])
        s = np.linspace(0, arc[-1], n_frames)
        t = np.interp(s, arc, dense_t)
        centers = _catmull_rom(cams, t) + smooth_wobble(rng, s, 3, 0.01)
        views = _catmull_rom(dirs, t)
        looks = centers + views / np.linalg.norm(views, axis=1, keepdims=True)
        roll = smooth_wobble(rng, s / 4, 1, math.radians(3))[:, 0]
        shake = smooth_wobble(rng, s, 3, math.radians(0.5))
        poses = np.zeros((n_frames, 4, 4))
        for i in range(n_frames):
            poses[i, :3, :3] = look_at(centers[i], looks[i], roll[i]) @ _rotvec(shake[i])
            poses[i, :3, 3] = centers[i]
            poses[i, 3, 3] = 1.0
        return poses
    raise RuntimeError(f"preset {scene.name}: no trajectory found in free space (scene description bug)")
