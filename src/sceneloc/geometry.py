"""Geometry core: pose convention, projection, Kabsch, PnP, pose errors and the pose file.

Pose convention, used everywhere in sceneloc
--------------------------------------------
* A *pose* is the 4x4 **camera-to-world** matrix ``T_wc`` (as in 7-Scenes' ``pose.txt``):
  a point ``x`` in camera coordinates is at ``X = R x + t`` in the world (paper eq. 1).
* Camera axes follow OpenCV: x right, y down, z forward; pixel (0, 0) is the *centre* of the
  top-left pixel, so ``u = fx * x / z + cx`` (paper eq. 2).
* The pose *file* stores the inverse (world-to-camera) as ``qw qx qy qz tx ty tz``, the format
  DSAC* and ACE write, so their evaluation scripts read our output and vice versa.

Functions take numpy arrays (``kabsch`` also torch tensors) with shapes given in docstrings;
leading batch dimensions ``B`` are optional where shown as ``(..., )``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from sceneloc.errors import SceneLocError
from sceneloc.validation import check_quaternion

# ----------------------------------------------------------------------------- rigid transforms


def make_pose(R, t):
    """Stack ``R (..., 3, 3)`` and ``t (..., 3)`` into homogeneous ``(..., 4, 4)`` matrices.

    numpy (float64) or torch (dtype kept; differentiable, for DSAC) in, the same out.
    """
    if isinstance(R, torch.Tensor):
        bottom = torch.zeros(R.shape[:-2] + (1, 4), dtype=R.dtype, device=R.device)
        bottom[..., 0, 3] = 1.0
        return torch.cat([torch.cat([R, t[..., None]], -1), bottom], -2)
    R = np.asarray(R, dtype=np.float64)
    T = np.zeros(R.shape[:-2] + (4, 4))
    T[..., :3, :3] = R
    T[..., :3, 3] = t
    T[..., 3, 3] = 1.0
    return T


def invert_pose(T):
    """Inverse of rigid transforms ``(..., 4, 4)`` (camera-to-world <-> world-to-camera); numpy or torch."""
    Rt = T[..., :3, :3].swapaxes(-1, -2)
    return make_pose(Rt, -(Rt @ T[..., :3, 3:])[..., 0])


def transform_points(T: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Apply ``T (..., 4, 4)`` to points ``X (..., N, 3)``: returns ``R X + t``, shape ``(..., N, 3)``."""
    return np.einsum("...ij,...nj->...ni", T[..., :3, :3], X) + T[..., None, :3, 3]


def project_to_so3(R: np.ndarray) -> np.ndarray:
    """Nearest rotation (Frobenius norm) to each ``(..., 3, 3)`` matrix, via SVD.

    7-Scenes' KinectFusion rotations have det ~ 0.9997; without this, perfect estimates
    would show rotation errors near 1 degree.
    """
    U, _, Vt = np.linalg.svd(R)
    d = np.sign(np.linalg.det(U @ Vt))
    D = np.ones(R.shape[:-2] + (3,))
    D[..., 2] = d
    return (U * D[..., None, :]) @ Vt


def is_rigid(T: np.ndarray, tol: float = 1e-2) -> bool:
    """True if ``T (4, 4)`` is finite, has last row ``0 0 0 1`` and a rotation block within ``tol`` of SO(3)."""
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        return False
    R = T[:3, :3]
    return (np.allclose(T[3], [0, 0, 0, 1], atol=1e-6)
            and np.abs(R @ R.T - np.eye(3)).max() < tol
            and abs(np.linalg.det(R) - 1.0) < tol)


# ------------------------------------------------------------------------------------ quaternions


def matrix_to_quaternion(R: np.ndarray) -> np.ndarray:
    """Rotation ``(3, 3)`` -> unit quaternion ``(4,)`` as ``(w, x, y, z)`` with ``w >= 0``."""
    m = R
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    if tr > 0:
        s = math.sqrt(tr + 1.0) * 2
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2
        q = [(m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s]
    elif m[1, 1] > m[2, 2]:
        s = math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2
        q = [(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s]
    else:
        s = math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2
        q = [(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s]
    unit = np.asarray(q) / np.linalg.norm(q)
    return unit if unit[0] >= 0 else -unit


def quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
    """Quaternion ``(4,)`` ``(w, x, y, z)`` (normalised here) -> rotation ``(3, 3)``."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


# ------------------------------------------------------------------------------------ cameras


def intrinsics_matrix(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """The 3x3 pinhole matrix K."""
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def scale_intrinsics(K: np.ndarray, factor: float) -> np.ndarray:
    """Intrinsics of the same camera on an image resized by ``factor`` (e.g. 0.5 for half size).

    Exact for pixel *centres*: full-resolution pixel ``u`` lies at ``(u + 0.5) * factor - 0.5``.
    """
    K2 = np.array(K, dtype=np.float64)
    K2[0, 0] *= factor
    K2[0, 1] *= factor  # skew, if any
    K2[1, 1] *= factor
    K2[0, 2] = (K[0, 2] + 0.5) * factor - 0.5
    K2[1, 2] = (K[1, 2] + 0.5) * factor - 0.5
    return K2


def pixel_grid(height: int, width: int) -> np.ndarray:
    """Pixel centres ``(H, W, 2)`` as ``(u, v)`` = (column, row)."""
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    return np.stack([u, v], axis=-1)


def project(X_cam: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Camera-frame points ``(..., 3)`` -> pixels ``(..., 2)`` (paper eq. 2)."""
    z = X_cam[..., 2:3]
    uv = X_cam[..., :2] / z
    return uv * np.array([K[0, 0], K[1, 1]]) + np.array([K[0, 2], K[1, 2]])


def backproject(uv: np.ndarray, depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pixels ``(..., 2)`` with depth ``(...)`` (metres along z) -> camera-frame points ``(..., 3)``."""
    x = (uv[..., 0] - K[0, 2]) / K[0, 0] * depth
    y = (uv[..., 1] - K[1, 2]) / K[1, 1] * depth
    return np.stack([x, y, depth], axis=-1)


def pixels_between_cameras(uv: np.ndarray, K_from: np.ndarray, K_to: np.ndarray) -> np.ndarray:
    """Pixels ``(..., 2)`` of camera ``K_from`` -> the pixels ``(..., 2)`` on the same rays in camera
    ``K_to``, for two cameras with one optical centre and one orientation (``K_to K_from^-1``)."""
    return project(backproject(uv, np.ones(uv.shape[:-1]), K_from), K_to)


# ----------------------------------------------------------------------------------- pose errors


def rotation_error_deg(R_est, R_gt):
    """Angle of ``R_est R_gt^T`` in degrees, for ``(..., 3, 3)`` inputs (numpy, or torch: differentiable).

    atan2(sin, cos) rather than arccos(cos): arccos loses precision near 0, where identical
    rotations read up to ~2e-6 degrees (and its gradient is infinite there).
    """
    xp = torch if isinstance(R_est, torch.Tensor) else np
    R = R_est @ R_gt.swapaxes(-1, -2)
    cos = (R[..., 0, 0] + R[..., 1, 1] + R[..., 2, 2] - 1.0) / 2.0
    axis = xp.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1)
    sin = (torch.linalg.vector_norm(axis, dim=-1) if xp is torch else np.linalg.norm(axis, axis=-1)) / 2.0
    return xp.arctan2(sin, cos) * (180.0 / math.pi)


def pose_errors(T_est: np.ndarray, T_gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation error (degrees) and translation error (metres) of camera-to-world poses ``(..., 4, 4)``.

    The translation error is the distance between camera centres, as in DSAC*/ACE evaluation.
    """
    rot = rotation_error_deg(T_est[..., :3, :3], T_gt[..., :3, :3])
    trans = np.linalg.norm(T_est[..., :3, 3] - T_gt[..., :3, 3], axis=-1)
    return rot, trans


# ---------------------------------------------------------------------------------------- Kabsch


def kabsch(src, dst, weights=None):
    """Rigid transform ``(R, t)`` minimising ``sum_i w_i ||R src_i + t - dst_i||^2``.

    Args:
        src: ``(..., N, 3)`` points, numpy array or torch tensor (camera frame for pose estimation).
        dst: ``(..., N, 3)`` corresponding points (scene coordinates).
        weights: optional ``(..., N)`` non-negative weights.
    Returns:
        ``R (..., 3, 3)`` and ``t (..., 3)`` of the same array type as ``src``; with src in camera
        and dst in world coordinates this is the camera-to-world pose. Differentiable in torch.
    """
    # numpy in, numpy throughout (float64): 2-3x faster than a round trip through torch for the
    # small problems of pose estimation; torch in keeps torch (autograd, device).
    is_numpy = isinstance(src, np.ndarray)
    if is_numpy:
        s = np.asarray(src, np.float64)
        d = np.asarray(dst, np.float64)
        w = np.ones(s.shape[:-1]) if weights is None else np.asarray(weights, np.float64)
        w = w / np.maximum(w.sum(-1, keepdims=True), 1e-12)
    else:
        s = src
        d = torch.as_tensor(dst, dtype=s.dtype, device=s.device)
        w = (torch.ones(s.shape[:-1], dtype=s.dtype, device=s.device) if weights is None
             else torch.as_tensor(weights, dtype=s.dtype, device=s.device))
        w = w / w.sum(-1, keepdim=True).clamp_min(1e-12)
    cs = (w[..., None] * s).sum(-2)
    cd = (w[..., None] * d).sum(-2)
    H = _swap(s - cs[..., None, :]) @ (w[..., None] * (d - cd[..., None, :]))
    lin = np.linalg if is_numpy else torch.linalg
    U, _, Vt = lin.svd(H)
    V = _swap(Vt)
    # Reflection guard: flip the last singular direction where det(V U^T) < 0.
    sign = lin.det(V @ _swap(U))
    sign = (sign >= 0) * 2.0 - 1.0
    D = (np.ones(s.shape[:-2] + (3,)) if is_numpy
         else torch.ones(s.shape[:-2] + (3,), dtype=s.dtype, device=s.device))
    D[..., 2] = sign
    R = (V * D[..., None, :]) @ _swap(U)
    t = cd - (R @ cs[..., None])[..., 0]
    return R, t


def _swap(a):
    """``a`` with its last two axes swapped (numpy array or torch tensor)."""
    return np.swapaxes(a, -1, -2) if isinstance(a, np.ndarray) else a.transpose(-1, -2)


def kabsch_depth_offset(camera: np.ndarray, scene: np.ndarray, offset_sigma: float, point_sigma: float,
                        iterations: int = 5) -> tuple[np.ndarray, np.ndarray, float]:
    """Rigid transform ``(R, t)`` and a depth offset ``c`` (metres) that minimise
    ``sum_i ||R (p_i - c r_i) + t - X_i||^2 / point_sigma^2 + c^2 / offset_sigma^2``.

    ``r_i = p_i / z_i`` is point i's ray at unit depth, so ``p_i - c r_i`` is the point with its
    depth ``c`` shorter: a depth sensor that reads every depth ``c`` too far (misregistered, or
    offset). Along-ray offset and translation are nearly the same motion for a narrow field of view,
    so ``c`` is weakly determined: the Gaussian prior (``offset_sigma``) keeps it near 0 unless the
    points' spread of rays demands it. ``offset_sigma -> inf`` is the free fit, ``-> 0`` plain ``kabsch``.

    Args:
        camera: ``(N, 3)`` camera-frame points from depth (z > 0).
        scene: ``(N, 3)`` corresponding world points.
        offset_sigma: prior standard deviation of ``c`` in metres.
        point_sigma: per-axis standard deviation of a point's residual in metres.
        iterations: alternations of Kabsch (``c`` fixed) and ``c`` in closed form (``R`` fixed).
    Returns:
        ``R (3, 3)``, ``t (3,)`` (camera-to-world for camera points in, world points out) and ``c``.
    """
    rays = camera / camera[:, 2:3]
    rays_c = rays - rays.mean(0)
    # For a fixed R, t is the centroid fit, and c solves a scalar least squares with the prior's
    # weight (point_sigma / offset_sigma)^2 added to its normal equation.
    prior = (point_sigma / offset_sigma) ** 2
    spread = float((rays_c * rays_c).sum())
    camera_c, scene_c = camera - camera.mean(0), scene - scene.mean(0)
    c = 0.0
    for _ in range(iterations):
        R, t = kabsch(camera - c * rays, scene)
        a = camera_c - scene_c @ R    # R^T applied to each row
        c_new = float((rays_c * a).sum()) / (spread + prior)
        converged = abs(c_new - c) < 1e-5    # 10 micrometres
        c = c_new
        if converged:
            break
    R, t = kabsch(camera - c * rays, scene)
    return R, t, c


# ------------------------------------------------------------------------------------------- PnP

PNP_METHODS = {
    "epnp": cv2.SOLVEPNP_EPNP,  # the paper's solver
    "sqpnp": cv2.SOLVEPNP_SQPNP,
    "p3p": cv2.SOLVEPNP_P3P,
    "iterative": cv2.SOLVEPNP_ITERATIVE,
}


def _rvec_tvec_to_pose(rvec: np.ndarray, tvec: np.ndarray) -> np.ndarray:
    """OpenCV's world-to-camera ``(rvec, tvec)`` -> camera-to-world 4x4."""
    R_cw, _ = cv2.Rodrigues(rvec)
    return invert_pose(make_pose(R_cw, tvec.reshape(3)))


def solve_pnp(points3d: np.ndarray, points2d: np.ndarray, K: np.ndarray,
              method: str = "epnp") -> np.ndarray | None:
    """Camera-to-world pose from 2D-3D correspondences, or None when the solver fails.

    Args:
        points3d: ``(N, 3)`` scene coordinates; points2d: ``(N, 2)`` pixels; K: ``(3, 3)``.
        method: one of ``PNP_METHODS`` (``p3p`` needs exactly 4 points in OpenCV).
    """
    if method not in PNP_METHODS:
        raise ValueError(f"unknown PnP method {method!r}; choose from {sorted(PNP_METHODS)}")
    obj = np.ascontiguousarray(points3d, dtype=np.float64).reshape(-1, 1, 3)
    img = np.ascontiguousarray(points2d, dtype=np.float64).reshape(-1, 1, 2)
    try:
        ok, rvec, tvec = cv2.solvePnP(obj, img, K.astype(np.float64), None, flags=PNP_METHODS[method])
    except cv2.error:
        return None
    if not ok or not np.all(np.isfinite(tvec)):
        return None
    return _rvec_tvec_to_pose(rvec, tvec)


def pnp_ransac(points3d: np.ndarray, points2d: np.ndarray, K: np.ndarray,
               threshold_px: float = 10.0, iterations: int = 10000, confidence: float = 0.9999,
               method: str = "magsac", local_optimisation: bool = True) -> tuple[np.ndarray | None, np.ndarray]:
    """Robust PnP with OpenCV's USAC (MAGSAC++ by default): returns ``(T_wc or None, inlier mask (N,))``.

    ``method`` is ``magsac`` (cv2.USAC_MAGSAC) or ``ransac`` (classic RANSAC with EPnP), which
    fails at high outlier rates and is kept only as a baseline. ``local_optimisation=False`` keeps
    MAGSAC++'s scoring but skips its local optimisation of the best models (a sixth of the time, for a
    caller that re-fits the pose itself).
    """
    n = len(points3d)
    mask = np.zeros(n, dtype=bool)
    if n < 4:
        return None, mask
    obj = np.ascontiguousarray(points3d, dtype=np.float64).reshape(-1, 1, 3)
    img = np.ascontiguousarray(points2d, dtype=np.float64).reshape(-1, 1, 2)
    K = K.astype(np.float64)
    try:
        if method == "magsac" and not local_optimisation:
            params = cv2.UsacParams()
            params.sampler, params.score = cv2.SAMPLING_UNIFORM, cv2.SCORE_METHOD_MAGSAC
            params.loMethod, params.isParallel = cv2.LOCAL_OPTIM_NULL, False
            params.threshold, params.confidence, params.maxIterations = threshold_px, confidence, iterations
            ok, _, rvec, tvec, inliers = cv2.solvePnPRansac(obj, img, K, None, params=params)
        else:
            flags = {"magsac": cv2.USAC_MAGSAC, "ransac": cv2.SOLVEPNP_EPNP}[method]
            ok, rvec, tvec, inliers = cv2.solvePnPRansac(
                obj, img, K, None, iterationsCount=iterations,
                reprojectionError=threshold_px, confidence=confidence, flags=flags)
    except cv2.error:
        return None, mask
    if not ok or inliers is None or not np.all(np.isfinite(tvec)):
        return None, mask
    mask[inliers.reshape(-1)] = True
    return _rvec_tvec_to_pose(rvec, tvec), mask


def reprojection_errors(T_wc: np.ndarray, points3d: np.ndarray, points2d: np.ndarray,
                        K: np.ndarray) -> np.ndarray:
    """Pixel distance ``(N,)`` between ``points2d (N, 2)`` and ``points3d (N, 3)`` projected by the pose;
    points behind the camera get ``inf``."""
    X_cam = transform_points(invert_pose(T_wc), points3d)
    err = np.linalg.norm(project(X_cam, K) - points2d, axis=-1)
    return np.where(X_cam[:, 2] > 1e-6, err, np.inf)


# ------------------------------------------------------------------------------------ pose file


@dataclass
class PoseRecord:
    """One line of a pose file: image path (relative to the dataset root), camera-to-world pose
    (None for a failed frame), named extra columns (e.g. ``time_ms``, ``inliers``) and, for a
    failed frame, why (written as a trailing ``# failed: ...`` comment)."""
    image: str
    pose: np.ndarray | None
    extras: dict[str, float] = field(default_factory=dict)
    failure: str | None = None


def write_pose_file(path: str | Path, records: Sequence[PoseRecord], comment: str = "") -> None:
    """Write ``<image> qw qx qy qz tx ty tz [extras...]`` lines, (q, t) world-to-camera (OpenCV).

    A failed frame (``pose is None``) is written with ``nan`` for q and t, so it is counted, not
    dropped, and its ``failure`` reason follows as ``# failed: <reason>``.
    """
    extra_names = list(records[0].extras) if records else []
    lines = []
    for line in comment.splitlines():
        lines.append(f"# {line}")
    lines.append("# image qw qx qy qz tx ty tz" + "".join(f" {n}" for n in extra_names))
    for rec in records:
        if " " in rec.image:
            raise SceneLocError(f"{rec.image}: image paths with spaces cannot be written to a pose file")
        if rec.pose is None:
            vals = ["nan"] * 7
        else:
            T_cw = invert_pose(rec.pose)
            q = matrix_to_quaternion(T_cw[:3, :3])
            vals = [f"{v:.9f}" for v in (*q, *T_cw[:3, 3])]
        extras = [f"{rec.extras.get(n, float('nan')):.6g}" for n in extra_names]
        reason = [f"# failed: {' '.join(rec.failure.split())}"] if rec.pose is None and rec.failure else []
        lines.append(" ".join([rec.image, *vals, *extras, *reason]))
    Path(path).write_text("\n".join(lines) + "\n")


def read_pose_file(path: str | Path) -> list[PoseRecord]:
    """Read a pose file written by sceneloc, DSAC* or ACE (extra columns named by the header if any)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise SceneLocError(f"{path}: cannot read pose file ({e.strerror})") from None
    if b"\x00" in raw:
        raise SceneLocError(f"{path}: not a pose file (binary data)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SceneLocError(f"{path}: not a pose file (not UTF-8 text)") from None
    extra_names: list[str] = []
    records = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            head = line[1:].split()
            if head[:8] == ["image", "qw", "qx", "qy", "qz", "tx", "ty", "tz"]:
                extra_names = head[8:]
            continue
        line, _, note = line.partition("#")
        failure = note.strip().removeprefix("failed:").strip() or None
        parts = line.split()
        try:
            vals = [float(v) for v in parts[1:]]
        except ValueError:
            raise SceneLocError(f"{path}:{lineno}: expected '<image> qw qx qy qz tx ty tz', "
                                f"got {line[:80]!r}") from None
        if len(vals) < 7:
            raise SceneLocError(f"{path}:{lineno}: expected 7 numbers after the image name, got {len(vals)}")
        q, t = np.array(vals[:4]), np.array(vals[4:7])
        pose = None
        if np.all(np.isfinite(q)) and np.all(np.isfinite(t)):
            q = check_quaternion(q, f"{path}:{lineno}")
            pose = invert_pose(make_pose(quaternion_to_matrix(q), t))
        names = extra_names + [f"col{i}" for i in range(len(extra_names), len(vals) - 7)]
        # strict=False: a header may name more extra columns than a line has; the line's values win
        records.append(PoseRecord(parts[0], pose, dict(zip(names, vals[7:], strict=False)),
                                  failure if pose is None else None))
    if not records:
        raise SceneLocError(f"{path}: pose file lists no image")
    return records
