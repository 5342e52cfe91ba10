"""Joint 2D-3D / 3D-3D robust pose estimation (``PoseConfig.method='joint'``), and the batched
residuals every estimator scores with. Pure functions on arrays; ``pose/estimate.py`` wraps them.

Why a joint estimator: a Kinect's depth is neither registered exactly to its colour image nor
captured at the same instant, so on parts of a real recording the query depth is shifted against
the image (by pixels, and so by decimetres at depth edges) or biased along the rays. Kabsch on
such depth is worse than PnP on the image alone. Here depth is *evidence*, never the only truth:

* hypotheses come from both kinds of minimal sets: P3P on 4 pixel/scene pairs (the 4th picks
  among P3P's solutions) and, where depth is valid, Kabsch on 3 camera/scene pairs;
* every hypothesis is scored on the *sum* of its two inlier counts: correspondences whose
  reprojection error is below ``threshold_px``, plus those with valid depth whose 3D distance is
  below ``threshold_m``. A sum rather than "both tests at once": where depth is wrong, an AND would
  take inliers away from the right pose, whereas a pose bent towards wrong depth still loses its
  2D inliers, and frames or regions without depth still count through their reprojection;
* the best hypothesis is refined on reprojection alone (the PnP solution, ``T_2d``), then on the
  3D distances of the points whose depth agrees with the pose (within ``threshold_m``) and the
  reprojection errors of those without depth, each kind weighted by the inverse variance of its
  residuals under ``T_2d``: consistent depth pins down what PnP determines poorly (the distance
  along the optical axis). That joint pose is kept only if it fits the image at most
  ``DEPTH_GATE`` (10 %) worse than ``T_2d`` (truncated reprojection cost); depth biased along the
  rays by several cm or moved against the image by the camera's motion fails that test, and the
  result is ``T_2d``: as accurate as Kabsch when the depth is right (``refine_joint``). A bias of
  the size of the prediction errors cannot be told from them by the image; it can pass.
* speed: minimal sets are sampled in one vectorised draw (in proportion to the map's confidences
  when given), P3P is one OpenCV call per set and everything else is batched; hypotheses are
  scored preemptively on 500 points, and sampling stops as soon as either kind has found a clean
  set with ``success_prob``.

Poses are camera-to-world ``T_wc (4, 4)`` (``geometry`` convention); ``T_cw`` is its inverse.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from sceneloc.geometry import invert_pose, kabsch, make_pose

# Median of |r| of a 2D / 3D isotropic Gaussian in units of its per-axis sigma (a robust sigma).
MEDIAN_NORM_2D = 1.1774
MEDIAN_NORM_3D = 1.5382
# Floors on those sigmas: predictions are never better than this, and exact synthetic data would
# otherwise give infinite weights.
MIN_SIGMA_PX = 0.1
MIN_SIGMA_M = 0.001
# Preemptive scoring (Nister): a batch's hypotheses are counted on this many random correspondences
# and only the best few on all of them. A clean hypothesis has ~ratio * 500 inliers there (75 at
# 15 % inliers), a wrong one a handful: the preview loses nothing and cuts scoring ~6x.
PREVIEW_POINTS = 500
PREVIEW_KEEP = 8
# Added to every confidence before sampling in proportion to it: an overconfident network still
# leaves every correspondence a chance (with confidences in [0, 1], at least ~1/20 of the best's).
CONFIDENCE_FLOOR = 0.05
# Most that the pose refined with depth may raise the truncated reprojection cost of the PnP
# solution (``depth_cost_ratio`` - 1). Relative, not a chi-square test in sigmas: prediction errors
# are correlated in space and their pixel scale varies with depth, so a chi-square test rejected
# correct depth that more than halved the error. Measured on synthetic frames (3 cm prediction
# errors, 4800 points, 50 % outliers): correct depth, shifted 4 px, or with 1 % noise 1.00-1.07
# (1.20 once, with spatially correlated errors); depth moved by the camera 3 cm / 1 deg 1.4-2.7;
# depth scaled 3 % + 3 cm 1.7.
DEPTH_GATE = 0.1


# ----------------------------------------------------------------------------------- residuals


def _homogeneous_t(points: np.ndarray, dtype: type) -> np.ndarray:
    """``points (N, 3)`` -> ``(4, N)`` homogeneous columns, contiguous, in ``dtype``."""
    return np.ascontiguousarray(np.concatenate([points, np.ones((len(points), 1))], axis=1).T, dtype=dtype)


def reprojection_residuals(T_wc: np.ndarray, scene: np.ndarray, pixels: np.ndarray, K: np.ndarray,
                           dtype: type = np.float64) -> np.ndarray:
    """Pixel distances ``(..., N)`` between ``pixels (N, 2)`` and ``scene (N, 3)`` projected by poses
    ``T_wc (..., 4, 4)``; ``inf`` behind the camera. ``float32`` halves the time of scoring many
    hypotheses and is ample for comparing against a threshold."""
    M = K @ invert_pose(T_wc)[..., :3, :]     # (..., 3, 4) = K [R|t]_cw: world -> homogeneous pixels
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        # All hypotheses in one 2D matrix product (numpy's batched 3x4 @ 4xN is several times slower).
        p = (M.reshape(-1, 4).astype(dtype) @ _homogeneous_t(scene, dtype)).reshape(*M.shape[:-2], 3, len(scene))
        # In place from here on: with hundreds of hypotheses, temporaries cost more than arithmetic.
        u, v, z = p[..., 0, :], p[..., 1, :], p[..., 2, :]
        behind = ~(z > 1e-6)      # also nan: a failed hypothesis is never an inlier
        z[behind] = 1.0
        u /= z
        u -= pixels[:, 0].astype(dtype)
        v /= z
        v -= pixels[:, 1].astype(dtype)
        u *= u
        v *= v
        u += v
        np.sqrt(u, out=u)
        u[behind] = np.inf
        return u


def distance_residuals(T_wc: np.ndarray, camera: np.ndarray, scene: np.ndarray,
                       dtype: type = np.float64) -> np.ndarray:
    """Distances ``(..., N)`` in metres between ``camera (N, 3)`` points moved to the world by
    ``T_wc (..., 4, 4)`` and ``scene (N, 3)``; NaN where a camera point is missing (NaN)."""
    with np.errstate(over="ignore", invalid="ignore"):
        p = (T_wc[..., :3, :].reshape(-1, 4).astype(dtype) @ _homogeneous_t(camera, dtype))
        p = p.reshape(*T_wc.shape[:-2], 3, len(camera))
        p -= scene.T.astype(dtype)
        p *= p
        return np.sqrt(p.sum(axis=-2))


# ----------------------------------------------------------------------------------- hypotheses


def rotation_from_rvec(rvec: np.ndarray) -> np.ndarray:
    """Rodrigues' formula for many axis-angle vectors: ``rvec (B, 3)`` -> rotations ``(B, 3, 3)``."""
    theta = np.linalg.norm(rvec, axis=1)[:, None, None]
    k = _skew(rvec / np.maximum(theta[:, :, 0], 1e-12))
    return np.eye(3) + np.sin(theta) * k + (1.0 - np.cos(theta)) * (k @ k)


def p3p_hypotheses(scene: np.ndarray, pixels: np.ndarray, K: np.ndarray,
                   subsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Poses ``T_wc (B, 4, 4)`` and success flags ``(B,)`` from 4-point subsets ``(B, 4)``: P3P on
    the first three, the fourth choosing among its solutions (OpenCV, ~10 us a call; everything
    else is batched, since per-hypothesis numpy calls would cost several times the solve)."""
    B = len(subsets)
    rvecs, tvecs = np.zeros((B, 3)), np.zeros((B, 3))
    ok = np.zeros(B, dtype=bool)
    obj = np.ascontiguousarray(scene[subsets]).reshape(B, 4, 1, 3)
    img = np.ascontiguousarray(pixels[subsets]).reshape(B, 4, 1, 2)
    for b in range(B):
        try:
            found, rvec, tvec = cv2.solvePnP(obj[b], img[b], K, None, flags=cv2.SOLVEPNP_P3P)
        except cv2.error:
            continue
        if found:
            rvecs[b], tvecs[b], ok[b] = rvec[:, 0], tvec[:, 0], True
    ok &= np.isfinite(rvecs).all(1) & np.isfinite(tvecs).all(1)
    rvecs[~ok], tvecs[~ok] = 0.0, 0.0
    R_wc = rotation_from_rvec(rvecs).swapaxes(1, 2)                   # inverse of R_cw
    return make_pose(R_wc, -(R_wc @ tvecs[:, :, None])[:, :, 0]), ok


def kabsch_hypotheses(camera: np.ndarray, scene: np.ndarray,
                      subsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Poses ``T_wc (B, 4, 4)`` and success flags ``(B,)`` from 3-point subsets ``(B, 3)`` of
    ``camera (N, 3)`` / ``scene (N, 3)`` pairs, all solved in one batched Kabsch."""
    R, t = kabsch(camera[subsets], scene[subsets])
    poses = make_pose(R, t)
    ok = np.isfinite(poses).all(axis=(1, 2))
    poses[~ok] = np.eye(4)
    return poses, ok


def random_subsets(pool: np.ndarray, count: int, size: int, rng: np.random.Generator,
                   weights: np.ndarray | None = None) -> np.ndarray:
    """``count`` subsets ``(count, size)`` of distinct entries of ``pool (n,)`` (n >= size), each
    entry drawn with probability proportional to ``weights (n,)`` (uniform when None).

    Vectorised (a ``rng.choice`` per subset costs ~20 us): draw with replacement and redraw the
    rows that repeat an entry, rare for minimal sets out of thousands."""
    if len(pool) < size:
        raise ValueError(f"cannot draw {size} distinct entries out of {len(pool)}")
    cdf = None if weights is None else np.cumsum(weights, dtype=np.float64)

    def draw(shape: tuple[int, int]) -> np.ndarray:
        if cdf is None:
            return rng.integers(0, len(pool), shape)
        return np.minimum(np.searchsorted(cdf, rng.random(shape) * cdf[-1], side="right"), len(pool) - 1)

    idx = draw((count, size))
    while True:
        s = np.sort(idx, axis=1)
        repeats = (s[:, 1:] == s[:, :-1]).any(1)
        if not repeats.any():
            return pool[idx]
        idx[repeats] = draw((int(repeats.sum()), size))


def scoring_subset(n: int, count: int | None, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``count`` of ``n`` correspondences (all if fewer or None), drawn without
    replacement: RANSAC ranks its hypotheses on them as well as on all, at a fraction of the cost."""
    if count is None or n <= count:
        return np.arange(n)
    return np.sort(rng.choice(n, count, replace=False))


def hypotheses_needed(inlier_ratio: float, sample_size: int, confidence: float) -> float:
    """Hypotheses needed to draw one all-inlier minimal set with probability ``confidence``."""
    p_good = inlier_ratio ** sample_size
    if p_good <= 0.0:
        return math.inf
    if p_good >= 1.0:
        return 1.0
    return math.log(1.0 - confidence) / math.log(1.0 - p_good)


def joint_scores(T_wc: np.ndarray, scene: np.ndarray, pixels: np.ndarray, K: np.ndarray,
                 camera: np.ndarray | None, threshold_px: float,
                 threshold_m: float) -> tuple[np.ndarray, np.ndarray]:
    """2D and 3D inlier counts ``(B,)`` each of poses ``T_wc (B, 4, 4)``; ``camera (N, 3)`` rows
    without depth are NaN and never 3D inliers (zeros without ``camera``). The score is their sum."""
    n2 = (reprojection_residuals(T_wc, scene, pixels, K, np.float32) < threshold_px).sum(-1)
    if camera is None:
        return n2, np.zeros_like(n2)
    with np.errstate(invalid="ignore"):
        n3 = (distance_residuals(T_wc, camera, scene, np.float32) < threshold_m).sum(-1)
    return n2, n3


def hypotheses_to_draw(T_wc: np.ndarray, scene: np.ndarray, pixels: np.ndarray, K: np.ndarray,
                       camera: np.ndarray | None, weights: np.ndarray, threshold_px: float, threshold_m: float,
                       success_prob: float) -> dict[str, float]:
    """P3P (``pnp``) and Kabsch (``kabsch``) minimal sets needed to find a clean one with probability
    ``success_prob`` if ``T_wc``'s inliers are all there are, for sets drawn in proportion to
    ``weights (N,)``; ``kabsch`` is inf without ``camera (N, 3)``."""
    inlier_2d = reprojection_residuals(T_wc, scene, pixels, K) < threshold_px
    needed = {"pnp": hypotheses_needed(weights[inlier_2d].sum() / weights.sum(), 4, success_prob),
              "kabsch": math.inf}
    if camera is not None:
        has_depth = np.isfinite(camera).all(1)
        with np.errstate(invalid="ignore"):
            inlier_3d = distance_residuals(T_wc, camera, scene) < threshold_m
        needed["kabsch"] = hypotheses_needed(weights[inlier_3d].sum() / weights[has_depth].sum(), 3, success_prob)
    return needed


def joint_ransac(scene: np.ndarray, pixels: np.ndarray, K: np.ndarray, camera: np.ndarray | None,
                 threshold_px: float, threshold_m: float, batch: int, max_hypotheses: int,
                 success_prob: float, rng: np.random.Generator,
                 confidence: np.ndarray | None = None) -> tuple[np.ndarray | None, float, int]:
    """Best hypothesis by joint inlier count, from batches of P3P and (with depth) Kabsch minimal sets.

    Args:
        scene ``(N, 3)``, pixels ``(N, 2)``, K ``(3, 3)``; camera ``(N, 3)`` or None, NaN where
        there is no depth. ``batch`` hypotheses are drawn per round (half of each kind with
        depth), each scored on ``PREVIEW_POINTS`` random correspondences and the best
        ``PREVIEW_KEEP`` on all, until either kind has drawn enough to have found a clean set
        with probability ``success_prob`` at the inlier ratio of the best pose so far (either
        kind finding one is enough), or ``max_hypotheses`` in all.
        confidence: optional ``(N,)`` confidences (the map's confidence network): minimal sets
        are then drawn with probability proportional to ``confidence + CONFIDENCE_FLOOR`` (PROSAC's
        idea: likely inliers first), which finds a clean set far sooner at low inlier ratios.
    Returns:
        ``T_wc (4, 4)`` or None, its score (2D + 3D inliers) and the number of hypotheses drawn.
    """
    n = len(scene)
    with_depth = np.flatnonzero(np.isfinite(camera).all(1)) if camera is not None else np.zeros(0, np.int64)
    use_kabsch = len(with_depth) >= 3
    cam = camera if use_kabsch else None
    weights = np.ones(n) if confidence is None else np.clip(confidence, 0.0, None) + CONFIDENCE_FLOOR
    preview = rng.permutation(n)[:PREVIEW_POINTS] if n > 2 * PREVIEW_POINTS else None
    best_pose, best_score = None, -1.0
    drawn = {"pnp": 0, "kabsch": 0}
    needed = {"pnp": math.inf, "kabsch": math.inf}
    while sum(drawn.values()) < max_hypotheses:
        size = min(batch, max_hypotheses - sum(drawn.values()))
        counts = {"kabsch": size // 2 if use_kabsch else 0}
        counts["pnp"] = size - counts["kabsch"] if n >= 4 else 0
        if not any(counts.values()):
            break
        parts = []
        if counts["pnp"]:
            parts.append(p3p_hypotheses(scene, pixels, K, random_subsets(np.arange(n), counts["pnp"], 4, rng, weights)))
        if counts["kabsch"] and camera is not None:  # Kabsch hypotheses are drawn only with depth
            parts.append(kabsch_hypotheses(camera, scene, random_subsets(with_depth, counts["kabsch"], 3, rng,
                                                                         weights[with_depth])))
        for kind in drawn:
            drawn[kind] += counts[kind]
        poses = np.concatenate([p for p, _ in parts])[np.concatenate([o for _, o in parts])]
        if not len(poses):
            continue
        if preview is not None and len(poses) > PREVIEW_KEEP:
            # Preemptive scoring: all on a random subset, the most promising on everything.
            s2, s3 = joint_scores(poses, scene[preview], pixels[preview], K, None if cam is None else cam[preview],
                                  threshold_px, threshold_m)
            poses = poses[np.argpartition(-(s2 + s3), PREVIEW_KEEP - 1)[:PREVIEW_KEEP]]
        n2, n3 = joint_scores(poses, scene, pixels, K, cam, threshold_px, threshold_m)
        b = int(np.argmax(n2 + n3))
        if n2[b] + n3[b] > best_score:
            best_pose, best_score = poses[b], float(n2[b] + n3[b])
            needed = hypotheses_to_draw(best_pose, scene, pixels, K, camera if use_kabsch else None, weights,
                                        threshold_px, threshold_m, success_prob)
        if any(drawn[kind] >= needed[kind] for kind in drawn):
            break
    return best_pose, best_score, sum(drawn.values())


# ----------------------------------------------------------------------------------- refinement


def _skew(p: np.ndarray) -> np.ndarray:
    """Cross-product matrices ``(N, 3, 3)`` of vectors ``(N, 3)``."""
    S = np.zeros(p.shape[:-1] + (3, 3))
    S[..., 0, 1], S[..., 0, 2], S[..., 1, 2] = -p[..., 2], p[..., 1], -p[..., 0]
    S[..., 1, 0], S[..., 2, 0], S[..., 2, 1] = p[..., 2], -p[..., 1], p[..., 0]
    return S


def reprojection_jacobian(p: np.ndarray, K: np.ndarray) -> np.ndarray:
    """``(N, 2, 6)``: derivative of the pixels of camera-frame points ``p (N, 3)`` with respect to a
    left perturbation ``(w, v)`` of ``T_cw`` (``p' = p + w x p + v``), in closed form."""
    x, y, iz = p[:, 0], p[:, 1], 1.0 / p[:, 2]
    xz, yz = x * iz, y * iz
    zero = np.zeros_like(x)
    J_u = K[0, 0] * np.stack([-xz * yz, 1.0 + xz * xz, -yz, iz, zero, -xz * iz], axis=1)
    J_v = K[1, 1] * np.stack([-(1.0 + yz * yz), xz * yz, xz, zero, iz, -yz * iz], axis=1)
    return np.stack([J_u, J_v], axis=1)


def _normal_equations(J: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``H (6, 6)`` and ``g (6,)`` of residuals ``r (N, k)`` (in sigmas) with Jacobians ``J (N, k, 6)``."""
    J2 = J.reshape(-1, 6)
    return J2.T @ J2, J2.T @ r.reshape(-1)


def gauss_newton_pose(T_wc: np.ndarray, scene: np.ndarray, pixels: np.ndarray, K: np.ndarray,
                      idx_2d: np.ndarray, sigma_px: float, camera: np.ndarray | None = None,
                      idx_3d: np.ndarray | None = None, sigma_m: float = 1.0,
                      iterations: int = 10) -> np.ndarray:
    """Pose ``T_wc (4, 4)`` minimising the squared reprojection errors of ``idx_2d`` in units of
    ``sigma_px`` plus, with ``camera``, the squared 3D distances of ``idx_3d`` in units of ``sigma_m``:
    Gauss-Newton on ``T_cw``, perturbed on the left (``p' = exp(w) p + v``, camera frame).

    Least squares, not a robust loss: the callers' thresholds have removed the outliers (as in
    DSAC*/ACE's final fit), and a robust loss with one sigma for all would down-weight the nearest
    points, whose pixel errors are largest and which determine the pose best.

    The 3D residual is taken in the camera frame, ``T_cw X - x``: the same length as in the world.
    Stops when a step moves by less than 1e-9 (rad and m): far below any error that matters.
    """
    T_cw = invert_pose(T_wc)
    X2, u2 = scene[idx_2d], pixels[idx_2d]
    X3 = x3 = None
    if camera is not None and idx_3d is not None and len(idx_3d):
        X3, x3 = scene[idx_3d], camera[idx_3d]
    for _ in range(iterations):
        R, t = T_cw[:3, :3], T_cw[:3, 3]
        H, g = np.zeros((6, 6)), np.zeros(6)
        if len(X2):
            p = X2 @ R.T + t                                           # (n, 3) camera frame
            if np.any(p[:, 2] <= 1e-6):
                break                                                  # a point behind: stop where we are
            uv = p[:, :2] / p[:, 2:] * K[[0, 1], [0, 1]] + K[[0, 1], [2, 2]]
            H2, g2 = _normal_equations(reprojection_jacobian(p, K) / sigma_px, (uv - u2) / sigma_px)
            H, g = H + H2, g + g2
        if X3 is not None:
            q = X3 @ R.T + t
            J3 = np.concatenate([-_skew(q), np.broadcast_to(np.eye(3), (len(q), 3, 3))], axis=2)
            H3, g3 = _normal_equations(J3 / sigma_m, (q - x3) / sigma_m)
            H, g = H + H3, g + g3
        try:
            step = -np.linalg.solve(H, g)
        except np.linalg.LinAlgError:
            break
        if not np.isfinite(step).all():
            break
        dR, _ = cv2.Rodrigues(step[:3])
        T_cw = make_pose(dR @ R, dR @ t + step[3:])
        if np.abs(step).max() < 1e-9:
            break
    return invert_pose(T_cw)


def robust_sigma(residuals: np.ndarray, dims: int, floor: float) -> float:
    """Per-axis sigma of ``dims``-dimensional residual norms ``(n,)`` from their median (robust to
    the few outliers left among inliers), at least ``floor``."""
    if len(residuals) == 0:
        return floor
    return max(float(np.median(residuals)) / (MEDIAN_NORM_2D if dims == 2 else MEDIAN_NORM_3D), floor)


def depth_cost_ratio(T_2d: np.ndarray, T_joint: np.ndarray, scene: np.ndarray, pixels: np.ndarray,
                     K: np.ndarray, threshold_px: float) -> float:
    """How much worse ``T_joint (4, 4)`` fits the image than ``T_2d (4, 4)``: the ratio of their
    truncated squared reprojection errors, ``sum min(r, threshold_px)^2``, over the points that are
    2D inliers of either pose (points neither counts do not dilute it). 1 when both fit equally;
    0/0 (exact data) counts as 1."""
    r = reprojection_residuals(np.stack([T_2d, T_joint]), scene, pixels, K)       # (2, N)
    union = (r < threshold_px).any(0)
    cost = (np.minimum(r[:, union], threshold_px) ** 2).sum(1)
    if cost[1] <= 1e-12 * max(union.sum(), 1):
        return 1.0
    return float(cost[1] / max(cost[0], 1e-300))


def refine_joint(T_wc: np.ndarray, scene: np.ndarray, pixels: np.ndarray, K: np.ndarray,
                 camera: np.ndarray | None, threshold_px: float, threshold_m: float,
                 rounds: int = 10, depth_gate: float = DEPTH_GATE) -> tuple[np.ndarray, np.ndarray]:
    """Refine a hypothesis ``T_wc (4, 4)``; return the refined pose and the indices ``(M,)`` of the
    correspondences of its last solve.

    1. On reprojection over its 2D inliers, re-selected each round until they stop changing:
       the PnP solution ``T_2d``.
    2. With ``camera``: points with depth contribute their 3D distance *instead of* their
       reprojection error (with exact depth the 3D residual holds all the 2D one says and more,
       so using both would count a prediction's error twice), if it is below ``threshold_m``;
       points without depth their reprojection error, if below ``threshold_px``. Each kind is
       weighted by the inverse variance of its residuals under ``T_2d``; the sets are re-selected
       each round (selecting them under ``T_2d`` only would pull the result towards ``T_2d``).
    3. Depth is trusted only if it is consistent with the image: the joint pose may fit the
       image worse than ``T_2d`` by at most the fraction ``depth_gate`` (``depth_cost_ratio``).
       Depth biased along the rays or moved by the camera's motion between depth and colour
       capture costs far more: then ``T_2d``.
    """
    previous = None
    inliers = np.flatnonzero(reprojection_residuals(T_wc, scene, pixels, K) < threshold_px)
    for _ in range(rounds):
        if len(inliers) < 4 or (previous is not None and np.array_equal(inliers, previous)):
            break
        r = reprojection_residuals(T_wc, scene[inliers], pixels[inliers], K)
        T_wc = gauss_newton_pose(T_wc, scene, pixels, K, inliers, robust_sigma(r, 2, MIN_SIGMA_PX), iterations=2)
        previous = inliers
        inliers = np.flatnonzero(reprojection_residuals(T_wc, scene, pixels, K) < threshold_px)
    if camera is None or len(inliers) < 4:
        return T_wc, inliers

    has_depth = np.isfinite(camera).all(1)
    r_2d = reprojection_residuals(T_wc, scene[inliers], pixels[inliers], K)
    sigma_px = robust_sigma(r_2d, 2, MIN_SIGMA_PX)
    with np.errstate(invalid="ignore"):
        d = distance_residuals(T_wc, camera, scene)                   # NaN without depth: compares False
    if (d < threshold_m).sum() < 3:
        return T_wc, inliers
    sigma_m = robust_sigma(d[d < threshold_m], 3, MIN_SIGMA_M)
    T_joint, used, previous = T_wc, inliers, None
    for _ in range(rounds):
        with np.errstate(invalid="ignore"):
            agree = np.flatnonzero(distance_residuals(T_joint, camera, scene) < threshold_m)
        flat = np.flatnonzero(~has_depth & (reprojection_residuals(T_joint, scene, pixels, K) < threshold_px))
        if len(agree) < 3 or (previous is not None and np.array_equal(agree, previous)):
            break
        T_joint = gauss_newton_pose(T_joint, scene, pixels, K, flat, sigma_px, camera, agree, sigma_m, iterations=2)
        previous, used = agree, np.union1d(agree, flat)
    if depth_cost_ratio(T_wc, T_joint, scene, pixels, K, threshold_px) > 1.0 + depth_gate:
        return T_wc, inliers
    return T_joint, used
