"""One image's correspondences and fitting a pose to them: the valid matches (``Correspondences``),
minimal and full solves (PnP or Kabsch), residuals and inlier counts, and the re-fits that end every
estimator (DSAC*/ACE's polish on all inliers; for RGB-D, the re-fit with the query depth's offset),
and the evidence that gates what follows (does a pose fit the image; does a refinement keep the inliers).
``pose/estimate.py`` builds its estimators on these."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import cv2
import numpy as np

from sceneloc.geometry import (
    invert_pose,
    is_rigid,
    kabsch,
    kabsch_depth_offset,
    make_pose,
    project,
    reprojection_errors,
    solve_pnp,
    transform_points,
)
from sceneloc.pose.config import MIN_POINTS, PoseConfig
from sceneloc.pose.ransac import distance_residuals, reprojection_residuals, robust_sigma

#: Smallest per-axis residual sigma (metres) that weighs the depth offset's prior: exact data would
#: otherwise leave the prior no weight at all.
OFFSET_POINT_SIGMA_FLOOR_M = 0.005


# --------------------------------------------------------------------------------- correspondences


def required(array: np.ndarray | None, what: str) -> np.ndarray:
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
        R, t = kabsch(required(corr.camera, "camera points")[idx], corr.scene[idx])
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
        R, t = kabsch(required(corr.camera, "camera points")[subsets], corr.scene[subsets])
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
    return distance_residuals(poses, required(corr.camera, "camera points")[sel], corr.scene[sel], dtype)


def count_inliers(corr: Correspondences, poses: np.ndarray, idx: np.ndarray | None = None) -> np.ndarray:
    """Inlier counts ``(B,)`` of poses ``(B, 4, 4)`` on the correspondences ``idx`` (default all), in float32."""
    return (residuals(corr, poses, idx, dtype=np.float32) < corr.threshold).sum(-1)


def spans_a_plane(points: np.ndarray) -> bool:
    """True unless ``points (n, 3)`` are (nearly) coincident or collinear, which leave a pose undetermined."""
    if len(points) < 3:
        return False
    s = np.linalg.svd(points - points.mean(0), compute_uv=False)
    return bool(s[1] > 1e-6 * max(s[0], 1e-3))


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
    tighter = config.polish_thresholds_m if corr.solver == "kabsch" else config.polish_thresholds_px
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
    large an error of the camera position. An offset shorter than ``config.depth_offset_min_m`` is
    dropped (the rigid pose stays). Returns the pose, its points, the correspondences with the
    offset taken off their camera points, and the offset in metres (0 where dropped)."""
    camera = required(corr.camera, "camera points")
    rays = camera / camera[:, 2:3]
    sigma = robust_sigma(residuals(corr, pose, used), 3, OFFSET_POINT_SIGMA_FLOOR_M)
    R, t, offset = kabsch_depth_offset(camera[used], corr.scene[used], config.depth_offset_sigma_m, sigma)
    refit_used = used
    for threshold in config.polish_thresholds_m or (corr.threshold,):
        moved = replace(corr, camera=camera - offset * rays)
        inliers = np.flatnonzero(residuals(moved, make_pose(R, t)) < threshold)
        if len(inliers) < corr.min_points:
            break
        R, t, offset = kabsch_depth_offset(camera[inliers], corr.scene[inliers], config.depth_offset_sigma_m, sigma)
        refit_used = inliers
    if abs(offset) < config.depth_offset_min_m:
        return pose, used, corr, 0.0
    return make_pose(R, t), refit_used, replace(corr, camera=camera - offset * rays), offset


# ------------------------------------------------------------------ evidence: does a pose fit the image?

#: 2D-3D matches within this many pixels (of the query image) of a pose's projection take part in its
#: image offset: the network's inliers, not its outliers (the PnP threshold of 640 x 480 queries).
IMAGE_OFFSET_WINDOW_PX = 20.0
#: Fewest matches in that window for an image offset (fewer: no evidence either way).
IMAGE_OFFSET_MIN_MATCHES = 30


def image_offset_px(pixels: np.ndarray, scene: np.ndarray, K: np.ndarray, T_wc: np.ndarray,
                    window_px: float = IMAGE_OFFSET_WINDOW_PX) -> np.ndarray | None:
    """Where the camera-to-world pose ``T_wc (4, 4)`` puts the network's scene coordinates ``scene (N, 3)``
    in the image, against where the network saw them, ``pixels (N, 2)``: the per-axis median ``(2,)`` of
    ``project - pixel`` (pixels of ``K (3, 3)``) over the matches within ``window_px``. A pose that fits
    the image has ~0 (the coordinates' noise averages out; their bias is the map's, shared by every
    pose); a pose fitted to depth moved against the image shows the move. None
    with fewer than ``IMAGE_OFFSET_MIN_MATCHES`` matches in the window."""
    x = transform_points(invert_pose(np.asarray(T_wc, dtype=np.float64)), scene)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):   # behind the camera: inf below
        r = project(x, K) - pixels
    r[~(x[:, 2] > 1e-6)] = np.inf
    near = np.linalg.norm(r, axis=1) < window_px
    if near.sum() < IMAGE_OFFSET_MIN_MATCHES:
        return None
    return np.median(r[near], axis=0)


def moved_image(image: np.ndarray, offset_px: np.ndarray) -> np.ndarray:
    """``image (H, W)`` resampled so that pixel p reads what was at ``p + offset_px`` (``(2,)``, x right,
    y down; rounded to whole pixels); what comes from outside the image is 0 (no depth)."""
    dx, dy = (int(round(float(v))) for v in offset_px)
    h, w = image.shape[:2]
    out = np.zeros_like(image)
    if abs(dx) >= w or abs(dy) >= h:
        return out
    out[max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)] = image[max(0, dy):h - max(0, -dy),
                                                                       max(0, dx):w - max(0, -dx)]
    return out


#: The ICP of a re-registered depth also fits its scale under this prior (``surface.cloud.align_depth``):
#: depth that is misregistered in the image is not to be trusted on its scale either.
REREGISTERED_SCALE_SIGMA = 0.02

#: A pose and the query depth's fitted offset along its rays (metres), or None: what one fit gives.
DepthPose = tuple[np.ndarray, float] | None


def depth_agreeing_pose(depth: np.ndarray, fitted: tuple[np.ndarray, float],
                        fit_with_depth: Callable[[np.ndarray], DepthPose], image_pose: Callable[[], DepthPose],
                        pixels: np.ndarray, scene: np.ndarray, K: np.ndarray, max_offset_px: float,
                        rounds: int) -> tuple[np.ndarray, float, str]:
    """An RGB-D pose that the image agrees with. ``fitted``: the pose (camera-to-world ``(4, 4)``) and depth
    offset fitted to ``depth (H, W)``; ``fit_with_depth(d)`` fits them again to a re-registered depth map,
    ``image_pose()`` gives the pose of the image alone. While the network's matches ``pixels (N, 2)``,
    ``scene (N, 3)`` show an offset (``image_offset_px``, pixels of the query image, ``K (3, 3)``) longer
    than ``max_offset_px``, the depth is moved by it (``moved_image``) and fitted again, up to ``rounds``
    times (0: none); if the image still disagrees (or none of the matches lie near the pose's projections),
    its own pose wins (where it has one). Returns the pose, the depth
    offset and what happened: ``agrees``, ``reregistered`` or ``image``."""
    moved = np.zeros(2)
    pose, offset = fitted
    for attempt in range(rounds + 1):
        shift = image_offset_px(pixels, scene, K, pose)
        if shift is not None and float(np.linalg.norm(shift)) <= max_offset_px:
            return pose, offset, "reregistered" if attempt else "agrees"
        if attempt == rounds or shift is None:   # None: the pose explains none of the image's matches
            break
        moved = moved + shift
        refit = fit_with_depth(moved_image(depth, moved))
        if refit is None:
            break
        pose, offset = refit
    from_image = image_pose()
    return (pose, offset, "reregistered") if from_image is None else (*from_image, "image")


def keeps_inliers(pixels: np.ndarray, scene: np.ndarray, K: np.ndarray, T_wc: np.ndarray, refined_T_wc: np.ndarray,
                  threshold_px: float, min_share: float) -> bool:
    """Whether the refined camera-to-world pose ``refined_T_wc (4, 4)`` keeps at least ``min_share`` of the
    2D-3D inliers (within ``threshold_px``) that ``T_wc (4, 4)`` has among the network's matches ``pixels
    (N, 2)``, ``scene (N, 3)`` with ``K (3, 3)``: a refinement may sharpen what the correspondences say,
    not move the pose away from it. ``min_share`` 0 keeps every refinement."""
    if min_share <= 0:
        return True
    before = int((reprojection_errors(T_wc, scene, pixels, K) < threshold_px).sum())
    after = int((reprojection_errors(refined_T_wc, scene, pixels, K) < threshold_px).sum())
    return after >= min_share * before
