"""Off-the-shelf robust PnP solvers for sceneloc's own 2D-3D correspondences.

What a user holding sceneloc's predicted scene coordinates might call instead of its
confidence-guided estimator: OpenCV's ``solvePnPRansac`` with USAC MAGSAC++ (through
``sceneloc.geometry.pnp_ransac``) and poselib's LO-RANSAC with a final bundle adjustment
(``pip install -e '.[bench]'``). Both get sceneloc's inlier threshold and failure rule (fewer than
``PoseConfig.min_inliers`` inliers -> no pose), so only the estimator differs. 2D-3D only: neither
library offers a rigid 3D-3D (RGB-D) RANSAC.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from sceneloc.geometry import invert_pose, make_pose, pnp_ransac
from sceneloc.pose.config import PoseConfig

_DEFAULT = PoseConfig()
BACKENDS = ("opencv", "poselib")


def poselib_available() -> bool:
    return importlib.util.find_spec("poselib") is not None


def _finite(pixels: np.ndarray, coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flatten ``(..., 2)`` pixels and ``(..., 3)`` coordinates and keep the finite pairs."""
    pixels, coords = np.asarray(pixels, np.float64).reshape(-1, 2), np.asarray(coords, np.float64).reshape(-1, 3)
    ok = np.isfinite(pixels).all(1) & np.isfinite(coords).all(1)
    return pixels[ok], coords[ok]


def opencv_pnp(pixels: np.ndarray, coords: np.ndarray, K: np.ndarray,
               config: PoseConfig = _DEFAULT) -> tuple[np.ndarray | None, int]:
    """cv2.solvePnPRansac (USAC_MAGSAC) on all correspondences: camera-to-world ``(4, 4)`` or None,
    and the inlier count. ``pixels (N, 2)``, ``coords (N, 3)``, ``K (3, 3)``."""
    pixels, coords = _finite(pixels, coords)
    threshold = config.threshold_px_for(K)
    pose, mask = pnp_ransac(coords, pixels, K, threshold, config.ransac_iterations, config.ransac_confidence,
                            method="magsac", local_optimisation=True)
    inliers = int(mask.sum())
    return (pose if inliers >= config.required_inliers("pnp", threshold, pixels) else None), inliers


def poselib_pnp(pixels: np.ndarray, coords: np.ndarray, K: np.ndarray, image_hw: tuple[int, int],
                config: PoseConfig = _DEFAULT) -> tuple[np.ndarray | None, int]:
    """poselib.estimate_absolute_pose (LO-RANSAC, P3P, bundle adjustment on the inliers): camera-to-world
    ``(4, 4)`` or None, and the inlier count. poselib's PINHOLE model uses K's numbers as they are,
    i.e. OpenCV's pixel-centre convention (checked on exact synthetic data)."""
    import poselib
    pixels, coords = _finite(pixels, coords)
    if len(pixels) < 4:
        return None, 0
    camera = {"model": "PINHOLE", "width": int(image_hw[1]), "height": int(image_hw[0]),
              "params": [K[0, 0], K[1, 1], K[0, 2], K[1, 2]]}
    threshold = config.threshold_px_for(K)
    ransac = {"max_reproj_error": threshold, "max_iterations": config.ransac_iterations,
              "success_prob": config.ransac_confidence}
    pose, info = poselib.estimate_absolute_pose(pixels, coords, camera, ransac, {})
    inliers = int(info["num_inliers"])
    T_wc = invert_pose(make_pose(pose.R, pose.t))     # poselib's pose maps world to camera
    ok = inliers >= config.required_inliers("pnp", threshold, pixels) and np.isfinite(T_wc).all()
    return (T_wc if ok else None), inliers
