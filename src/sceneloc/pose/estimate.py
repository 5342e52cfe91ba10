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
``pose/dsac.py``; ``Map.localize`` runs any of the six from one ``PoseConfig``, and all return a
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

import numpy as np

from sceneloc.geometry import pnp_ransac
from sceneloc.pose.config import (  # noqa: F401 (public names of pose)
    DSAC_METHODS,
    METHODS,
    MIN_POINTS,
    SCORES,
    SOLVERS,
    PoseConfig,
    PoseResult,
    at_focal_length,
)
from sceneloc.pose.fit import (
    Correspondences,
    count_inliers,
    polish_pose,
    refit_depth_offset,
    required,
    residuals,
    select_correspondences,
    solve_hypotheses,
    solve_pose,
    spans_a_plane,
)
from sceneloc.pose.ransac import hypotheses_needed, joint_ransac, refine_joint, scoring_subset

#: Re-fits of ``joint``'s refinement: part of the method, so not bound by ``polish_iterations``.
JOINT_REFINE_ITERATIONS = 10

# ------------------------------------------------------------------------------ hypotheses (paper)


def top_k(values: np.ndarray, k: int) -> np.ndarray:
    """Positions ``(..., k)`` of the ``k`` largest entries along the last axis (unordered)."""
    if k >= values.shape[-1]:
        return np.broadcast_to(np.arange(values.shape[-1]), values.shape).copy()
    return np.argpartition(-values, k - 1, axis=-1)[..., :k]


def sample_subsets(n: int, count: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` random subsets of ``size`` distinct indices out of ``n``: ``(count, size)``.

    Exactly the subsets (and the generator state after them) of ``count`` calls of
    ``rng.choice(n, size, replace=False)``, drawn at once where ``floyd_subsets`` can: a call costs
    ~10 us, and RGB-D RANSAC makes ~1800 per frame."""
    size = min(size, n)
    fast = floyd_subsets(n, count, size, rng)
    if fast is not None:
        return fast
    return np.stack([rng.choice(n, size, replace=False) for _ in range(count)])


def _next_uint32(rng: np.random.Generator, count: int) -> np.ndarray:
    """The next ``count`` (>= 1) 32-bit draws ``(count,)`` uint64 of a PCG64 ``rng``, as its ``next_uint32``
    gives them (the low half of a 64-bit output, then its buffered high half), with ``rng`` left as after them."""
    bits = rng.bit_generator
    state = bits.state
    buffered = int(state["has_uint32"])
    raw = bits.random_raw((count - buffered + 1) // 2)
    halves = np.stack([raw & np.uint64(0xFFFFFFFF), raw >> np.uint64(32)], axis=1).reshape(-1)
    out = np.concatenate([np.asarray([state["uinteger"]] * buffered, np.uint64), halves[:count - buffered]])
    after = dict(bits.state)
    after["has_uint32"] = int((count - buffered) % 2 == 1)
    if count > buffered:  # numpy keeps the last high half, used or not
        after["uinteger"] = int(halves[-1])
    bits.state = after
    return out


def floyd_subsets(n: int, count: int, size: int, rng: np.random.Generator) -> np.ndarray | None:
    """``count`` calls of numpy's ``rng.choice(n, size, replace=False)`` replayed at once ``(count, size)``,
    or None (``rng`` untouched) where the replay would not be exact: not PCG64, a range outside the
    small-sample branch, or one of the rare draws Lemire's bounded-integer method rejects.

    numpy draws such a sample by Floyd's algorithm (for ``j`` = ``n - size`` .. ``n - 1``: a uniform
    ``v`` in [0, j], or ``j`` itself when ``v`` was taken) and then shuffles it (for ``i`` = ``size - 1``
    .. 1: swap ``i`` with a uniform position in [0, i]); each uniform is one 32-bit draw ``x`` mapped
    to ``(x * (b + 1)) >> 32`` unless the low word is below the rejection threshold."""
    if (count < 1 or size < 1 or n - size < 1 or n >= 2 ** 31 or (n > 10000 and size > n // 50)
            or not isinstance(rng.bit_generator, np.random.PCG64)):
        return None
    before = rng.bit_generator.state
    bounds = np.asarray([*range(n - size, n), *range(size - 1, 0, -1)], np.uint64)   # inclusive
    x = _next_uint32(rng, count * len(bounds)).reshape(count, len(bounds)) * (bounds + np.uint64(1))
    if ((x & np.uint64(0xFFFFFFFF)) < (np.uint64(0xFFFFFFFF) - bounds) % (bounds + np.uint64(1))).any():
        rng.bit_generator.state = before
        return None
    v = (x >> np.uint64(32)).astype(np.int64)
    out = np.empty((count, size), np.int64)
    for k in range(size):
        taken = (out[:, :k] == v[:, k, None]).any(axis=1)
        out[:, k] = np.where(taken, n - size + k, v[:, k])
    rows = np.arange(count)
    for t, i in enumerate(range(size - 1, 0, -1)):
        j = v[:, size + t]
        out[rows, i], out[rows, j] = out[rows, j], out[rows, i].copy()
    return out


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
        scores = mean_confidence(subsets, required(corr.confidence, "confidences"))
    else:
        inlier = residuals(corr, poses, dtype=np.float32) < corr.threshold       # (B, n)
        # 'confident_inliers' weighs each inlier by its confidence: consistency and confidence together.
        scores = (inlier.sum(1) if score == "inliers"
                  else np.where(inlier, required(corr.confidence, "confidences"), 0.0).sum(1))
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
            picked = most_confident(sample[None], required(corr.confidence, "confidences"), config.n_best, cells)[0]
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
                  rng: np.random.Generator | int | None = None,
                  start_T_wc: np.ndarray | None = None) -> PoseResult:
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
        start_T_wc: optional ``(4, 4)`` camera-to-world pose that replaces the hypotheses (and the method's
            own refinement): the re-fits on all inliers start from it, on the correspondences it explains
            (an RGB-D pose refined by the image alone, for a map whose poses are the colour camera's).
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
    if start_T_wc is not None:
        start_pose = np.asarray(start_T_wc, dtype=np.float64)
        pose: np.ndarray | None = start_pose
        used = np.flatnonzero(residuals(corr, start_pose) < corr.threshold)
        score = float(len(used))
    elif config.method == "joint":
        pose, score, _ = joint_ransac(corr.scene, corr.pixels, corr.K, corr.camera, corr.threshold,
                                      config.inlier_threshold_m, config.joint_batch, config.joint_max_hypotheses,
                                      config.ransac_confidence, rng, corr.confidence)
        used = np.zeros(0, np.int64)  # refine_joint picks the points of the final solve
    elif config.method == "ransac":
        if corr.solver == "pnp":
            sub = scoring_subset(len(corr), config.ransac_points, rng)
            pose, mask = pnp_ransac(corr.scene[sub], corr.pixels[sub], corr.K, corr.threshold,
                                    config.ransac_iterations, config.ransac_confidence,
                                    local_optimisation=config.ransac_local_optimisation)
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
    method = "ransac" if start_T_wc is not None else config.method   # a given pose: RANSAC's re-fits alone
    if method == "joint":   # its refinement is part of the method, like RANSAC's polish
        pose, used = refine_joint(pose, corr.scene, corr.pixels, corr.K, corr.camera, corr.threshold,
                                  config.inlier_threshold_m, JOINT_REFINE_ITERATIONS, config.depth_gate)
    elif method != "ransac":
        pose, used = refine_pose(corr, pose, used, config, rng, cells)
    offset = 0.0
    if method != "joint" and (config.polish or method == "ransac"):
        pose, used = polish_pose(corr, pose, used, config)
        if corr.solver == "kabsch" and config.depth_offset_sigma_m > 0:
            pose, used, corr, offset = refit_depth_offset(corr, pose, used, config)
    inliers = np.flatnonzero(residuals(corr, pose) < corr.threshold)
    timings["refinement"] = (time.perf_counter() - start) * 1e3

    needed = config.required_inliers(corr.solver, corr.threshold, corr.pixels)
    result = accepted_pose(pose, inliers, corr.scene, needed, corr.solver, corr.index[np.sort(used)], score, timings)
    result.depth_offset_m = offset
    return result
