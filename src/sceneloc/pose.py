"""Pose estimation from predicted scene coordinates (paper section III-C); no networks here.

Input per query image: pixels ``(N, 2)`` (full resolution), predicted scene coordinates ``(N, 3)``,
intrinsics ``K (3, 3)``, optionally per-correspondence confidences ``(N,)`` from the confidence
network and camera-frame points ``(N, 3)`` from the query's depth (RGB-D mode). Output: a
camera-to-world pose (``geometry`` convention) or ``None`` -- never a silently wrong pose.

Four estimators share one pipeline (``estimate_pose``):

* ``confidence`` -- the paper's P_confidence. ``h_p`` hypotheses, each solved (PnP from 2D-3D,
  or Kabsch from 3D-3D when depth is given) on the ``N_best`` most confident of ``N_k`` randomly
  sampled correspondences, scored by the mean confidence of those points; the best one is refined
  for a few rounds, each adding the most confident points of a fresh random sample and re-solving.
* ``random`` -- the paper's baselines P_1 / P_tukey / P_smooth: the same pipeline without
  confidence (random subsets; hypotheses scored by inlier count). With ``subset_size`` set to the
  minimal size (4 for PnP, 3 for Kabsch) it is classic RANSAC.
* ``ransac`` -- standard robust estimation on all correspondences: OpenCV's USAC MAGSAC++ for PnP,
  a batched Kabsch-RANSAC for RGB-D.
* ``joint`` -- RANSAC on P3P and (with depth) Kabsch minimal sets, scored on the sum of 2D and 3D
  inlier counts and refined on reprojection, then with depth only where depth agrees
  (``pose_ransac``): query depth is evidence, never the only truth, so depth that is shifted
  against the image cannot make the pose worse than PnP alone. Without depth it is a fast PnP-RANSAC.

``dsac`` and ``softam`` (DSAC's learned scores and selection) need the map's DSAC stage and live in
``dsac.py``; ``Map.localize`` runs any of the six from one ``PoseConfig``, and all return a
``PoseResult`` that ``accepted_pose`` has checked.

Unless ``PoseConfig.polish`` is off, every estimator ends with DSAC*/ACE's final step: re-fit on
all inliers of the current pose a few times. The paper does not have it; it is what makes
DSAC*/ACE precise. ``polish=False`` with ``method='confidence'`` is the pure paper pipeline.

Hypotheses are solved and scored in batches (sampling, top-k selection, batched Kabsch, inlier
counts in one matrix product); PnP hypotheses are a loop of OpenCV calls (tens of microseconds each).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import cv2
import numpy as np

from .geometry import invert_pose, is_rigid, kabsch, kabsch_depth_offset, make_pose, pnp_ransac, solve_pnp
from .pose_config import (  # noqa: F401 (public names of pose)
    DSAC_METHODS,
    METHODS,
    MIN_POINTS,
    SCORES,
    SOLVERS,
    PoseConfig,
    PoseResult,
    at_focal_length,
)
from .pose_ransac import (
    distance_residuals,
    hypotheses_needed,
    joint_ransac,
    refine_joint,
    reprojection_residuals,
    robust_sigma,
    scoring_subset,
)

#: Re-fits of ``joint``'s refinement: part of the method, so not bound by ``polish_iterations``.
JOINT_REFINE_ITERATIONS = 10
#: Smallest per-axis residual sigma (metres) that weighs the depth offset's prior: exact data would
#: otherwise leave the prior no weight at all.
OFFSET_POINT_SIGMA_FLOOR_M = 0.005

# --------------------------------------------------------------------------------- correspondences


def _given(array: np.ndarray | None, what: str) -> np.ndarray:
    """``array``, which the calling code path needs (select_correspondences provides it there)."""
    if array is None:
        raise ValueError(f"{what} missing: this estimator needs them")
    return array


@dataclass
class Correspondences:
    """The valid correspondences of one image, with what the solvers and residuals need.

    ``index (n,)`` maps back to the caller's arrays; ``camera`` is None for PnP. For ``joint``
    the solver is ``pnp`` (its inliers and threshold are 2D) and ``camera`` holds every row, NaN
    where depth is missing: depth is optional evidence there, not a reason to drop a match.
    """
    pixels: np.ndarray          # (n, 2)
    scene: np.ndarray           # (n, 3)
    K: np.ndarray               # (3, 3)
    confidence: np.ndarray | None  # (n,)
    camera: np.ndarray | None   # (n, 3), Kabsch (all valid) and joint (NaN rows without depth)
    index: np.ndarray           # (n,)
    solver: str                 # 'pnp' or 'kabsch'
    threshold: float            # inlier threshold: pixels for PnP, metres for Kabsch

    def __len__(self) -> int:
        return len(self.index)

    @property
    def min_points(self) -> int:
        return MIN_POINTS[self.solver]


def select_correspondences(pixels: np.ndarray, scene_coords: np.ndarray, K: np.ndarray,
                           confidence: np.ndarray | None, camera_points: np.ndarray | None,
                           config: PoseConfig) -> Correspondences:
    """Check shapes, pick the solver and drop unusable correspondences.

    Dropped: non-finite pixels, scene coordinates or confidences, and for Kabsch camera points
    without depth (non-finite, or z <= 0 since missing Kinect depth reads 0).
    """
    pixels = np.asarray(pixels, dtype=np.float64).reshape(-1, 2)
    scene = np.asarray(scene_coords, dtype=np.float64).reshape(-1, 3)
    n = len(pixels)
    if len(scene) != n:
        raise ValueError(f"{n} pixels but {len(scene)} scene coordinates")
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3):
        raise ValueError(f"K must be 3x3, got {K.shape}")

    solver = config.solver
    joint = config.method == "joint"
    if joint:
        solver = "pnp"
    elif solver == "auto":
        solver = "pnp" if camera_points is None else "kabsch"
    if solver == "kabsch" and camera_points is None:
        raise ValueError("solver 'kabsch' needs camera_points (the query's depth)")
    if config.method == "confidence" and confidence is None:
        raise ValueError("method 'confidence' needs per-correspondence confidences")
    if config.method not in ("ransac", "joint") and config.n_best < MIN_POINTS[solver]:
        raise ValueError(f"subset_size={config.n_best} is too small: {solver} needs {MIN_POINTS[solver]} points")

    valid = np.isfinite(pixels).all(1) & np.isfinite(scene).all(1)
    if confidence is not None:
        confidence = np.asarray(confidence, dtype=np.float64).reshape(-1)
        if len(confidence) != n:
            raise ValueError(f"{n} correspondences but {len(confidence)} confidences")
        valid &= np.isfinite(confidence)
    camera = None
    if solver == "kabsch" or (joint and camera_points is not None):
        camera = np.array(camera_points, dtype=np.float64).reshape(-1, 3)
        if len(camera) != n:
            raise ValueError(f"{n} correspondences but {len(camera)} camera points")
        with np.errstate(invalid="ignore"):
            has_depth = np.isfinite(camera).all(1) & (camera[:, 2] > 0)
        if joint:
            camera[~has_depth] = np.nan
        else:
            valid &= has_depth

    index = np.flatnonzero(valid)
    threshold = config.threshold_px_for(K) if solver == "pnp" else config.inlier_threshold_m
    return Correspondences(pixels[index], scene[index], K,
                           None if confidence is None else confidence[index],
                           None if camera is None else camera[index], index, solver, threshold)


# ------------------------------------------------------------------------------ solving and residuals


def solve_pose(corr: Correspondences, idx: np.ndarray, pnp_method: str = "epnp") -> np.ndarray | None:
    """Camera-to-world pose ``(4, 4)`` from the correspondences ``idx (k,)``, or None on failure."""
    if len(idx) < corr.min_points:
        return None
    if corr.solver == "pnp":
        pose = solve_pnp(corr.scene[idx], corr.pixels[idx], corr.K, pnp_method)
    else:
        R, t = kabsch(_given(corr.camera, "camera points")[idx], corr.scene[idx])
        pose = make_pose(R, t)
    return pose if pose is not None and is_rigid(pose) else None


def solve_hypotheses(corr: Correspondences, subsets: np.ndarray,
                     pnp_method: str = "epnp") -> tuple[np.ndarray, np.ndarray]:
    """Poses ``(B, 4, 4)`` and success flags ``(B,)`` for index subsets ``(B, k)``.

    Kabsch runs batched over all hypotheses; PnP loops over OpenCV calls. Failed hypotheses
    get the identity pose and ``ok = False``.
    """
    B = len(subsets)
    if corr.solver == "kabsch":
        R, t = kabsch(_given(corr.camera, "camera points")[subsets], corr.scene[subsets])
        poses = make_pose(R, t)
        ok = np.isfinite(poses).all(axis=(1, 2))
        poses[~ok] = np.eye(4)
        return poses, ok
    poses = np.tile(np.eye(4), (B, 1, 1))
    ok = np.zeros(B, dtype=bool)
    for b, idx in enumerate(subsets):
        pose = solve_pnp(corr.scene[idx], corr.pixels[idx], corr.K, pnp_method)
        if pose is not None:
            poses[b], ok[b] = pose, True
    return poses, ok


def residuals(corr: Correspondences, poses: np.ndarray, idx: np.ndarray | None = None,
              dtype: type = np.float64) -> np.ndarray:
    """Residuals ``(..., n)`` of poses ``(..., 4, 4)`` on the correspondences ``idx`` (default all).

    PnP: reprojection error in pixels (``inf`` behind the camera); Kabsch: distance in metres
    between the transformed camera point and the scene coordinate. ``float32`` halves the time
    of scoring many hypotheses and is ample for comparing against a threshold.
    """
    sel = slice(None) if idx is None else idx
    if corr.solver == "pnp":
        return reprojection_residuals(poses, corr.scene[sel], corr.pixels[sel], corr.K, dtype)
    return distance_residuals(poses, _given(corr.camera, "camera points")[sel], corr.scene[sel], dtype)


def count_inliers(corr: Correspondences, poses: np.ndarray, idx: np.ndarray | None = None) -> np.ndarray:
    """Inlier counts ``(B,)`` of poses ``(B, 4, 4)`` on the correspondences ``idx`` (default all), in float32."""
    return (residuals(corr, poses, idx, dtype=np.float32) < corr.threshold).sum(-1)


def spans_a_plane(points: np.ndarray) -> bool:
    """True unless ``points (n, 3)`` are (nearly) coincident or collinear, which leave a pose undetermined."""
    if len(points) < 3:
        return False
    s = np.linalg.svd(points - points.mean(0), compute_uv=False)
    return bool(s[1] > 1e-6 * max(s[0], 1e-3))


# ------------------------------------------------------------------------------ hypotheses (paper)


def top_k(values: np.ndarray, k: int) -> np.ndarray:
    """Positions ``(..., k)`` of the ``k`` largest entries along the last axis (unordered)."""
    if k >= values.shape[-1]:
        return np.broadcast_to(np.arange(values.shape[-1]), values.shape).copy()
    return np.argpartition(-values, k - 1, axis=-1)[..., :k]


def sample_subsets(n: int, count: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` random subsets of ``size`` distinct indices out of ``n``: ``(count, size)``."""
    size = min(size, n)
    return np.stack([rng.choice(n, size, replace=False) for _ in range(count)])


def grid_cells(pixels: np.ndarray, cells: int) -> np.ndarray:
    """Cell index ``(n,)`` of each pixel ``(n, 2)`` in a ``cells x cells`` grid over their bounding box."""
    lo, hi = pixels.min(0), pixels.max(0)
    ij = np.minimum((pixels - lo) / np.maximum(hi - lo, 1e-9) * cells, cells - 1).astype(np.int64)
    return ij[:, 1] * cells + ij[:, 0]


def most_confident(samples: np.ndarray, confidence: np.ndarray, k: int,
                   cells: np.ndarray | None = None) -> np.ndarray:
    """The ``k`` most confident of each row of ``samples (B, N)`` (indices into ``confidence (n,)``) -> ``(B, k)``.

    With ``cells (n,)`` (``grid_cells``) a point's rank within its own cell, relative to the cell's
    size, decides first, so every cell gives its share of the k points (its most confident ones).
    """
    c = confidence[samples]
    if cells is None:
        return np.take_along_axis(samples, top_k(c, k), axis=1)
    g = cells[samples]
    order = np.lexsort((-c, g), axis=-1)                            # by cell, most confident first
    g_sorted = np.take_along_axis(g, order, axis=1)
    pos = np.broadcast_to(np.arange(g.shape[1]), g.shape)
    first = np.concatenate([np.ones_like(g_sorted[:, :1], bool), g_sorted[:, 1:] != g_sorted[:, :-1]], axis=1)
    rank = pos - np.maximum.accumulate(np.where(first, pos, 0), axis=1)  # rank within the cell
    size = np.zeros((len(g), int(cells.max()) + 1))
    np.add.at(size, (np.arange(len(g))[:, None], g), 1)
    share = (rank + 1) / np.take_along_axis(size, g_sorted, axis=1)  # 1/size for a cell's best point
    c_sorted = np.take_along_axis(c, order, axis=1)
    keep = top_k(-(share - 1e-6 * c_sorted), k)                      # ties: the more confident
    return np.take_along_axis(np.take_along_axis(samples, order, axis=1), keep, axis=1)


def sample_hypotheses(n: int, config: PoseConfig, confidence: np.ndarray | None,
                      rng: np.random.Generator, cells: np.ndarray | None = None) -> np.ndarray:
    """Index subsets ``(h_p, N_best)``, one per hypothesis.

    With confidences (paper): sample N_k correspondences and keep the N_best most confident of
    them (per image cell with ``cells``, see ``most_confident``), for all hypotheses at once.
    Without: N_best random correspondences.
    """
    if confidence is None:
        return sample_subsets(n, config.hypotheses, config.n_best, rng)
    samples = sample_subsets(n, config.hypotheses, config.n_k, rng)
    return most_confident(samples, confidence, config.n_best, cells)


def mean_confidence(subsets: np.ndarray, confidence: np.ndarray) -> np.ndarray:
    """The paper's score: mean confidence ``(B,)`` of the points ``(B, k)`` each hypothesis used."""
    return confidence[subsets].mean(axis=1)


def score_hypotheses(corr: Correspondences, poses: np.ndarray, ok: np.ndarray,
                     subsets: np.ndarray, score: str) -> np.ndarray:
    """Scores ``(B,)`` of hypotheses ``poses (B, 4, 4)`` solved on ``subsets (B, k)`` by the rule
    ``score`` (see ``PoseConfig.score``); failed hypotheses (``ok (B,)`` False) score ``-inf``."""
    if score == "confidence":
        scores = mean_confidence(subsets, _given(corr.confidence, "confidences"))
    else:
        inlier = residuals(corr, poses, dtype=np.float32) < corr.threshold       # (B, n)
        # 'confident_inliers' weighs each inlier by its confidence: consistency and confidence together.
        scores = (inlier.sum(1) if score == "inliers"
                  else np.where(inlier, _given(corr.confidence, "confidences"), 0.0).sum(1))
    return np.where(ok, scores.astype(np.float64), -np.inf)


def refine_pose(corr: Correspondences, pose: np.ndarray, used: np.ndarray, config: PoseConfig,
                rng: np.random.Generator, cells: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The paper's refinement: ``refine_rounds`` times, sample N_k random correspondences, add the
    N_best most confident of them to the accumulated set ``used`` and re-solve on the set.

    Without confidences (``random``) a point's agreement with the current pose replaces its
    confidence: the sample's N_best smallest residuals among its inliers are added, and points
    of the accumulated set that stopped being inliers are dropped. Returns the pose and the
    indices of its solve; a failed solve ends the refinement with the last good pose.
    """
    for _ in range(config.refine_rounds):
        sample = sample_subsets(len(corr), 1, config.n_k, rng)[0]
        if config.method == "confidence":
            picked = most_confident(sample[None], _given(corr.confidence, "confidences"), config.n_best, cells)[0]
            candidate = np.union1d(used, picked)
        else:
            r_sample = residuals(corr, pose, sample)
            inliers = np.flatnonzero(r_sample < corr.threshold)
            picked = sample[inliers[top_k(-r_sample[inliers], config.n_best)]]
            candidate = np.union1d(used[residuals(corr, pose, used) < corr.threshold], picked)
        new_pose = solve_pose(corr, candidate, config.pnp_method)
        if new_pose is None:
            break
        pose, used = new_pose, candidate
    return pose, used


# ----------------------------------------------------------------------------- polish (DSAC*/ACE)


def refit_on_inliers(corr: Correspondences, pose: np.ndarray, idx: np.ndarray) -> np.ndarray | None:
    """Best pose on the points ``idx``: Kabsch (closed form) for 3D-3D; for 2D-3D Levenberg-Marquardt
    on the reprojection error started at ``pose`` (DSAC*/ACE: solvePnP ITERATIVE with a guess)."""
    if corr.solver == "kabsch":
        return solve_pose(corr, idx)
    T_cw = invert_pose(pose)
    rvec, _ = cv2.Rodrigues(T_cw[:3, :3])
    tvec = T_cw[:3, 3].reshape(3, 1).copy()
    try:
        rvec, tvec = cv2.solvePnPRefineLM(corr.scene[idx].reshape(-1, 1, 3), corr.pixels[idx].reshape(-1, 1, 2),
                                          corr.K, None, rvec, tvec)
    except cv2.error:
        return None
    R_cw, _ = cv2.Rodrigues(rvec)
    refined = invert_pose(make_pose(R_cw, tvec.reshape(3)))
    return refined if is_rigid(refined) else None


def polish_pose(corr: Correspondences, pose: np.ndarray, used: np.ndarray,
                config: PoseConfig) -> tuple[np.ndarray, np.ndarray]:
    """DSAC*/ACE's final step (not in the paper): re-fit on all inliers of the current pose, until
    the inlier set stops changing or ``polish_iterations`` re-fits; then again at each of
    ``config.polish_thresholds_m`` (Kabsch) or ``polish_thresholds_px`` (PnP) in turn. Returns the
    pose and its points (``used`` unchanged if no re-fit happened)."""
    tighter = (config.polish_thresholds_m if corr.solver == "kabsch"
               else tuple(at_focal_length(t, corr.K) for t in config.polish_thresholds_px))
    for threshold in (corr.threshold, *tighter):
        previous = None
        for _ in range(config.polish_iterations):
            inliers = np.flatnonzero(residuals(corr, pose) < threshold)
            if len(inliers) < corr.min_points or (previous is not None and np.array_equal(inliers, previous)):
                break
            new_pose = refit_on_inliers(corr, pose, inliers)
            if new_pose is None:
                break
            pose, used = new_pose, inliers
            previous = inliers
    return pose, used


def refit_depth_offset(corr: Correspondences, pose: np.ndarray, used: np.ndarray,
                       config: PoseConfig) -> tuple[np.ndarray, np.ndarray, Correspondences, float]:
    """Kabsch only, after the polish: re-fit ``pose`` with an offset of the query depth along its
    rays (``geometry.kabsch_depth_offset``, prior ``config.depth_offset_sigma_m``) on its points
    ``used``, then on the inliers at each Kabsch polish threshold. Real RGB-D depth can read a few
    centimetres long or short against the image (misregistration), which a rigid fit turns into as
    large an error of the camera position. Returns the pose, its points, the correspondences with the
    offset taken off their camera points, and the offset in metres."""
    camera = _given(corr.camera, "camera points")
    rays = camera / camera[:, 2:3]
    sigma = robust_sigma(residuals(corr, pose, used), 3, OFFSET_POINT_SIGMA_FLOOR_M)
    R, t, offset = kabsch_depth_offset(camera[used], corr.scene[used], config.depth_offset_sigma_m, sigma)
    for threshold in config.polish_thresholds_m or (corr.threshold,):
        moved = replace(corr, camera=camera - offset * rays)
        inliers = np.flatnonzero(residuals(moved, make_pose(R, t)) < threshold)
        if len(inliers) < corr.min_points:
            break
        R, t, offset = kabsch_depth_offset(camera[inliers], corr.scene[inliers], config.depth_offset_sigma_m, sigma)
        used = inliers
    return make_pose(R, t), used, replace(corr, camera=camera - offset * rays), offset


# ------------------------------------------------------------------------------------ RANSAC


def kabsch_ransac(corr: Correspondences, config: PoseConfig,
                  rng: np.random.Generator) -> tuple[np.ndarray | None, np.ndarray, int]:
    """RANSAC with minimal sets of 3 for 3D-3D matches: batches of ``config.hypotheses`` hypotheses
    solved and scored at once, until ``ransac_confidence`` or ``ransac_iterations``.

    Hypotheses are scored on ``scoring_subset`` (``config.ransac_points``) of the correspondences.

    Returns the best pose (or None), its minimal set and its inlier count among the scored points.
    """
    best_pose, best_set, best_count = None, np.zeros(0, dtype=np.int64), 0
    drawn, needed = 0, float(config.ransac_iterations)
    scored = scoring_subset(len(corr), config.ransac_points, rng)
    while drawn < min(needed, config.ransac_iterations):
        batch = min(config.hypotheses, math.ceil(min(needed, config.ransac_iterations)) - drawn)
        subsets = sample_subsets(len(corr), batch, MIN_POINTS["kabsch"], rng)
        poses, ok = solve_hypotheses(corr, subsets)
        counts = np.where(ok, count_inliers(corr, poses, scored), -1)
        b = int(np.argmax(counts))
        if counts[b] > best_count:
            best_pose, best_set, best_count = poses[b], subsets[b], int(counts[b])
            needed = hypotheses_needed(best_count / len(scored), MIN_POINTS["kabsch"],
                                              config.ransac_confidence)
        drawn += batch
    return best_pose, best_set, best_count


# ------------------------------------------------------------------------------------ entry point


def failed_pose(reason: str, timings: dict[str, float], score: float = float("nan")) -> PoseResult:
    """No pose, and why."""
    return PoseResult(None, score=score, timings_ms=timings, failure=reason)


def accepted_pose(pose: np.ndarray, inliers: np.ndarray, scene: np.ndarray, needed: int, solver: str,
                  used: np.ndarray, score: float, timings: dict[str, float]) -> PoseResult:
    """Every estimator's last step: report ``pose`` only when its ``inliers`` (indices into ``scene
    (N, 3)``) are at least ``needed`` (and the ``solver``'s minimum) and span a plane; otherwise a
    failure that says why. Never a silently wrong pose: too few or degenerate inliers do not determine one."""
    needed = max(needed, MIN_POINTS[solver])
    if len(inliers) < needed:
        return failed_pose(f"{len(inliers)} inliers, fewer than {needed}", timings, score)
    if not spans_a_plane(scene[inliers]):
        return failed_pose("inliers are coincident or collinear: pose undetermined", timings, score)
    return PoseResult(pose, len(inliers), used, score, timings)


def estimate_pose(pixels: np.ndarray, scene_coords: np.ndarray, K: np.ndarray,
                  confidence: np.ndarray | None = None, camera_points: np.ndarray | None = None,
                  config: PoseConfig = PoseConfig(),
                  rng: np.random.Generator | int | None = None) -> PoseResult:
    """Camera pose of one image from its correspondences.

    Args:
        pixels: ``(N, 2)`` full-resolution pixel coordinates ``(u, v)``.
        scene_coords: ``(N, 3)`` predicted scene coordinates (world frame, metres).
        K: ``(3, 3)`` intrinsics of the full-resolution image.
        confidence: optional ``(N,)`` confidences in [0, 1]; required by ``method='confidence'``.
        camera_points: optional ``(N, 3)`` camera-frame points from the query's depth (NaN or
            z <= 0 where depth is missing); with ``solver='auto'`` they select Kabsch (RGB-D).
        config: all options (``PoseConfig``).
        rng: numpy Generator or seed; the result is deterministic for a given seed.
    Returns:
        ``PoseResult``; ``pose`` is None (with ``failure`` saying why) when fewer than the minimal
        number of points are valid, every solve failed, the inliers are degenerate (coincident or
        collinear) or fewer than ``config.min_inliers``.
    """
    if config.method in DSAC_METHODS:
        raise ValueError(f"method {config.method!r} needs a map's DSAC stage: use Map.localize "
                         f"(or dsac.estimate_pose_dsac)")
    rng = np.random.default_rng(rng)
    corr = select_correspondences(pixels, scene_coords, K, confidence, camera_points, config)
    timings = {"sampling": 0.0, "refinement": 0.0}
    if len(corr) < corr.min_points:
        return failed_pose(f"{len(corr)} valid correspondences, {corr.solver} needs {corr.min_points}", timings)

    # --- hypotheses: sample, solve, score, keep the best
    start = time.perf_counter()
    if config.method == "joint":
        pose, score, _ = joint_ransac(corr.scene, corr.pixels, corr.K, corr.camera, corr.threshold,
                                      config.inlier_threshold_m, config.joint_batch, config.joint_max_hypotheses,
                                      config.ransac_confidence, rng, corr.confidence)
        used = np.zeros(0, np.int64)  # refine_joint picks the points of the final solve
    elif config.method == "ransac":
        if corr.solver == "pnp":
            sub = scoring_subset(len(corr), config.ransac_points, rng)
            pose, mask = pnp_ransac(corr.scene[sub], corr.pixels[sub], corr.K, corr.threshold,
                                    config.ransac_iterations, config.ransac_confidence)
            used = sub[mask]
            score = float(len(used))
        else:
            pose, used, count = kabsch_ransac(corr, config, rng)
            score = float(count)
    else:
        by_confidence = config.method == "confidence"
        cells = grid_cells(corr.pixels, config.spread_cells) if by_confidence and config.spread_cells else None
        subsets = sample_hypotheses(len(corr), config, corr.confidence if by_confidence else None, rng, cells)
        poses, ok = solve_hypotheses(corr, subsets, config.pnp_method)
        # Without confidences the paper's mean-confidence score is meaningless: 'random' scores by
        # inlier count, as RANSAC does.
        scores = score_hypotheses(corr, poses, ok, subsets, config.score if by_confidence else "inliers")
        best = int(np.argmax(scores))
        if ok[best]:
            pose, used, score = poses[best], subsets[best], float(scores[best])
        else:
            pose, used, score = None, np.zeros(0, np.int64), -math.inf
    timings["sampling"] = (time.perf_counter() - start) * 1e3
    if pose is None:
        return failed_pose("no hypothesis could be solved", timings, score)

    # --- refinement (paper), then the re-fit on all inliers (DSAC*/ACE; always part of RANSAC)
    start = time.perf_counter()
    if config.method == "joint":   # its refinement is part of the method, like RANSAC's polish
        pose, used = refine_joint(pose, corr.scene, corr.pixels, corr.K, corr.camera, corr.threshold,
                                  config.inlier_threshold_m, JOINT_REFINE_ITERATIONS, config.depth_gate)
    elif config.method != "ransac":
        pose, used = refine_pose(corr, pose, used, config, rng, cells)
    offset = 0.0
    if config.method != "joint" and (config.polish or config.method == "ransac"):
        pose, used = polish_pose(corr, pose, used, config)
        if corr.solver == "kabsch" and config.depth_offset_sigma_m > 0:
            pose, used, corr, offset = refit_depth_offset(corr, pose, used, config)
    inliers = np.flatnonzero(residuals(corr, pose) < corr.threshold)
    timings["refinement"] = (time.perf_counter() - start) * 1e3

    needed = config.required_inliers(corr.solver, corr.threshold, corr.pixels)
    result = accepted_pose(pose, inliers, corr.scene, needed, corr.solver, corr.index[np.sort(used)], score, timings)
    result.depth_offset_m = offset
    return result
